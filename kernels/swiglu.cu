// swiglu: y = silu(g) * u = g * sigmoid(g) * u, and its backward
// dg = dy * u * s * (1 + g * (1 - s)), du = dy * g * s with s = sigmoid(g). Elementwise on
// contiguous buffers; the backward writes (does not accumulate) dg and du.
// Reference: crates/tensor/src/ops/swiglu/cpu.rs `swiglu_fwd_ref` / `swiglu_bwd_ref`.
// Deliberately not here: the gate/up projections (matmul) or a packed [gate|up] layout.
#include "common.cuh"

struct SwigluParams {
    void* y;
    const void* g;
    const void* u;
    long long n;
};
static_assert(sizeof(SwigluParams) == 32, "SwigluParams layout");

struct SwigluBwdParams {
    void* dg;
    void* du;
    const void* dy;
    const void* g;
    const void* u;
    long long n;
};
static_assert(sizeof(SwigluBwdParams) == 48, "SwigluBwdParams layout");

__device__ __forceinline__ float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

template <typename T> __device__ void swiglu_fwd_impl(const SwigluParams& p) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride) {
        float g = ld<T>(p.g, i);
        st<T>(p.y, i, g * sigmoidf(g) * ld<T>(p.u, i));
    }
}

template <typename T> __device__ void swiglu_bwd_impl(const SwigluBwdParams& p) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride) {
        float g = ld<T>(p.g, i), u = ld<T>(p.u, i), d = ld<T>(p.dy, i);
        float s = sigmoidf(g);
        st<T>(p.dg, i, d * u * s * (1.0f + g * (1.0f - s)));
        st<T>(p.du, i, d * g * s);
    }
}

KERNEL void swiglu_fwd_f32(const SwigluParams p) { swiglu_fwd_impl<float>(p); }
KERNEL void swiglu_fwd_bf16(const SwigluParams p) { swiglu_fwd_impl<bf16>(p); }
KERNEL void swiglu_bwd_f32(const SwigluBwdParams p) { swiglu_bwd_impl<float>(p); }
KERNEL void swiglu_bwd_bf16(const SwigluBwdParams p) { swiglu_bwd_impl<bf16>(p); }
