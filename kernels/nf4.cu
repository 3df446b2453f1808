// nf4: bitsandbytes NF4 blockwise quantization with double quantization, bit for bit with the
// spec in shared/reference/README.md section 3 (and crates/nf4: quantize.rs, double_quant.rs).
// - nf4_quantize_{f32,bf16}: absmax per flat block (blocks run over the row-major flattened
//   tensor); scaled = clamp(x * (1/max(absmax, 1e-38)), -1, 1) (a trailing partial block divides
//   instead: x / absmax); code = number of NF4 midpoints strictly below scaled (exact nearest,
//   ties to the LOWER index); element 2j -> high nibble of byte j; an odd count pads code 7.
// - nf4_dq_offset_f32: the offset = mean(absmax), f64 accumulation rounded once to f32 (the
//   engine's choice, README 3.5; bnb's torch fp32 mean may differ by an ulp: pass that instead).
// - nf4_dq_quantize_f32: absmax - offset quantized with the signed 8-bit dynamic map in groups of
//   256 (same rounding rule; codes = midpoints strictly below, midpoints (c[k]+c[k+1])/2 in f32).
// - nf4_dq_restore_f32: absmax' = fp32(fp32(dyn[q] * nested[b / 256]) + offset), two roundings.
// - nf4_dequantize_{f32,bf16}: out = fp32(nf4[q] * absmax[i / blocksize]), then RNE to the dtype;
//   absmax is either the plain f32 absmax or the one restored on the fly from the nested state.
// - fp4_quantize_{f32,bf16} / fp4_dequantize_{f32,bf16}: bitsandbytes' FP4 with the same params,
//   blocks, scaling and packing as NF4 (crates/nf4 codebook.rs, quantize.rs): code = FP4's code
//   at sorted position #(sorted FP4 midpoints strictly below scaled) (ties to the LOWER sorted
//   index; the pad / a scaled 0.0 gets code 0); dequant multiplies by the sign x magnitude table
//   (code 8 is -0.0). Both tables are the nf4 crate's fp32 bit patterns, copied verbatim.
// Every rounding is explicit (__fmul_rn, __fadd_rn, __fdiv_rn): no FMA anywhere.
// Deliberately not here: bnb's CPU 65536-grid LUT quirk.
#include "common.cuh"

