// softmax: stable softmax over the last dim of a contiguous (rows, cols) buffer, and its
// backward dx = y * (dy - sum(dy * y)). One block per row; the forward keeps an online
// (max, sum of exp) per thread and merges them, so it reads x twice, not three times.
// Reference: crates/tensor/src/ops/softmax/cpu.rs `softmax_last_ref`, `softmax_last_bwd_ref`.
// Deliberately not here: masking, temperature (use affine first), strided inputs.
#include "common.cuh"

struct SoftmaxParams {
    void* y;
    const void* x;
    long long rows;
    int cols;
    int _pad;
};
static_assert(sizeof(SoftmaxParams) == 32, "SoftmaxParams layout");

template <typename T> __device__ void softmax_fwd_impl(const SoftmaxParams& p) {
    __shared__ float fs[32];
    __shared__ float ms[32];
    for (long long r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const long long base = r * p.cols;
        float m = -INFINITY, s = 0.0f;
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x) {
            float v = ld<T>(p.x, base + c);
            if (v > m) { s = s * expf(m - v) + 1.0f; m = v; }
            else if (m != -INFINITY) s += expf(v - m);
        }
        float gm = block_max(m, ms);
        s = (m == -INFINITY) ? 0.0f : s * expf(m - gm);
        s = block_sum(s, fs);
        float inv = 1.0f / s;
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x)
            st<T>(p.y, base + c, expf(ld<T>(p.x, base + c) - gm) * inv);
        __syncthreads();
    }
}

struct SoftmaxBwdParams {
    void* dx;
    const void* y;
    const void* dy;
    long long rows;
    int cols;
    int _pad;
};
static_assert(sizeof(SoftmaxBwdParams) == 40, "SoftmaxBwdParams layout");

template <typename T> __device__ void softmax_bwd_impl(const SoftmaxBwdParams& p) {
    __shared__ float fs[32];
    for (long long r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const long long base = r * p.cols;
        float d = 0.0f;
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x) d += ld<T>(p.y, base + c) * ld<T>(p.dy, base + c);
        d = block_sum(d, fs);
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x)
            st<T>(p.dx, base + c, ld<T>(p.y, base + c) * (ld<T>(p.dy, base + c) - d));
        __syncthreads();
    }
}

KERNEL void softmax_fwd_f32(const SoftmaxParams p) { softmax_fwd_impl<float>(p); }
KERNEL void softmax_fwd_bf16(const SoftmaxParams p) { softmax_fwd_impl<bf16>(p); }
KERNEL void softmax_bwd_f32(const SoftmaxBwdParams p) { softmax_bwd_impl<float>(p); }
KERNEL void softmax_bwd_bf16(const SoftmaxBwdParams p) { softmax_bwd_impl<bf16>(p); }
