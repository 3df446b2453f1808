// adamw: the optimizer step over flat f32 buffers, bit for bit with the CPU:
// - adamw_fwd_f32: 32-bit AdamW (bitsandbytes optimizer_update_32bit order, README 3.8):
//   m = m b1 + (1-b1) g; v = v b2 + (1-b2) g g; p *= decay (if any); p += step_size m/(sqrt v + eps_hat)
//   Reference: trainer/src/optim/adamw.rs `adamw_kernel`.
// - adamw8bit_fwd_f32: bnb's blockwise 8-bit Adam, one CUDA block per 256-value quant block, m on
//   the signed and v on the unsigned dynamic map (tables passed in, 256 f32 each), non-finite
//   gradients leave p alone and zero the state, m keeps its sign through quantization.
//   Reference: trainer/src/optim/dynamic_map.rs `adam8bit_block` and `DynamicMap::quantize`.
// - adamw_clip_fwd_f32: torch clip_grad_norm_ given the norm from reduce_sumsq_finish_f32 (read on
//   the device, so no host round trip): g *= max_norm / (norm + 1e-6) when that is < 1 and finite.
// Every product and sum is spelled __fmul_rn/__fadd_rn so nvcc cannot contract them into FMAs,
// which the CPU (Rust, no contraction) does not do. The step constants (AdamConsts) come from the
// host, formed in f64 and rounded once, exactly as the CPU does.
// Deliberately not here: bnb's percentile clipping / max_unorm, fp16/bf16 parameters, paging.
#include "common.cuh"

struct AdamwParams {
    float* p;
    const float* g;
    float* m;
    float* v;
    long long n;
    float b1;
    float one_minus_b1;
    float b2;
    float one_minus_b2;
    float decay;      // used when has_decay != 0
    float step_size;  // -lr sqrt(1-b2^t)/(1-b1^t)
    float eps_hat;    // eps sqrt(1-b2^t)
    int has_decay;
};
static_assert(sizeof(AdamwParams) == 72, "AdamwParams layout");

KERNEL void adamw_fwd_f32(const AdamwParams c) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < c.n; i += stride) {
        float g = c.g[i];
        float mi = __fadd_rn(__fmul_rn(c.m[i], c.b1), __fmul_rn(c.one_minus_b1, g));
        float vi = __fadd_rn(__fmul_rn(c.v[i], c.b2), __fmul_rn(__fmul_rn(c.one_minus_b2, g), g));
        float pi = c.p[i];
        if (c.has_decay) pi = __fmul_rn(pi, c.decay);
        c.p[i] = __fadd_rn(pi, __fmul_rn(c.step_size, __fdiv_rn(mi, __fadd_rn(__fsqrt_rn(vi), c.eps_hat))));
        c.m[i] = mi;
        c.v[i] = vi;
    }
}

struct Adamw8bitParams {
    float* p;
    const float* g;
    unsigned char* m_codes;  // (n,)
    unsigned char* v_codes;  // (n,)
    float* absmax_m;         // (ceil(n/256),)
    float* absmax_v;
    const float* signed_map;    // 256 sorted values, code 127 = 0
    const float* unsigned_map;  // 256 sorted values, code 0 = 0
    long long n;
    float b1;
    float one_minus_b1;
    float b2;
    float one_minus_b2;
    float decay;
    float step_size;
    float eps_hat;
    int has_decay;
};
static_assert(sizeof(Adamw8bitParams) == 104, "Adamw8bitParams layout");

// DynamicMap::quantize: bnb's quantize_2D binary search, exact nearest, ties as the search stops.
__device__ __forceinline__ int dyn_quantize(const float* code, bool is_signed, float x) {
    int lo_i = 0, hi_i = 255, pivot = 127;
    float lo = is_signed ? -1.0f : 0.0f, hi = 1.0f;
    float val = code[pivot];
    for (int step = 64; step > 0; step >>= 1) {
        if (x > val) { lo_i = pivot; lo = val; pivot += step; }
        else { hi_i = pivot; hi = val; pivot -= step; }
        val = code[pivot];
    }
    if (x > val) return x > __fmul_rn(__fadd_rn(hi, val), 0.5f) ? hi_i : pivot;
    return x < __fmul_rn(__fadd_rn(lo, val), 0.5f) ? lo_i : pivot;
}

