// cast: f32 <-> bf16 / f16 on a contiguous buffer with round-to-nearest-even (the `half` crate's
// and torch's `.to`), bit for bit; i32 / u8 <-> f32 with Rust's `as`; and the strided copy behind
// `contiguous` and `cat` (the copy op has no file of its own: it is a cast to the same type).
// Reference: crates/tensor/src/ops/cast/cpu.rs `cast_ref`, ops/copy `strided_copy_ref`.
// Deliberately not here: strided casts (callers make the input contiguous first).
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

// Integer casts with Rust's `as` semantics, which the CPU path uses: i32/u8 -> f32 rounds to
// nearest-even; f32 -> i32/u8 truncates toward zero, saturates at the type's range, NaN -> 0.
// Any other pair (bf16 -> i32, u8 -> bf16, ...) is two launches through f32, as the CPU goes.
template <typename D> __device__ __forceinline__ D int_from_f32(float x);
template <> __device__ __forceinline__ int int_from_f32<int>(float x) {
    if (x != x) return 0;
    if (x >= 2147483647.0f) return 2147483647;
    if (x <= -2147483648.0f) return (-2147483647 - 1);
    return (int)truncf(x);
}
template <> __device__ __forceinline__ uint8_t int_from_f32<uint8_t>(float x) {
    if (x != x || x <= 0.0f) return 0;
    if (x >= 255.0f) return 255;
    return (uint8_t)truncf(x);
}

template <typename S> __device__ void cast_int_to_f32_impl(const CastParams& p) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride)
        static_cast<float*>(p.out)[i] = __int2float_rn((int)static_cast<const S*>(p.x)[i]);
}
template <typename D> __device__ void cast_f32_to_int_impl(const CastParams& p) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride)
        static_cast<D*>(p.out)[i] = int_from_f32<D>(static_cast<const float*>(p.x)[i]);
}

KERNEL void cast_fwd_i32_f32(const CastParams p) { cast_int_to_f32_impl<int>(p); }
KERNEL void cast_fwd_u8_f32(const CastParams p) { cast_int_to_f32_impl<uint8_t>(p); }
KERNEL void cast_fwd_f32_i32(const CastParams p) { cast_f32_to_int_impl<int>(p); }
KERNEL void cast_fwd_f32_u8(const CastParams p) { cast_f32_to_int_impl<uint8_t>(p); }

// copy: any dtype by element width (1, 2 or 4 bytes), bit for bit, from a strided source to a
// strided destination of the same shape: `Tensor::contiguous` of a view (transposed, narrowed,
// broadcast) and `Tensor::cat` (each input into its window of the output). Rust coalesces
// mergeable dims first, so COPY_MAX_DIMS bounds the dims that remain.
// Reference: crates/tensor/src/ops/copy/mod.rs `strided_copy_ref`.
#define COPY_MAX_DIMS 6

struct CopyParams {
    void* out;
    const void* x;
    long long n;                              // elements of the shape
    long long dims[COPY_MAX_DIMS];            // first `rank` entries used
    long long x_strides[COPY_MAX_DIMS];       // element strides of x (0 = broadcast)
    long long out_strides[COPY_MAX_DIMS];     // element strides of out
    long long x_offset;
    long long out_offset;
    int rank;
    int _pad;
};
static_assert(sizeof(CopyParams) == 192, "CopyParams layout");

template <typename T> __device__ void copy_impl(const CopyParams& p) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride) {
        long long ix = p.x_offset, io = p.out_offset, rem = i;
        for (int d = p.rank - 1; d >= 0; --d) {
            long long c = rem % p.dims[d];
            rem /= p.dims[d];
            ix += c * p.x_strides[d];
            io += c * p.out_strides[d];
        }
        static_cast<T*>(p.out)[io] = static_cast<const T*>(p.x)[ix];
    }
}

KERNEL void copy_fwd_u8(const CopyParams p) { copy_impl<uint8_t>(p); }
KERNEL void copy_fwd_u16(const CopyParams p) { copy_impl<uint16_t>(p); }
KERNEL void copy_fwd_u32(const CopyParams p) { copy_impl<uint32_t>(p); }
