// binary: elementwise add, sub, mul, div, maximum with NumPy broadcasting expressed as strides
// (a broadcast dim has stride 0), computed in f32, written contiguously in the input dtype.
// Reference: crates/tensor/src/ops/binary/cpu.rs `binary_ref`. `maximum` propagates NaN like
// PyTorch. Deliberately not here: sum_to (a reduction: reduce.cu), dtype promotion, in-place.
#include "common.cuh"

#define BINARY_MAX_DIMS 6

// op: 0 add, 1 sub, 2 mul, 3 div, 4 maximum.
struct BinaryParams {
    void* out;             // (n,) contiguous, the broadcast shape
    const void* a;
    const void* b;
    long long n;
    long long dims[BINARY_MAX_DIMS];       // the output shape, first `rank` entries used
    long long a_strides[BINARY_MAX_DIMS];  // element strides of a in the output shape (0 = broadcast)
    long long b_strides[BINARY_MAX_DIMS];
    long long a_offset;
    long long b_offset;
    int rank;
    int op;
    int contiguous;  // 1: a and b are both contiguous with the output's shape (no index math)
    int _pad;
};
static_assert(sizeof(BinaryParams) == 208, "BinaryParams layout");

__device__ __forceinline__ float binary_apply(int op, float x, float y) {
    switch (op) {
        case 0: return x + y;
        case 1: return x - y;
        case 2: return x * y;
        case 3: return x / y;
        default: return (x != x || y != y) ? __int_as_float(0x7fc00000) : fmaxf(x, y);
    }
}

template <typename T> __device__ void binary_impl(const BinaryParams& p) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride) {
        long long ia, ib;
        if (p.contiguous) {
            ia = p.a_offset + i;
            ib = p.b_offset + i;
        } else {
            ia = p.a_offset;
            ib = p.b_offset;
            long long rem = i;
            for (int d = p.rank - 1; d >= 0; --d) {
                long long c = rem % p.dims[d];
                rem /= p.dims[d];
                ia += c * p.a_strides[d];
                ib += c * p.b_strides[d];
            }
        }
        st<T>(p.out, i, binary_apply(p.op, ld<T>(p.a, ia), ld<T>(p.b, ib)));
    }
}

KERNEL void binary_fwd_f32(const BinaryParams p) { binary_impl<float>(p); }
KERNEL void binary_fwd_bf16(const BinaryParams p) { binary_impl<bf16>(p); }
KERNEL void binary_fwd_f16(const BinaryParams p) { binary_impl<__half>(p); }
