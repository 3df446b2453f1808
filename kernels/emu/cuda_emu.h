// The CUDA emulator's device-side header: force-included (g++ -include) before each kernels/*.cu
// when the tensor crate is built with the `cuda-emu` feature, so the kernels' own source runs on
// the CPU, one fiber per CUDA thread, under the runtime in crates/tensor/src/cuda/emu/.
//
// What it provides: the CUDA keywords as plain C++ (`__shared__` is a per-OS-thread static,
// because one OS thread runs one block at a time), threadIdx/blockIdx/blockDim/gridDim read from
// the running fiber, __syncthreads and the warp intrinsics (shuffles, ballot, __syncwarp) as
// calls into the runtime that suspend the fiber until its block or warp has arrived, the
// rounding intrinsics as plain IEEE operations (the file is compiled with -ffp-contract=off, so
// `__fmul_rn(a, b) + c` is two roundings, as on the GPU), bf16/f16 as their 16 bits with exact
// widening and round-to-nearest-even narrowing, and `mma.sync.m16n8k16` bf16 as a warp-collective
// call that gathers the 32 lanes' fragments by the PTX ISA's fragment layout.
//
// What differs from a GPU (and so what the emulator cannot check): expf/logf/sqrtf are the C
// library's (CUDA's non-fast-math versions are within 2 ulp of them), the f32 sums of an mma run
// in k order, nvcc contracts `a * b + c` into an FMA where the source does not spell `_rn`, and
// blocks never overlap (a race between blocks goes unseen). Races inside a block are as visible
// as the fiber order makes them: every fiber runs until it waits, in thread order.
#pragma once
#include <math.h>
#include <stdint.h>
#include <string.h>

#define QLORA_EMU 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __constant__
#define __shared__ static thread_local
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
    unsigned int x, y, z;
};
typedef uint3 dim3;

// The running fiber's indices (crates/tensor/src/cuda/emu/runtime.rs `Idx`, same layout).
struct QloraEmuIdx {
    uint3 thread_idx, block_idx, block_dim, grid_dim;
    unsigned int lane;
    unsigned int _pad;
};

// The running fiber's indices, set by the runtime before it resumes a fiber (build.rs defines it).
extern thread_local const QloraEmuIdx* qlora_emu_cur;
// Suspends until every live thread of the block has called it.
extern "C" void qlora_emu_syncthreads(void);
// Deposits `bits` for this lane, waits for the warp, returns what lane `src` deposited.
extern "C" unsigned long long qlora_emu_shfl(unsigned long long bits, unsigned int src);
// The warp's predicate bits (lane i in bit i), after every live lane has voted.
extern "C" unsigned int qlora_emu_ballot(int pred);
// d = a.b + c for the warp's m16n8k16 bf16 fragments (f32 accumulate), in place in c.
extern "C" void qlora_emu_mma_bf16_m16n8k16(float* c, const unsigned int* a, const unsigned int* b);

#define threadIdx (qlora_emu_cur->thread_idx)
#define blockIdx (qlora_emu_cur->block_idx)
#define blockDim (qlora_emu_cur->block_dim)
#define gridDim (qlora_emu_cur->grid_dim)
static const int warpSize = 32;

inline void __syncthreads() { qlora_emu_syncthreads(); }
inline void __syncwarp(unsigned int = 0xffffffffu) { (void)qlora_emu_shfl(0, qlora_emu_cur->lane); }