__constant__ float NF4_CODE[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

__device__ __forceinline__ float nf4_mid(int k) {
    return __fdiv_rn(__fadd_rn(NF4_CODE[k], NF4_CODE[k + 1]), 2.0f);
}
__device__ __forceinline__ int nf4_code(float v) {
    int q = 0;
#pragma unroll
    for (int k = 0; k < 15; ++k) q += v > nf4_mid(k) ? 1 : 0;
    return q;
}
// FP4 (crates/nf4/src/codebook.rs FP4_DEQUANT_BITS, FP4_SORTED_MIDPOINT_BITS, FP4_SORTED_TO_CODE).
__constant__ unsigned int FP4_DEQUANT_BITS[16] = {
    0x00000000u, 0x3baaaaabu, 0x3f2aaaabu, 0x3f800000u, 0x3eaaaaabu, 0x3f000000u, 0x3e2aaaabu, 0x3e800000u,
    0x80000000u, 0xbbaaaaabu, 0xbf2aaaabu, 0xbf800000u, 0xbeaaaaabu, 0xbf000000u, 0xbe2aaaabu, 0xbe800000u};
__constant__ unsigned int FP4_MID_BITS[15] = {
    0xbf555556u, 0xbf155556u, 0xbed55556u, 0xbe955556u, 0xbe555556u, 0xbdb00000u, 0xbb2aaaabu, 0x00000000u,
    0x3b2aaaabu, 0x3db00000u, 0x3e555556u, 0x3e955556u, 0x3ed55556u, 0x3f155556u, 0x3f555556u};
__constant__ unsigned char FP4_SORTED_TO_CODE[16] = {11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3};

__device__ __forceinline__ int fp4_code(float v) {
    int pos = 0;
#pragma unroll
    for (int k = 0; k < 15; ++k) pos += v > __uint_as_float(FP4_MID_BITS[k]) ? 1 : 0;
    return FP4_SORTED_TO_CODE[pos];
}

// The 4-bit format a templated kernel body serves.
enum Quant4 { QNF4 = 0, QFP4 = 1 };
template <int Q> __device__ __forceinline__ int code4(float v) { return Q == QFP4 ? fp4_code(v) : nf4_code(v); }
template <int Q> __device__ __forceinline__ float dequant4(int q) {
    return Q == QFP4 ? __uint_as_float(FP4_DEQUANT_BITS[q]) : NF4_CODE[q];
}

__device__ __forceinline__ float clamp1(float v) { return fminf(fmaxf(v, -1.0f), 1.0f); }

struct Nf4QuantParams {
    unsigned char* packed;  // ((n+1)/2,)
    float* absmax;          // (ceil(n/blocksize),)
    const void* x;          // (n,)
    long long n;
    int blocksize;          // even, 32..4096
    int _pad;
};
static_assert(sizeof(Nf4QuantParams) == 40, "Nf4QuantParams layout");

// One CUDA block (any multiple of 32 threads) per quant block, grid-stride over quant blocks.
template <typename T, int Q> __device__ void quantize4_impl(const Nf4QuantParams& p) {
    __shared__ float scratch[32];
    long long nblocks = (p.n + p.blocksize - 1) / p.blocksize;
    for (long long b = blockIdx.x; b < nblocks; b += gridDim.x) {
        long long start = b * p.blocksize;
        int len = (int)min((long long)p.blocksize, p.n - start);
        float m = 0.0f;
        for (int j = threadIdx.x; j < len; j += blockDim.x) m = fmaxf(m, fabsf(ld<T>(p.x, start + j)));
        m = block_max(m, scratch);
        if (threadIdx.x == 0) p.absmax[b] = m;
        bool partial = len < p.blocksize;
        float den = fmaxf(m, 1e-38f);
        float inv = __fdiv_rn(1.0f, den);
        int pairs = (len + 1) / 2;
        for (int j = threadIdx.x; j < pairs; j += blockDim.x) {
            int q[2];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                int e = 2 * j + h;
                float s = 0.0f;  // the pad element of an odd count scales to 0 -> NF4 code 7, FP4 code 0
                if (e < len) {
                    float x = ld<T>(p.x, start + e);
                    s = clamp1(partial ? __fdiv_rn(x, den) : __fmul_rn(x, inv));
                }
                q[h] = code4<Q>(s);
            }
            p.packed[start / 2 + j] = (unsigned char)((q[0] << 4) | q[1]);
        }
        __syncthreads();
    }
}
KERNEL void nf4_quantize_f32(const Nf4QuantParams p) { quantize4_impl<float, QNF4>(p); }
KERNEL void nf4_quantize_bf16(const Nf4QuantParams p) { quantize4_impl<bf16, QNF4>(p); }
KERNEL void fp4_quantize_f32(const Nf4QuantParams p) { quantize4_impl<float, QFP4>(p); }
KERNEL void fp4_quantize_bf16(const Nf4QuantParams p) { quantize4_impl<bf16, QFP4>(p); }

struct Nf4DqOffsetParams {
    float* offset;          // (1,)
    const float* absmax;    // (nblocks,)
    long long nblocks;
};
static_assert(sizeof(Nf4DqOffsetParams) == 24, "Nf4DqOffsetParams layout");

// One block. The f64 sum's order differs from the CPU's sequential sum; rounding the mean to
// f32 hides that except in (rare) near-tie cases: bit-exact tests pass the CPU's offset instead.
KERNEL void nf4_dq_offset_f32(const Nf4DqOffsetParams p) {
    __shared__ double scratch[32];
    double s = 0.0;
    for (long long i = threadIdx.x; i < p.nblocks; i += blockDim.x) s += (double)p.absmax[i];
    s = block_sum_d(s, scratch);
    if (threadIdx.x == 0) *p.offset = p.nblocks > 0 ? (float)(s / (double)p.nblocks) : 0.0f;
}

struct Nf4DqQuantParams {
    unsigned char* codes;   // (nblocks,)
    float* nested_absmax;   // (ceil(nblocks/256),)
    const float* absmax;    // (nblocks,)
    const float* dyn_code;  // (256,) the signed dynamic map, sorted
    long long nblocks;
    float offset;
    int _pad;
};
static_assert(sizeof(Nf4DqQuantParams) == 48, "Nf4DqQuantParams layout");

