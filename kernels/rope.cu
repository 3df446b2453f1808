// rope: HF half-split rotary embedding (rotate_half, NOT interleaved pairs) on (B, H, T, D):
// y1 = x1 cos - x2 sin, y2 = x2 cos + x1 sin with x1 = x[..D/2], x2 = x[D/2..]. The backward is
// the same rotation with sin negated. cos/sin are (T, D/2) f32 tables (ops::rope::tables).
// Reference: crates/tensor/src/ops/rope/cpu.rs `rope_fwd_ref` / `rope_bwd_ref`.
// Deliberately not here: computing the tables (host, once per length), position offsets per batch.
#include "common.cuh"

struct RopeParams {
    void* y;
    const void* x;
    const float* cos;
    const float* sin;
    long long bh;  // B * H
    int t;
    int d;
};
static_assert(sizeof(RopeParams) == 48, "RopeParams layout");

template <typename T> __device__ void rope_impl(const RopeParams& p, float sign) {
    const int half = p.d / 2;
    const long long total = p.bh * p.t * half;
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += stride) {
        int i = (int)(e % half);
        long long row = e / half;  // (b, h, t) flattened
        int pos = (int)(row % p.t);
        float c = p.cos[pos * half + i], s = sign * p.sin[pos * half + i];
        long long o = row * p.d;
        float x1 = ld<T>(p.x, o + i), x2 = ld<T>(p.x, o + half + i);
        st<T>(p.y, o + i, __fsub_rn(__fmul_rn(x1, c), __fmul_rn(x2, s)));
        st<T>(p.y, o + half + i, __fadd_rn(__fmul_rn(x2, c), __fmul_rn(x1, s)));
    }
}

KERNEL void rope_fwd_f32(const RopeParams p) { rope_impl<float>(p, 1.0f); }
KERNEL void rope_fwd_bf16(const RopeParams p) { rope_impl<bf16>(p, 1.0f); }
KERNEL void rope_bwd_f32(const RopeParams p) { rope_impl<float>(p, -1.0f); }
KERNEL void rope_bwd_bf16(const RopeParams p) { rope_impl<bf16>(p, -1.0f); }
