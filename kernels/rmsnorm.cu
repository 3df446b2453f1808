// rmsnorm: HF RMSNorm in f32, y = (x * rstd) * w with rstd = 1/sqrt(mean(x^2) + eps), and its
// backward dx = rstd * (g - x * rstd^2 * mean(g * x)) with g = dy * w, dw = sum_rows dy * x * rstd.
// Reference: crates/tensor/src/ops/rmsnorm/cpu.rs `rmsnorm_fwd_ref` / `rmsnorm_bwd_ref`.
// Layout: x, y, dy, dx (rows, cols) contiguous; w, dw (cols,); rstd (rows,) always f32.
// dx and dw are WRITTEN (not accumulated), like the CPU op. dw is a second kernel over column
// strips (each thread owns one column, a fixed row order) so it is deterministic without atomics.
// Deliberately not here: a bias, mean-centering (LayerNorm), a fused residual add.
#include "common.cuh"

struct RmsnormParams {
    void* y;
    float* rstd;
    const void* x;
    const void* w;
    long long rows;
    int cols;
    float eps;
};
static_assert(sizeof(RmsnormParams) == 48, "RmsnormParams layout");

template <typename T> __device__ void rmsnorm_fwd_impl(const RmsnormParams& p) {
    __shared__ float fs[32];
    for (long long r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const long long base = r * p.cols;
        float ss = 0.0f;
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x) {
            float v = ld<T>(p.x, base + c);
            ss += v * v;
        }
        ss = block_sum(ss, fs);
        float rs = 1.0f / sqrtf(ss / (float)p.cols + p.eps);
        if (threadIdx.x == 0) p.rstd[r] = rs;
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x)
            st<T>(p.y, base + c, __fmul_rn(__fmul_rn(ld<T>(p.x, base + c), rs), ld<T>(p.w, c)));
        __syncthreads();
    }
}

struct RmsnormBwdParams {
    void* dx;
    const void* dy;
    const void* x;
    const void* w;
    const float* rstd;
    long long rows;
    int cols;
    int _pad;
};
static_assert(sizeof(RmsnormBwdParams) == 56, "RmsnormBwdParams layout");

template <typename T> __device__ void rmsnorm_bwd_impl(const RmsnormBwdParams& p) {
    __shared__ float fs[32];
    for (long long r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const long long base = r * p.cols;
        float rs = p.rstd[r];
        float gx = 0.0f;
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x)
            gx += ld<T>(p.dy, base + c) * ld<T>(p.w, c) * ld<T>(p.x, base + c);
        gx = block_sum(gx, fs);
        float k = rs * rs * (gx * rs / (float)p.cols);
        for (int c = threadIdx.x; c < p.cols; c += blockDim.x) {
            float g = ld<T>(p.dy, base + c) * ld<T>(p.w, c);
            st<T>(p.dx, base + c, rs * g - k * ld<T>(p.x, base + c));
        }
        __syncthreads();
    }
}

// dw: block (32, 8) owns 32 columns; threadIdx.y strides over rows; a fixed-order tree over y.
struct RmsnormDwParams {
    void* dw;
    const void* dy;
    const void* x;
    const float* rstd;
    long long rows;
    int cols;
    int _pad;
};
static_assert(sizeof(RmsnormDwParams) == 48, "RmsnormDwParams layout");

template <typename T> __device__ void rmsnorm_dw_impl(const RmsnormDwParams& p) {
    __shared__ float part[8][33];
    int c = blockIdx.x * 32 + threadIdx.x;
    float acc = 0.0f;
    if (c < p.cols)
        for (long long r = threadIdx.y; r < p.rows; r += blockDim.y)
            acc += ld<T>(p.dy, r * p.cols + c) * ld<T>(p.x, r * p.cols + c) * p.rstd[r];
    part[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && c < p.cols) {
        float s = 0.0f;
        for (int y = 0; y < blockDim.y; ++y) s += part[y][threadIdx.x];
        st<T>(p.dw, c, s);
    }
}

KERNEL void rmsnorm_fwd_f32(const RmsnormParams p) { rmsnorm_fwd_impl<float>(p); }
KERNEL void rmsnorm_fwd_bf16(const RmsnormParams p) { rmsnorm_fwd_impl<bf16>(p); }
KERNEL void rmsnorm_bwd_f32(const RmsnormBwdParams p) { rmsnorm_bwd_impl<float>(p); }
KERNEL void rmsnorm_bwd_bf16(const RmsnormBwdParams p) { rmsnorm_bwd_impl<bf16>(p); }
KERNEL void rmsnorm_bwd_dw_f32(const RmsnormDwParams p) { rmsnorm_dw_impl<float>(p); }
KERNEL void rmsnorm_bwd_dw_bf16(const RmsnormDwParams p) { rmsnorm_dw_impl<bf16>(p); }
