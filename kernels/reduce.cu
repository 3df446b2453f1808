// reduce: sum / mean / max / argmax over the LAST dim of a contiguous (rows, cols) buffer, and a
// global sum of squares (the gradient norm) in two deterministic passes.
// Reference: crates/tensor/src/ops/reduce/cpu.rs `reduce_ref` (sums in f64: here each thread and
// the block tree accumulate in f64 too, so sums agree to the last f32 bit in practice, though the
// order differs); trainer `optim::global_grad_norm` (f64 sum of squares, sqrt, to f32).
// argmax: first maximum wins, NaN counts as the maximum (PyTorch). max propagates NaN.
// Deliberately not here: reductions over an inner dim (transpose first or use sum_to), min.
#include "common.cuh"

// op: 0 sum, 1 mean, 2 max, 3 argmax (out is i32).
struct ReduceParams {
    void* out;        // (rows,)
    const void* x;    // (rows, cols)
    long long rows;
    int cols;
    int op;
};
static_assert(sizeof(ReduceParams) == 32, "ReduceParams layout");

// a beats b: NaN beats numbers, larger beats smaller, on a tie the lower index.
__device__ __forceinline__ bool arg_better(float a, int ia, float b, int ib) {
    bool an = a != a, bn = b != b;
    if (an != bn) return an;
    if (!an && a != b) return a > b;
    return ia < ib;
}

template <typename T> __device__ void reduce_impl(const ReduceParams& p) {
    __shared__ double dscratch[32];
    __shared__ float fscratch[32];
    __shared__ int iscratch[32];
    for (long long r = blockIdx.x; r < p.rows; r += gridDim.x) {
        const long long base = r * p.cols;
        if (p.op <= 1) {
            double s = 0.0;
            for (int c = threadIdx.x; c < p.cols; c += blockDim.x) s += (double)ld<T>(p.x, base + c);
            s = block_sum_d(s, dscratch);
            if (p.op == 1) s /= (double)p.cols;
            if (threadIdx.x == 0) st<T>(p.out, r, (float)s);
        } else if (p.op == 2) {
            float m = -INFINITY;
            for (int c = threadIdx.x; c < p.cols; c += blockDim.x) m = nan_max(m, ld<T>(p.x, base + c));
            m = block_max(m, fscratch);
            if (threadIdx.x == 0) st<T>(p.out, r, m);
        } else {
            float bv = -INFINITY;
            int bi = 0x7fffffff;
            for (int c = threadIdx.x; c < p.cols; c += blockDim.x) {
                float v = ld<T>(p.x, base + c);
                if (arg_better(v, c, bv, bi)) { bv = v; bi = c; }
            }
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) {
                float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                if (arg_better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
            }
            int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
            __syncthreads();
            if (lane == 0) { fscratch[wid] = bv; iscratch[wid] = bi; }
            __syncthreads();
            if (wid == 0) {
                bv = lane < nw ? fscratch[lane] : -INFINITY;
                bi = lane < nw ? iscratch[lane] : 0x7fffffff;
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) {
                    float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                    if (arg_better(ov, oi, bv, bi)) { bv = ov; bi = oi; }
                }
                if (lane == 0) static_cast<int*>(p.out)[r] = bi == 0x7fffffff ? 0 : bi;
            }
        }
        __syncthreads();
    }
}

KERNEL void reduce_fwd_f32(const ReduceParams p) { reduce_impl<float>(p); }
KERNEL void reduce_fwd_bf16(const ReduceParams p) { reduce_impl<bf16>(p); }

// Pass 1 of the sum of squares: block b writes partials[b] (f64). Launch with a FIXED grid (the
// Rust side uses 1024 blocks of 256 threads) so the summation order, and the result, never change.
struct SumSqParams {
    double* partials;  // (gridDim.x,)
    const float* x;
    long long n;
};
static_assert(sizeof(SumSqParams) == 24, "SumSqParams layout");

KERNEL void reduce_sumsq_fwd_f32(const SumSqParams p) {
    __shared__ double scratch[32];
    double s = 0.0;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += stride) {
        double v = (double)p.x[i];
        s += v * v;
    }
    s = block_sum_d(s, scratch);
    if (threadIdx.x == 0) p.partials[blockIdx.x] = s;
}

// Pass 2: one block sums the partials in a fixed order; writes the sum (f64) and the norm (f32).
struct SumSqFinishParams {
    double* sumsq;        // (1,)
    float* norm;          // (1,) sqrt(sumsq) rounded to f32
    const double* partials;
    int count;
    int _pad;
};
static_assert(sizeof(SumSqFinishParams) == 32, "SumSqFinishParams layout");

KERNEL void reduce_sumsq_finish_f32(const SumSqFinishParams p) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < p.count; i += blockDim.x) s += p.partials[i];
    s = block_sum_d(s, scratch);
    if (threadIdx.x == 0) {
        *p.sumsq = s;
        *p.norm = (float)sqrt(s);
    }
}
