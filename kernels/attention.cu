// attention: causal GQA scaled-dot-product attention, flash-style (FlashAttention-2 schedule),
// f32 compute for f32 or bf16 storage. The query block sits at the END of the keys: query t of T
// sees keys 0..=S-T+t of S. Head h uses KV head h / (Hq/Hkv).
// - attention_fwd_*: one block per (32 query rows, b*Hq + h); 4 warps x 8 rows; key tiles of 32
//   in shared memory (K transposed); online softmax in registers; writes out and lse = m + ln(l).
// - attention_bwd_prep_*: delta[row] = sum_d dout * out (one warp per row).
// - attention_bwd_dq_*: per query tile, recomputes P = exp(S*scale - lse) tile by tile, and
//   dq = scale * sum_j P (dP - delta) k_j. Written, no atomics.
// - attention_bwd_dkv_*: per tile of 16 keys of one KV head, loops over every query head of its
//   GQA group and every query tile that can see those keys; dk, dv summed in registers and
//   written once: deterministic, no atomics.
// Reference: crates/tensor/src/ops/attention/cpu.rs `attention_fwd_ref` / `attention_bwd_ref`.
// Layout: q, out, dout, dq (B, Hq, T, D); k, v, dk, dv (B, Hkv, S, D); lse, delta (B, Hq, T);
// all contiguous. Requires 1 <= D <= 128, S >= T, Hq % Hkv == 0 (checked on the host).
// Deliberately not here: tensor cores (a later kernels/dev/attention_v2.cu), dropout, padding
// masks, sliding windows, D > 128.
#include "common.cuh"

#define ATT_MAXD 128
#define ATT_NJ 4    // ATT_MAXD / 32: lane owns dims lane + 32 j
#define ATT_BK 32   // keys per tile (fwd, dq)
#define ATT_RPW 8   // query rows per warp (fwd, dq)
#define ATT_BQ 32   // query rows per block = 4 warps x ATT_RPW
#define ATT_KPW 4   // keys per warp (dkv)
#define ATT_BKV 16  // keys per block (dkv) = 4 warps x ATT_KPW

struct AttentionParams {
    void* out;        // (B, Hq, T, D)
    float* lse;       // (B, Hq, T)
    const void* q;
    const void* k;
    const void* v;
    int b, hq, hkv, t, s, d;
    float scale;
    int _pad;
};
static_assert(sizeof(AttentionParams) == 72, "AttentionParams layout");

template <typename T>
__device__ __forceinline__ void att_load_tile_t(float (*dst)[ATT_BK + 1], const void* src, long long base, int k0,
                                                int nkeys, int s, int d) {
    // dst[d][kk] = src[base + (k0 + kk) * D + d], zero past the end; d fastest (coalesced reads).
    for (int idx = threadIdx.x; idx < nkeys * d; idx += blockDim.x) {
        int kk = idx / d, dd = idx - kk * d;
        int key = k0 + kk;
        dst[dd][kk] = key < s ? ld<T>(src, base + (long long)key * d + dd) : 0.0f;
    }
}

template <typename T> __device__ void att_fwd_impl(const AttentionParams& p) {
    __shared__ float Kt[ATT_MAXD][ATT_BK + 1];
    __shared__ float Vs[ATT_BK][ATT_MAXD];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int bh = blockIdx.y, bi = bh / p.hq, h = bh % p.hq, kvh = h / (p.hq / p.hkv);
    const long long qoff = (long long)bh * p.t * p.d;
    const long long kvoff = ((long long)bi * p.hkv + kvh) * p.s * p.d;
    const int row0 = blockIdx.x * ATT_BQ + warp * ATT_RPW;
    const int shift = p.s - p.t;  // query t sees keys <= shift + t

    float q[ATT_RPW][ATT_NJ], o[ATT_RPW][ATT_NJ], m[ATT_RPW], l[ATT_RPW];
#pragma unroll
    for (int r = 0; r < ATT_RPW; ++r) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
#pragma unroll
        for (int j = 0; j < ATT_NJ; ++j) {
            int t = row0 + r, dd = 32 * j + lane;
            q[r][j] = (t < p.t && dd < p.d) ? ld<T>(p.q, qoff + (long long)t * p.d + dd) : 0.0f;
            o[r][j] = 0.0f;
        }
    }
    const int last = min(p.t - 1, (int)blockIdx.x * ATT_BQ + ATT_BQ - 1);
    const int kend = shift + last + 1;  // keys the block's last row sees
    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        __syncthreads();
        att_load_tile_t<T>(Kt, p.k, kvoff, k0, ATT_BK, p.s, p.d);
        for (int idx = threadIdx.x; idx < ATT_BK * p.d; idx += blockDim.x) {
            int kk = idx / p.d, dd = idx - kk * p.d, key = k0 + kk;
            Vs[kk][dd] = key < p.s ? ld<T>(p.v, kvoff + (long long)key * p.d + dd) : 0.0f;
        }
        __syncthreads();
        float sc[ATT_RPW];
