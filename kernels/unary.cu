// unary: elementwise exp, log, sqrt, rsqrt, neg, sqr, recip, silu, affine(mul, add), powf(e) on a
// contiguous buffer, computed in f32 and written in the input dtype.
// Reference: crates/tensor/src/ops/unary/cpu.rs `unary_ref` (f64, rounded once), so results agree
// to a few ulps, not bit for bit (CUDA's expf/logf/powf are not correctly rounded).
// Deliberately not here: strided inputs (callers make them contiguous), integer dtypes.
#include "common.cuh"

// op: 0 exp, 1 log, 2 sqrt, 3 rsqrt, 4 neg, 5 sqr, 6 recip, 7 silu, 8 affine (x*p0 + p1),
// 9 powf (x^p0).
struct UnaryParams {
    void* out;
    const void* x;
    long long n;
    int op;
    float p0;
    float p1;
    int _pad;
};
static_assert(sizeof(UnaryParams) == 40, "UnaryParams layout");

__device__ __forceinline__ float unary_apply(int op, float v, float p0, float p1) {
    switch (op) {
        case 0: return expf(v);
        case 1: return logf(v);
        case 2: return sqrtf(v);
        case 3: return 1.0f / sqrtf(v);
        case 4: return -v;
        case 5: return v * v;
        case 6: return 1.0f / v;
        case 7: return v / (1.0f + expf(-v));
        case 8: return __fadd_rn(__fmul_rn(v, p0), p1);  // the CPU's `v * m + a`, two roundings
        default: return powf(v, p0);
    }
}

template <typename T> __device__ void unary_impl(const UnaryParams& p) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride)
        st<T>(p.out, i, unary_apply(p.op, ld<T>(p.x, i), p.p0, p.p1));
}

KERNEL void unary_fwd_f32(const UnaryParams p) { unary_impl<float>(p); }
KERNEL void unary_fwd_bf16(const UnaryParams p) { unary_impl<bf16>(p); }
KERNEL void unary_fwd_f16(const UnaryParams p) { unary_impl<__half>(p); }
