// dropout: an inverted-dropout mask written on the device. Element i (of a contiguous buffer) is
// `value` (1/keep, rounded once to the dtype) when kept, 0 when dropped, where with wrapping u64
// arithmetic
//   z = mix64(seed + (i + 1) * 0x9E3779B97F4A7C15)     (SplitMix64 output i for `seed`)
//   kept = (z >> 40) < threshold                       (threshold = ceil(keep * 2^24), host-computed)
// Integers only, so the mask is bit-identical to the CPU's.
// Reference: crates/tensor/src/ops/dropout/cpu.rs `mask_ref` (and `bits`, `threshold`).
// Deliberately not here: applying the mask (a multiply) or fusing it into the LoRA matmul.
#include "common.cuh"

struct DropoutParams {
    void* out;
    unsigned long long seed;
    long long n;
    unsigned int threshold;
    float value;
};
static_assert(sizeof(DropoutParams) == 32, "DropoutParams layout");

#define DROPOUT_GAMMA 0x9E3779B97F4A7C15ull

// SplitMix64's output function (Stafford's mix 13), as `mix64` in cpu.rs.
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

template <typename T> __device__ void dropout_fwd_impl(const DropoutParams& p) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride) {
        unsigned long long z = mix64(p.seed + ((unsigned long long)i + 1ull) * DROPOUT_GAMMA);
        bool kept = (unsigned int)(z >> 40) < p.threshold;
        st<T>(p.out, i, kept ? p.value : 0.0f);
    }
}

KERNEL void dropout_fwd_f32(const DropoutParams p) { dropout_fwd_impl<float>(p); }
KERNEL void dropout_fwd_bf16(const DropoutParams p) { dropout_fwd_impl<bf16>(p); }
KERNEL void dropout_fwd_f16(const DropoutParams p) { dropout_fwd_impl<__half>(p); }
