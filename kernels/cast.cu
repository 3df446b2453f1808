// cast: f32 <-> bf16 / f16 on a contiguous buffer with round-to-nearest-even (the `half` crate's
// and torch's `.to`), bit for bit. Reference: crates/tensor/src/ops/cast/cpu.rs `cast_ref`.
// Deliberately not here: integer casts (u8/i32 <-> f32 stay on the host: indices and codes are
// produced there), strided inputs.
#include "common.cuh"

struct CastParams {
    void* out;
    const void* x;
    long long n;
};
static_assert(sizeof(CastParams) == 24, "CastParams layout");

template <typename S, typename D> __device__ void cast_impl(const CastParams& p) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride)
        static_cast<D*>(p.out)[i] = from_f32<D>(to_f32(static_cast<const S*>(p.x)[i]));
}

KERNEL void cast_fwd_f32_bf16(const CastParams p) { cast_impl<float, bf16>(p); }
KERNEL void cast_fwd_bf16_f32(const CastParams p) { cast_impl<bf16, float>(p); }
KERNEL void cast_fwd_f32_f16(const CastParams p) { cast_impl<float, __half>(p); }
KERNEL void cast_fwd_f16_f32(const CastParams p) { cast_impl<__half, float>(p); }
