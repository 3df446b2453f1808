// index: embedding gather out[n, :] = table[ids[n], :] and its backward, the scatter-add
// dtable[v, :] = sum over n with ids[n] == v of dy[n, :] (in increasing n, f32 accumulation).
// The backward gives each vocab row to one block, which scans the ids in order: no atomics, so it
// is deterministic and sums in the same order as the serial CPU reference.
// Reference: crates/tensor/src/ops/index/cpu.rs `index_select_ref` / `embedding_bwd_ref`.
// An out-of-range id writes a zero row and sets *err to 1 (the host turns that into
// Error::IndexOutOfRange; ids should be checked before launch anyway).
// Deliberately not here: index_select over a dim other than 0 (a gather of rows covers the model).
#include "common.cuh"

struct EmbeddingParams {
    void* out;          // (n, c)
    const void* table;  // (vocab, c)
    const int* ids;     // (n,)
    int* err;           // (1,) set to 1 on an out-of-range id
    long long n;
    long long c;
    long long vocab;
};
static_assert(sizeof(EmbeddingParams) == 56, "EmbeddingParams layout");

template <typename T> __device__ void embedding_fwd_impl(const EmbeddingParams& p) {
    for (long long r = blockIdx.x; r < p.n; r += gridDim.x) {
        int id = p.ids[r];
        bool ok = id >= 0 && id < p.vocab;
        if (!ok && threadIdx.x == 0) *p.err = 1;
        for (long long c = threadIdx.x; c < p.c; c += blockDim.x)
            static_cast<T*>(p.out)[r * p.c + c] = ok ? static_cast<const T*>(p.table)[id * p.c + c] : from_f32<T>(0.0f);
    }
}

struct EmbeddingBwdParams {
    void* dtable;    // (vocab, c), written
    const void* dy;  // (n, c)
    const int* ids;  // (n,)
    long long n;
    long long c;
    long long vocab;
};
static_assert(sizeof(EmbeddingBwdParams) == 48, "EmbeddingBwdParams layout");

#define EMB_IDS_CHUNK 2048
template <typename T> __device__ void embedding_bwd_impl(const EmbeddingBwdParams& p) {
    __shared__ int sid[EMB_IDS_CHUNK];
    __shared__ int hits[EMB_IDS_CHUNK];
    __shared__ int nhits;
    for (long long v = blockIdx.x; v < p.vocab; v += gridDim.x) {
        // Up to 4 columns per thread held in registers across all id chunks.
        for (long long c0 = 0; c0 < p.c; c0 += 4 * blockDim.x) {
            float acc[4] = {0.f, 0.f, 0.f, 0.f};
            for (long long n0 = 0; n0 < p.n; n0 += EMB_IDS_CHUNK) {
                int len = (int)min((long long)EMB_IDS_CHUNK, p.n - n0);
                __syncthreads();
                for (int i = threadIdx.x; i < len; i += blockDim.x) sid[i] = p.ids[n0 + i];
                __syncthreads();
                if (threadIdx.x < 32) {  // warp 0: ordered list of matching rows (keeps the sum order)
                    int lane = threadIdx.x, h = 0;
                    for (int base = 0; base < len; base += 32) {
                        int i = base + lane;
                        bool m = i < len && sid[i] == v;
                        unsigned b = __ballot_sync(0xffffffffu, m);
                        if (m) hits[h + __popc(b & ((1u << lane) - 1u))] = i;
                        h += __popc(b);
                    }
                    if (lane == 0) nhits = h;
                }
                __syncthreads();
                for (int h = 0; h < nhits; ++h) {
                    long long row = n0 + hits[h];
#pragma unroll
                    for (int k = 0; k < 4; ++k) {
                        long long c = c0 + k * blockDim.x + threadIdx.x;
                        if (c < p.c) acc[k] += ld<T>(p.dy, row * p.c + c);
                    }
                }
            }
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                long long c = c0 + k * blockDim.x + threadIdx.x;
                if (c < p.c) st<T>(p.dtable, v * p.c + c, acc[k]);
            }
        }
    }
}

KERNEL void index_fwd_f32(const EmbeddingParams p) { embedding_fwd_impl<float>(p); }
KERNEL void index_fwd_bf16(const EmbeddingParams p) { embedding_fwd_impl<bf16>(p); }
KERNEL void index_bwd_f32(const EmbeddingBwdParams p) { embedding_bwd_impl<float>(p); }
KERNEL void index_bwd_bf16(const EmbeddingBwdParams p) { embedding_bwd_impl<bf16>(p); }