#pragma unroll
        for (int r = 0; r < ATT_RPW; ++r) sc[r] = 0.0f;
#pragma unroll
        for (int j = 0; j < ATT_NJ; ++j) {
            if (32 * j >= p.d) break;
#pragma unroll 4
            for (int ll = 0; ll < 32; ++ll) {
                int dd = 32 * j + ll;
                if (dd >= p.d) break;
                float kd = Kt[dd][lane];
#pragma unroll
                for (int r = 0; r < ATT_RPW; ++r) sc[r] += __shfl_sync(0xffffffffu, q[r][j], ll) * kd;
            }
        }
        const int key = k0 + lane;
#pragma unroll
        for (int r = 0; r < ATT_RPW; ++r) {
            const int t = row0 + r;
            const bool vis = t < p.t && key < p.s && key <= shift + t;
            float s = vis ? sc[r] * p.scale : -INFINITY;
            float mnew = fmaxf(m[r], warp_max(s));
            float pr = 0.0f, corr = 1.0f;
            if (mnew != -INFINITY) {
                pr = vis ? expf(s - mnew) : 0.0f;
                corr = expf(m[r] - mnew);
            }
            l[r] = l[r] * corr + warp_sum(pr);
            m[r] = mnew;
#pragma unroll
            for (int j = 0; j < ATT_NJ; ++j) o[r][j] *= corr;
#pragma unroll 4
            for (int kk = 0; kk < ATT_BK; ++kk) {
                float pk = __shfl_sync(0xffffffffu, pr, kk);
#pragma unroll
                for (int j = 0; j < ATT_NJ; ++j) o[r][j] += pk * Vs[kk][(32 * j + lane) & (ATT_MAXD - 1)];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ATT_RPW; ++r) {
        const int t = row0 + r;
        if (t >= p.t) continue;
        const float inv = 1.0f / l[r];
#pragma unroll
        for (int j = 0; j < ATT_NJ; ++j) {
            int dd = 32 * j + lane;
            if (dd < p.d) st<T>(p.out, qoff + (long long)t * p.d + dd, o[r][j] * inv);
        }
        if (lane == 0) p.lse[(long long)bh * p.t + t] = m[r] + logf(l[r]);
    }
}

struct AttentionBwdPrepParams {
    float* delta;        // (B*Hq*T,)
    const void* out;
    const void* dout;
    long long rows;
    int d;
    int _pad;
};
static_assert(sizeof(AttentionBwdPrepParams) == 40, "AttentionBwdPrepParams layout");

template <typename T> __device__ void att_bwd_prep_impl(const AttentionBwdPrepParams& p) {
    const int lane = threadIdx.x & 31;
    const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
    for (long long r = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < p.rows; r += warps) {
        float s = 0.0f;
        for (int dd = lane; dd < p.d; dd += 32) s += ld<T>(p.out, r * p.d + dd) * ld<T>(p.dout, r * p.d + dd);
        s = warp_sum(s);
        if (lane == 0) p.delta[r] = s;
    }
}

struct AttentionBwdParams {
    void* dq;            // (B, Hq, T, D)   (dq kernel)
    void* dk;            // (B, Hkv, S, D)  (dkv kernel)
    void* dv;            // (B, Hkv, S, D)  (dkv kernel)
    const void* q;
    const void* k;
    const void* v;
    const void* dout;
    const float* lse;    // (B, Hq, T)
    const float* delta;  // (B, Hq, T)
    int b, hq, hkv, t, s, d;
    float scale;
    int _pad;
};
static_assert(sizeof(AttentionBwdParams) == 104, "AttentionBwdParams layout");