template <typename T> inline unsigned long long qlora_emu_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    unsigned long long b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}
template <typename T> inline T qlora_emu_from_bits(unsigned long long b) {
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}
// CUDA's lane rules: a source outside the caller's `width` segment (xor, down) reads its own value;
// __shfl_sync's source wraps within the segment.
template <typename T> inline T __shfl_sync(unsigned int, T v, int src, int width = 32) {
    unsigned int lane = qlora_emu_cur->lane;
    unsigned int base = lane & ~(unsigned int)(width - 1);
    return qlora_emu_from_bits<T>(qlora_emu_shfl(qlora_emu_bits(v), base + ((unsigned int)src & (width - 1))));
}
template <typename T> inline T __shfl_xor_sync(unsigned int, T v, int mask, int width = 32) {
    unsigned int lane = qlora_emu_cur->lane;
    unsigned int src = lane ^ (unsigned int)mask;
    if ((src & ~(unsigned int)(width - 1)) > (lane & ~(unsigned int)(width - 1))) src = lane;
    return qlora_emu_from_bits<T>(qlora_emu_shfl(qlora_emu_bits(v), src & 31));
}
template <typename T> inline T __shfl_down_sync(unsigned int, T v, unsigned int delta, int width = 32) {
    unsigned int lane = qlora_emu_cur->lane;
    unsigned int src = (lane % width) + delta < (unsigned int)width ? lane + delta : lane;
    return qlora_emu_from_bits<T>(qlora_emu_shfl(qlora_emu_bits(v), src));
}
template <typename T> inline T __shfl_up_sync(unsigned int, T v, unsigned int delta, int width = 32) {
    unsigned int lane = qlora_emu_cur->lane;
    unsigned int src = (lane % width) >= delta ? lane - delta : lane;
    return qlora_emu_from_bits<T>(qlora_emu_shfl(qlora_emu_bits(v), src));
}
inline unsigned int __ballot_sync(unsigned int mask, int pred) { return qlora_emu_ballot(pred) & mask; }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }

// CUDA's device min/max overloads.
#define QLORA_EMU_MINMAX(T)                               \
    inline T min(T a, T b) { return b < a ? b : a; }      \
    inline T max(T a, T b) { return a < b ? b : a; }
QLORA_EMU_MINMAX(int)
QLORA_EMU_MINMAX(unsigned int)
QLORA_EMU_MINMAX(long long)
QLORA_EMU_MINMAX(unsigned long long)
#undef QLORA_EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }

// IEEE single operations with the rounding spelled out (no contraction: -ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return sqrtf(a); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline float __int2float_rn(int a) { return (float)a; }
inline float __uint_as_float(unsigned int u) { return qlora_emu_from_bits<float>(u); }
inline float __int_as_float(int i) { return qlora_emu_from_bits<float>((unsigned int)i); }
inline unsigned int __float_as_uint(float f) { return (unsigned int)qlora_emu_bits(f); }
inline int __float_as_int(float f) { return (int)(unsigned int)qlora_emu_bits(f); }

// bf16 and f16: the 16 bits, converted as cuda_bf16.h / cuda_fp16.h do (exact widening;
// round-to-nearest-even narrowing; a NaN becomes the canonical 0x7fff).
struct __nv_bfloat16 {
    unsigned short __x;
};
struct __half {
    unsigned short __x;
};
inline float __bfloat162float(__nv_bfloat16 h) { return __uint_as_float((unsigned int)h.__x << 16); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{0x7fff};
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{(unsigned short)(u >> 16)};
}
inline float __half2float(__half h) {
    unsigned int s = (unsigned int)(h.__x & 0x8000u) << 16, e = (h.__x >> 10) & 31u, m = h.__x & 0x3ffu;
    if (e == 0) {
        float v = (float)m * 0x1p-24f;  // zero or subnormal: exact
        return s ? -v : v;
    }
    if (e == 31) return __uint_as_float(s | 0x7f800000u | (m << 13));
    return __uint_as_float(s | ((e + 112u) << 23) | (m << 13));
}
inline __half __float2half_rn(float f) {
    unsigned int u = __float_as_uint(f), s = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return __half{0x7fff};
    if (a >= 0x477ff000u) return __half{(unsigned short)(s | 0x7c00u)};  // >= 65520 rounds to inf
    if (a >= 0x38800000u) {                                               // normal: >= 2^-14
        a += 0xc8000fffu + ((a >> 13) & 1u);                              // rebias by -112, round
        return __half{(unsigned short)(s | (a >> 13))};
    }
    // Subnormal or zero: units of 2^-24, rounded to nearest even (1024 is the smallest normal).
    float m = nearbyintf(__uint_as_float(a) * 0x1p24f);
    return __half{(unsigned short)(s | (unsigned int)m)};
}
