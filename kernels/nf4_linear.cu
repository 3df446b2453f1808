// nf4_linear: y (M, N) = x (M, K) . W^T for a frozen NF4 weight W (N, K) without materialising W:
// each block dequantizes a (64 x 32) tile of W into shared memory as bf16 (nf4[q] * absmax in f32,
// one rounding, then round-to-nearest-even to bf16: what dequantize-to-bf16 + matmul computes),
// and multiplies with tensor cores, `mma.sync.m16n8k16` bf16 x bf16 -> f32 via inline PTX.
// Block tile 64 x 64 x 32, 4 warps in 2 x 2, each warp 32 x 32 = 2 x 4 mma tiles.
// absmax is the per-64 f32 absmax, already restored from the double-quant state
// (nf4_dq_restore_f32 once per weight). W's blocks run over the flattened (N, K) weight.
// Reference: dequantize (crates/nf4) to bf16, then a matmul in f32 (tolerance: bf16 inputs,
// f32 accumulation in a different order).
// Deliberately not here: the input gradient dx = dy . W (dequantize + cuBLAS for now), LoRA (a
// separate cuBLAS path), double buffering / cp.async / wgmma (kernels/dev/ when measured).
#include "common.cuh"

#define L_BM 64
#define L_BN 64
#define L_BK 32
#define L_PAD 8  // bf16 elements of row padding: rows of 40 bf16 (80 B) hit distinct banks

struct Nf4LinearParams {
    void* y;                      // (M, N) f32 or bf16 (out_bf16)
    const bf16* x;                // (M, K) bf16
    const unsigned char* packed;  // ((N*K+1)/2,) element 2j in the high nibble of byte j
    const float* absmax;          // (ceil(N*K/blocksize),)
    int m, n, k;
    int blocksize;
    int out_bf16;
    int _pad;
};
static_assert(sizeof(Nf4LinearParams) == 56, "Nf4LinearParams layout");

__constant__ float NF4_LUT[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

__device__ __forceinline__ void mma_bf16_16816(float* c, const unsigned* a, const unsigned* b) {
#ifdef QLORA_EMU  // the CPU emulator (kernels/emu/): the same fragments through the PTX ISA's layout
    qlora_emu_mma_bf16_m16n8k16(c, a, b);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

// blockDim.x == 128, grid (ceil(N/64), ceil(M/64)).
KERNEL void nf4_linear_fwd_bf16(const Nf4LinearParams p) {
    __shared__ __align__(16) bf16 As[L_BM][L_BK + L_PAD];  // x tile (m, k)
    __shared__ __align__(16) bf16 Ws[L_BN][L_BK + L_PAD];  // W tile (n, k): the "col" B operand
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int wm = (warp >> 1) * 32, wn = (warp & 1) * 32;  // warp's sub-tile
    const int m0 = blockIdx.y * L_BM, n0 = blockIdx.x * L_BN;
    const int g = lane >> 2, tg = lane & 3;
    float acc[2][4][4];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

    for (int k0 = 0; k0 < p.k; k0 += L_BK) {
        // x tile: 64 x 32 bf16, 16 per thread, zero outside the matrix.
        for (int idx = tid; idx < L_BM * L_BK; idx += blockDim.x) {
            int r = idx / L_BK, c = idx % L_BK;
            int gm = m0 + r, gk = k0 + c;
            As[r][c] = (gm < p.m && gk < p.k) ? p.x[(long long)gm * p.k + gk] : __float2bfloat16_rn(0.0f);
        }
        // W tile: dequantize 64 x 32 NF4 values (flat index n * K + k).
        for (int idx = tid; idx < L_BN * L_BK; idx += blockDim.x) {
            int r = idx / L_BK, c = idx % L_BK;
            int gn = n0 + r, gk = k0 + c;
            float w = 0.0f;
            if (gn < p.n && gk < p.k) {
                long long e = (long long)gn * p.k + gk;
                unsigned char byte = p.packed[e >> 1];
                int q = (e & 1) ? (byte & 15) : (byte >> 4);
                w = __fmul_rn(NF4_LUT[q], p.absmax[e / p.blocksize]);
            }
            Ws[r][c] = __float2bfloat16_rn(w);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < L_BK; kk += 16) {
            unsigned a[2][4], b[4][2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                int r = wm + i * 16 + g;
                a[i][0] = *reinterpret_cast<const unsigned*>(&As[r][kk + tg * 2]);
                a[i][1] = *reinterpret_cast<const unsigned*>(&As[r + 8][kk + tg * 2]);
                a[i][2] = *reinterpret_cast<const unsigned*>(&As[r][kk + tg * 2 + 8]);
                a[i][3] = *reinterpret_cast<const unsigned*>(&As[r + 8][kk + tg * 2 + 8]);
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                int c = wn + j * 8 + g;
                b[j][0] = *reinterpret_cast<const unsigned*>(&Ws[c][kk + tg * 2]);
                b[j][1] = *reinterpret_cast<const unsigned*>(&Ws[c][kk + tg * 2 + 8]);
            }
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) mma_bf16_16816(acc[i][j], a[i], b[j]);
        }
        __syncthreads();
    }
    // C fragment: c0, c1 at (g, 2 tg + {0,1}); c2, c3 at (g + 8, 2 tg + {0,1}).
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                int gm = m0 + wm + i * 16 + g + (e >> 1) * 8;
                int gn = n0 + wn + j * 8 + tg * 2 + (e & 1);
                if (gm < p.m && gn < p.n) {
                    long long o = (long long)gm * p.n + gn;
                    if (p.out_bf16) static_cast<bf16*>(p.y)[o] = __float2bfloat16_rn(acc[i][j][e]);
                    else static_cast<float*>(p.y)[o] = acc[i][j][e];
                }
            }
}