template <typename T> __device__ void att_bwd_dq_impl(const AttentionBwdParams& p) {
    __shared__ float Kt[ATT_MAXD][ATT_BK + 1];
    __shared__ float Vt[ATT_MAXD][ATT_BK + 1];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int bh = blockIdx.y, bi = bh / p.hq, h = bh % p.hq, kvh = h / (p.hq / p.hkv);
    const long long qoff = (long long)bh * p.t * p.d;
    const long long kvoff = ((long long)bi * p.hkv + kvh) * p.s * p.d;
    const int row0 = blockIdx.x * ATT_BQ + warp * ATT_RPW;
    const int shift = p.s - p.t;

    float q[ATT_RPW][ATT_NJ], dO[ATT_RPW][ATT_NJ], dq[ATT_RPW][ATT_NJ], lse[ATT_RPW], del[ATT_RPW];
#pragma unroll
    for (int r = 0; r < ATT_RPW; ++r) {
        const int t = row0 + r;
        lse[r] = t < p.t ? p.lse[(long long)bh * p.t + t] : 0.0f;
        del[r] = t < p.t ? p.delta[(long long)bh * p.t + t] : 0.0f;
#pragma unroll
        for (int j = 0; j < ATT_NJ; ++j) {
            int dd = 32 * j + lane;
            bool in = t < p.t && dd < p.d;
            q[r][j] = in ? ld<T>(p.q, qoff + (long long)t * p.d + dd) : 0.0f;
            dO[r][j] = in ? ld<T>(p.dout, qoff + (long long)t * p.d + dd) : 0.0f;
            dq[r][j] = 0.0f;
        }
    }
    const int last = min(p.t - 1, (int)blockIdx.x * ATT_BQ + ATT_BQ - 1);
    const int kend = shift + last + 1;
    for (int k0 = 0; k0 < kend; k0 += ATT_BK) {
        __syncthreads();
        att_load_tile_t<T>(Kt, p.k, kvoff, k0, ATT_BK, p.s, p.d);
        att_load_tile_t<T>(Vt, p.v, kvoff, k0, ATT_BK, p.s, p.d);
        __syncthreads();
        float sc[ATT_RPW], dp[ATT_RPW];
#pragma unroll
        for (int r = 0; r < ATT_RPW; ++r) { sc[r] = 0.0f; dp[r] = 0.0f; }
#pragma unroll
        for (int j = 0; j < ATT_NJ; ++j) {
            if (32 * j >= p.d) break;
#pragma unroll 4
            for (int ll = 0; ll < 32; ++ll) {
                int dd = 32 * j + ll;
                if (dd >= p.d) break;
                float kd = Kt[dd][lane], vd = Vt[dd][lane];
#pragma unroll
                for (int r = 0; r < ATT_RPW; ++r) {
                    sc[r] += __shfl_sync(0xffffffffu, q[r][j], ll) * kd;
                    dp[r] += __shfl_sync(0xffffffffu, dO[r][j], ll) * vd;
                }
            }
        }
        const int key = k0 + lane;
#pragma unroll
        for (int r = 0; r < ATT_RPW; ++r) {
            const int t = row0 + r;
            const bool vis = t < p.t && key < p.s && key <= shift + t;
            const float pr = vis ? expf(sc[r] * p.scale - lse[r]) : 0.0f;
            const float ds = pr * (dp[r] - del[r]);
#pragma unroll 4
            for (int kk = 0; kk < ATT_BK; ++kk) {
                float dsk = __shfl_sync(0xffffffffu, ds, kk);
#pragma unroll
                for (int j = 0; j < ATT_NJ; ++j) dq[r][j] += dsk * Kt[(32 * j + lane) & (ATT_MAXD - 1)][kk];
            }
        }
    }
#pragma unroll
    for (int r = 0; r < ATT_RPW; ++r) {
        const int t = row0 + r;
        if (t >= p.t) continue;
#pragma unroll
        for (int j = 0; j < ATT_NJ; ++j) {
            int dd = 32 * j + lane;
            if (dd < p.d) st<T>(p.dq, qoff + (long long)t * p.d + dd, dq[r][j] * p.scale);
        }
    }
}

