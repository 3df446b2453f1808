// The emulator's own kernels (compiled only for it, never to PTX): CUDA semantics that
// crates/tensor/tests/cuda_emulator.rs checks against values written out in Rust, and kernels
// that misbehave on purpose (a race, a deadlock) to show the emulator reports them.
#include "../common.cuh"

struct SelftestParams {
    void* out;  // int per thread (shuffles: 6 per thread), or floats (race)
    int mode;
    int _pad;
};
static_assert(sizeof(SelftestParams) == 16, "SelftestParams layout");

// Per thread, 6 ints: shfl_xor(lane, mode), shfl_down(lane, 3), shfl_up(lane, 5),
// shfl(lane, mode) within width 8, shfl_xor(lane, 4) within width 8, and a ballot of
// `lane % 3 == 0` taken after the lanes >= 24 of each warp have exited... (those write first).
KERNEL void selftest_shuffles(const SelftestParams p) {
    int* out = static_cast<int*>(p.out) + 6 * threadIdx.x;
    int lane = threadIdx.x & 31;
    out[0] = __shfl_xor_sync(0xffffffffu, lane, p.mode);
    out[1] = __shfl_down_sync(0xffffffffu, lane, 3);
    out[2] = __shfl_up_sync(0xffffffffu, lane, 5);
    out[3] = __shfl_sync(0xffffffffu, lane, p.mode, 8);
    out[4] = __shfl_xor_sync(0xffffffffu, lane, 4, 8);
    if (lane >= 24) {
        out[5] = -1;
        return;
    }
    out[5] = (int)__ballot_sync(0x00ffffffu, lane % 3 == 0);
}

// out[t] = s[(t + 32) % n]: another warp's write, read with (mode 1) or without (mode 0) the barrier.
KERNEL void selftest_race(const SelftestParams p) {
    __shared__ float s[1024];
    unsigned n = blockDim.x, t = threadIdx.x;
    s[t] = (float)(t + 1);
    if (p.mode) __syncthreads();
    static_cast<float*>(p.out)[t] = s[(t + 32) % n];
    __syncthreads();
    s[t] = 0.0f;  // what a later block (or launch) would find without the barrier
}

// Thread 0 waits at the block barrier while its warp waits for it at a shuffle: never completes.
KERNEL void selftest_deadlock(const SelftestParams p) {
    if (threadIdx.x == 0) {
        __syncthreads();
    } else {
        static_cast<int*>(p.out)[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
    }
}
