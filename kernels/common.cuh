// Shared helpers for every kernels/*.cu: dtype loads/stores (compute is always f32; bf16 is
// widened exactly and narrowed round-to-nearest-even, like the CPU's `half` crate), warp and block
// reductions, and the launch-struct conventions.
//
// Conventions (mirrored in crates/tensor/src/cuda/params.rs):
// - every kernel takes ONE parameter, a by-value struct `<Op>Params`; pointers are 64-bit device
//   addresses (`u64` in Rust), element counts `long long` (`i64`), small sizes `int` (`i32`);
//   8-byte fields come first and each struct is padded to a multiple of 8 bytes, with a
//   static_assert on its size that the Rust side repeats;
// - kernel names are `<op>_<fwd|bwd>_<dtype>` (extra stages add a word: `attention_bwd_dq_f32`);
// - no kernel here uses fast-math: the default IEEE division and sqrt stay, and code that must
//   match the CPU bit for bit spells out its roundings with __fmul_rn / __fadd_rn / __fdiv_rn.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define KERNEL extern "C" __global__

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

template <typename T> __device__ __forceinline__ float ld(const void* p, long long i) {
    return to_f32(static_cast<const T*>(p)[i]);
}
template <typename T> __device__ __forceinline__ void st(void* p, long long i, float v) {
    static_cast<T*>(p)[i] = from_f32<T>(v);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
// NaN-propagating max (PyTorch semantics for max reductions).
__device__ __forceinline__ float nan_max(float a, float b) { return (a != a || a > b) ? a : b; }
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = nan_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide reductions for blockDim.x a multiple of 32 and at most 1024. Every thread gets the
// result. `scratch` needs 32 slots. The order of additions is fixed by the thread layout, so the
// result is deterministic run to run.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[wid] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ double block_sum_d(double v, double* scratch) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) scratch[wid] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : 0.0;
    return warp_sum_d(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[wid] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : -INFINITY;
    return warp_max(v);
}

// Online-softmax state merge: (m, s) holds max and sum of exp(x - m).
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
    float mn = fmaxf(m, m2);
    if (mn == -INFINITY) return;  // both empty
    s = s * expf(m - mn) + s2 * expf(m2 - mn);
    m = mn;
}