template <typename T> __device__ void att_bwd_dkv_impl(const AttentionBwdParams& p) {
    __shared__ float Qt[ATT_MAXD][ATT_BK + 1];
    __shared__ float Ot[ATT_MAXD][ATT_BK + 1];
    __shared__ float lse_s[ATT_BK], del_s[ATT_BK];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int bkv = blockIdx.y, bi = bkv / p.hkv, kvh = bkv % p.hkv, group = p.hq / p.hkv;
    const long long kvoff = (long long)bkv * p.s * p.d;
    const int key0 = blockIdx.x * ATT_BKV + warp * ATT_KPW;
    const int shift = p.s - p.t;

    float k[ATT_KPW][ATT_NJ], v[ATT_KPW][ATT_NJ], dk[ATT_KPW][ATT_NJ], dv[ATT_KPW][ATT_NJ];
#pragma unroll
    for (int c = 0; c < ATT_KPW; ++c) {
#pragma unroll
        for (int j = 0; j < ATT_NJ; ++j) {
            int key = key0 + c, dd = 32 * j + lane;
            bool in = key < p.s && dd < p.d;
            k[c][j] = in ? ld<T>(p.k, kvoff + (long long)key * p.d + dd) : 0.0f;
            v[c][j] = in ? ld<T>(p.v, kvoff + (long long)key * p.d + dd) : 0.0f;
            dk[c][j] = 0.0f;
            dv[c][j] = 0.0f;
        }
    }
    // The first query that sees the block's first key: t >= key - shift.
    const int tfirst = max(0, (int)blockIdx.x * ATT_BKV - shift);
    for (int hh = 0; hh < group; ++hh) {
        const int h = kvh * group + hh;
        const long long qoff = ((long long)bi * p.hq + h) * p.t * p.d;
        const long long loff = ((long long)bi * p.hq + h) * p.t;
        for (int i0 = (tfirst / ATT_BK) * ATT_BK; i0 < p.t; i0 += ATT_BK) {
            __syncthreads();
            att_load_tile_t<T>(Qt, p.q, qoff, i0, ATT_BK, p.t, p.d);
            att_load_tile_t<T>(Ot, p.dout, qoff, i0, ATT_BK, p.t, p.d);
            if (threadIdx.x < ATT_BK) {
                int t = i0 + threadIdx.x;
                lse_s[threadIdx.x] = t < p.t ? p.lse[loff + t] : 0.0f;
                del_s[threadIdx.x] = t < p.t ? p.delta[loff + t] : 0.0f;
            }
            __syncthreads();
            float sc[ATT_KPW], dp[ATT_KPW];
#pragma unroll
            for (int c = 0; c < ATT_KPW; ++c) { sc[c] = 0.0f; dp[c] = 0.0f; }
#pragma unroll
            for (int j = 0; j < ATT_NJ; ++j) {
                if (32 * j >= p.d) break;
    #pragma unroll 4
            for (int ll = 0; ll < 32; ++ll) {
                    int dd = 32 * j + ll;
                    if (dd >= p.d) break;
                    float qd = Qt[dd][lane], od = Ot[dd][lane];
#pragma unroll
                    for (int c = 0; c < ATT_KPW; ++c) {
                        sc[c] += qd * __shfl_sync(0xffffffffu, k[c][j], ll);
                        dp[c] += od * __shfl_sync(0xffffffffu, v[c][j], ll);
                    }
                }
            }
            const int t = i0 + lane;  // this lane's query
#pragma unroll
            for (int c = 0; c < ATT_KPW; ++c) {
                const int key = key0 + c;
                const bool vis = t < p.t && key < p.s && key <= shift + t;
                const float pr = vis ? expf(sc[c] * p.scale - lse_s[lane]) : 0.0f;
                const float ds = pr * (dp[c] - del_s[lane]);
#pragma unroll 4
                for (int i = 0; i < ATT_BK; ++i) {
                    float pi = __shfl_sync(0xffffffffu, pr, i);
                    float di = __shfl_sync(0xffffffffu, ds, i);
#pragma unroll
                    for (int j = 0; j < ATT_NJ; ++j) {
                        int dd = (32 * j + lane) & (ATT_MAXD - 1);
                        dv[c][j] += pi * Ot[dd][i];
                        dk[c][j] += di * Qt[dd][i];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int c = 0; c < ATT_KPW; ++c) {
        const int key = key0 + c;
        if (key >= p.s) continue;
#pragma unroll
        for (int j = 0; j < ATT_NJ; ++j) {
            int dd = 32 * j + lane;
            if (dd < p.d) {
                st<T>(p.dk, kvoff + (long long)key * p.d + dd, dk[c][j] * p.scale);
                st<T>(p.dv, kvoff + (long long)key * p.d + dd, dv[c][j]);
            }
        }
    }
}

KERNEL void attention_fwd_f32(const AttentionParams p) { att_fwd_impl<float>(p); }
KERNEL void attention_fwd_bf16(const AttentionParams p) { att_fwd_impl<bf16>(p); }
KERNEL void attention_bwd_prep_f32(const AttentionBwdPrepParams p) { att_bwd_prep_impl<float>(p); }
KERNEL void attention_bwd_prep_bf16(const AttentionBwdPrepParams p) { att_bwd_prep_impl<bf16>(p); }
KERNEL void attention_bwd_dq_f32(const AttentionBwdParams p) { att_bwd_dq_impl<float>(p); }
KERNEL void attention_bwd_dq_bf16(const AttentionBwdParams p) { att_bwd_dq_impl<bf16>(p); }
KERNEL void attention_bwd_dkv_f32(const AttentionBwdParams p) { att_bwd_dkv_impl<float>(p); }
KERNEL void attention_bwd_dkv_bf16(const AttentionBwdParams p) { att_bwd_dkv_impl<bf16>(p); }
