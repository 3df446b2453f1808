// cross_entropy: per-row logsumexp and loss over (N, V) logits, chunked over the vocabulary with
// an online (max, sum) per thread, then a one-block finish that sums the row losses in f64 in a
// fixed order and counts the rows whose target is not ignore_index (-100); and the backward
// dlogits = grad_scale * (softmax - onehot), zero rows where target == ignore_index (written).
// Reference: crates/tensor/src/ops/cross_entropy/cpu.rs `ce_fwd_ref` / `ce_bwd_ref`.
// Targets must be ignore_index or in [0, V) (checked by the caller; an out-of-range target's row
// contributes nothing here). Deliberately not here: label smoothing, class weights, z-loss.
#include "common.cuh"

struct CrossEntropyParams {
    float* lse;          // (N,)
    float* row_loss;     // (N,) lse - x[target], 0 for ignored rows
    const void* logits;  // (N, V)
    const int* targets;  // (N,)
    long long n;
    int v;
    int ignore_index;
};
static_assert(sizeof(CrossEntropyParams) == 48, "CrossEntropyParams layout");

template <typename T> __device__ void ce_fwd_impl(const CrossEntropyParams& p) {
    __shared__ float ms[32];
    __shared__ float fs[32];
    for (long long r = blockIdx.x; r < p.n; r += gridDim.x) {
        const long long base = r * p.v;
        float m = -INFINITY, s = 0.0f;
        for (int c = threadIdx.x; c < p.v; c += blockDim.x) {
            float x = ld<T>(p.logits, base + c);
            if (x > m) { s = s * expf(m - x) + 1.0f; m = x; }
            else if (m != -INFINITY) s += expf(x - m);
        }
        float gm = block_max(m, ms);
        s = (m == -INFINITY) ? 0.0f : s * expf(m - gm);
        s = block_sum(s, fs);
        if (threadIdx.x == 0) {
            float l = gm == -INFINITY ? gm : gm + logf(s);
            p.lse[r] = l;
            int t = p.targets[r];
            p.row_loss[r] = (t != p.ignore_index && t >= 0 && t < p.v) ? l - ld<T>(p.logits, base + t) : 0.0f;
        }
        __syncthreads();
    }
}

struct CrossEntropyFinishParams {
    double* loss_sum;        // (1,)
    int* count;              // (1,)
    const float* row_loss;   // (N,)
    const int* targets;      // (N,)
    long long n;
    int ignore_index;
    int v;
};
static_assert(sizeof(CrossEntropyFinishParams) == 48, "CrossEntropyFinishParams layout");

// One block of 1024 threads.
KERNEL void cross_entropy_fwd_finish_f32(const CrossEntropyFinishParams p) {
    __shared__ double ds[32];
    __shared__ float fs[32];
    double s = 0.0;
    float cnt = 0.0f;  // exact up to 2^24 rows per thread slice
    for (long long i = threadIdx.x; i < p.n; i += blockDim.x) {
        int t = p.targets[i];
        if (t != p.ignore_index && t >= 0 && t < p.v) {
            s += (double)p.row_loss[i];
            cnt += 1.0f;
        }
    }
    s = block_sum_d(s, ds);
    cnt = block_sum(cnt, fs);
    if (threadIdx.x == 0) {
        *p.loss_sum = s;
        *p.count = (int)cnt;
    }
}

struct CrossEntropyBwdParams {
    void* dlogits;       // (N, V)
    const void* logits;  // (N, V)
    const int* targets;  // (N,)
    const float* lse;    // (N,)
    long long n;
    int v;
    int ignore_index;
    float grad_scale;
    int _pad;
};
static_assert(sizeof(CrossEntropyBwdParams) == 56, "CrossEntropyBwdParams layout");

template <typename T> __device__ void ce_bwd_impl(const CrossEntropyBwdParams& p) {
    const long long total = p.n * p.v;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        long long r = e / p.v;
        int c = (int)(e - r * p.v);
        int t = p.targets[r];
        float d = 0.0f;
        if (t != p.ignore_index) {
            float sm = expf(ld<T>(p.logits, e) - p.lse[r]);
            d = p.grad_scale * (sm - (c == t ? 1.0f : 0.0f));
        }
        st<T>(p.dlogits, e, d);
    }
}

KERNEL void cross_entropy_fwd_f32(const CrossEntropyParams p) { ce_fwd_impl<float>(p); }
KERNEL void cross_entropy_fwd_bf16(const CrossEntropyParams p) { ce_fwd_impl<bf16>(p); }
KERNEL void cross_entropy_bwd_f32(const CrossEntropyBwdParams p) { ce_bwd_impl<float>(p); }
KERNEL void cross_entropy_bwd_bf16(const CrossEntropyBwdParams p) { ce_bwd_impl<bf16>(p); }