// blockDim.x == 256: one block per group of 256 absmax values.
KERNEL void nf4_dq_quantize_f32(const Nf4DqQuantParams p) {
    __shared__ float mids[255];
    __shared__ float scratch[32];
    if (threadIdx.x < 255)
        mids[threadIdx.x] = __fdiv_rn(__fadd_rn(p.dyn_code[threadIdx.x], p.dyn_code[threadIdx.x + 1]), 2.0f);
    long long groups = (p.nblocks + 255) / 256;
    for (long long g = blockIdx.x; g < groups; g += gridDim.x) {
        long long i = g * 256 + threadIdx.x;
        int len = (int)min(256LL, p.nblocks - g * 256);
        float c = i < p.nblocks ? __fsub_rn(p.absmax[i], p.offset) : 0.0f;
        float m = block_max(threadIdx.x < len ? fabsf(c) : 0.0f, scratch);  // also syncs mids
        if (threadIdx.x == 0) p.nested_absmax[g] = m;
        if (threadIdx.x < len) {
            float den = fmaxf(m, 1e-38f);
            float s = clamp1(len < 256 ? __fdiv_rn(c, den) : __fmul_rn(c, __fdiv_rn(1.0f, den)));
            int lo = 0, hi = 255;  // first k with mids[k] >= s (searchsorted left) = #mids < s
            while (lo < hi) {
                int mid = (lo + hi) >> 1;
                if (mids[mid] < s) lo = mid + 1; else hi = mid;
            }
            p.codes[i] = (unsigned char)lo;
        }
        __syncthreads();
    }
}

struct Nf4DqRestoreParams {
    float* absmax;               // (nblocks,) restored
    const unsigned char* codes;  // (nblocks,)
    const float* nested_absmax;  // (ceil(nblocks/256),)
    const float* dyn_code;       // (256,)
    long long nblocks;
    float offset;
    int _pad;
};
static_assert(sizeof(Nf4DqRestoreParams) == 48, "Nf4DqRestoreParams layout");

__device__ __forceinline__ float restore_one(const float* dyn, const unsigned char* codes, const float* nested,
                                             long long b, float offset) {
    return __fadd_rn(__fmul_rn(dyn[codes[b]], nested[b / 256]), offset);
}

KERNEL void nf4_dq_restore_f32(const Nf4DqRestoreParams p) {
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long b = (long long)blockIdx.x * blockDim.x + threadIdx.x; b < p.nblocks; b += stride)
        p.absmax[b] = restore_one(p.dyn_code, p.codes, p.nested_absmax, b, p.offset);
}

struct Nf4DequantParams {
    void* out;                    // (n,) f32 or bf16
    const unsigned char* packed;  // ((n+1)/2,)
    const float* absmax;          // (nblocks,) plain absmax; null when nested
    const unsigned char* qabsmax; // (nblocks,) nested codes (when absmax is null)
    const float* nested_absmax;   // (ceil(nblocks/256),)
    const float* dyn_code;        // (256,)
    long long n;
    int blocksize;
    float offset;
};
static_assert(sizeof(Nf4DequantParams) == 64, "Nf4DequantParams layout");

// One thread per packed byte (two outputs).
template <typename T, int Q> __device__ void dequantize4_impl(const Nf4DequantParams& p) {
    long long nbytes = (p.n + 1) / 2;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < nbytes; j += stride) {
        unsigned char byte = p.packed[j];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            long long e = 2 * j + h;
            if (e >= p.n) break;
            long long b = e / p.blocksize;
            float a = p.absmax ? p.absmax[b] : restore_one(p.dyn_code, p.qabsmax, p.nested_absmax, b, p.offset);
            int q = h == 0 ? (byte >> 4) : (byte & 15);
            st<T>(p.out, e, __fmul_rn(dequant4<Q>(q), a));
        }
    }
}
KERNEL void nf4_dequantize_f32(const Nf4DequantParams p) { dequantize4_impl<float, QNF4>(p); }
KERNEL void nf4_dequantize_bf16(const Nf4DequantParams p) { dequantize4_impl<bf16, QNF4>(p); }
KERNEL void fp4_dequantize_f32(const Nf4DequantParams p) { dequantize4_impl<float, QFP4>(p); }
KERNEL void fp4_dequantize_bf16(const Nf4DequantParams p) { dequantize4_impl<bf16, QFP4>(p); }