// blockDim.x == 256, one block per quant block (grid-stride over blocks).
KERNEL void adamw8bit_fwd_f32(const Adamw8bitParams c) {
    __shared__ float smap[256];
    __shared__ float umap[256];
    __shared__ float wm[8], wv[8];
    smap[threadIdx.x] = c.signed_map[threadIdx.x];
    umap[threadIdx.x] = c.unsigned_map[threadIdx.x];
    __syncthreads();
    long long nblocks = (c.n + 255) / 256;
    for (long long b = blockIdx.x; b < nblocks; b += gridDim.x) {
        long long i = b * 256 + threadIdx.x;
        bool in = i < c.n;
        float g = in ? c.g[i] : 0.0f;
        bool fin = in && isfinite(g);
        float am = c.absmax_m[b], av = c.absmax_v[b];
        float s1 = 0.0f, s2 = 0.0f;
        if (fin) {
            float v = __fmul_rn(umap[c.v_codes[i]], av);
            s2 = __fadd_rn(__fmul_rn(v, c.b2), __fmul_rn(__fmul_rn(c.one_minus_b2, g), g));
            float m = __fmul_rn(smap[c.m_codes[i]], am);
            s1 = __fadd_rn(__fmul_rn(m, c.b1), __fmul_rn(c.one_minus_b1, g));
        }
        // max is order independent (and like f32::max ignores NaN), so this equals the CPU's fold.
        float mm = fabsf(s1), vv = fabsf(s2);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            mm = fmaxf(mm, __shfl_xor_sync(0xffffffffu, mm, o));
            vv = fmaxf(vv, __shfl_xor_sync(0xffffffffu, vv, o));
        }
        __syncthreads();
        if ((threadIdx.x & 31) == 0) { wm[threadIdx.x >> 5] = mm; wv[threadIdx.x >> 5] = vv; }
        __syncthreads();
        mm = 0.0f; vv = 0.0f;
#pragma unroll
        for (int k = 0; k < 8; ++k) { mm = fmaxf(mm, wm[k]); vv = fmaxf(vv, wv[k]); }
        if (threadIdx.x == 0) { c.absmax_m[b] = mm; c.absmax_v[b] = vv; }
        if (in) {
            if (fin) {
                float pj = c.p[i];
                if (c.has_decay) pj = __fmul_rn(pj, c.decay);
                c.p[i] = __fadd_rn(pj, __fmul_rn(c.step_size, __fdiv_rn(s1, __fadd_rn(__fsqrt_rn(s2), c.eps_hat))));
            }
            int q;
            if (mm > 0.0f) {
                q = dyn_quantize(smap, true, __fdiv_rn(s1, mm));
                if ((signbit(smap[q]) != 0) != (signbit(s1) != 0)) q = s1 > 0.0f ? ((q + 1) & 255) : ((q + 255) & 255);
            } else {
                q = 127;
            }
            c.m_codes[i] = (unsigned char)q;
            c.v_codes[i] = (unsigned char)(vv > 0.0f ? dyn_quantize(umap, false, __fdiv_rn(s2, vv)) : 0);
        }
        __syncthreads();
    }
}

struct ClipParams {
    float* g;
    const float* norm;  // (1,) from reduce_sumsq_finish_f32
    long long n;
    float max_norm;
    int _pad;
};
static_assert(sizeof(ClipParams) == 32, "ClipParams layout");

KERNEL void adamw_clip_fwd_f32(const ClipParams c) {
    float norm = *c.norm;
    float coef = __fdiv_rn(c.max_norm, __fadd_rn(norm, 1e-6f));
    if (!(isfinite(norm) && coef < 1.0f)) return;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < c.n; i += stride)
        c.g[i] = __fmul_rn(c.g[i], coef);
}
