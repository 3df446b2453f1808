//! CPU dropout masks: the counter-based hash both devices compute ([`bits`]), the integer keep
//! threshold ([`threshold`]), the fast path (rayon chunks, integer compare, written straight into
//! the output dtype) and the plain scalar reference [`mask_ref`], which states the rule in floats.
//! `kernels/dropout.cu` computes the same integers; the tests hold all three to the same bits.

use rayon::prelude::*;

/// The SplitMix64 increment (the golden ratio · 2^64).
pub const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Elements per rayon task.
const CHUNK: usize = 32 * 1024;

/// SplitMix64's output function (Stafford's mix 13).
#[inline(always)]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The 64 random bits of element `i`: `mix64(seed + (i + 1)·GAMMA)` (wrapping), i.e. the
/// `i`-th output (from 0) of SplitMix64 seeded with `seed`, which is what the `i`-th
/// `Rng::new(seed).next_u64()` returns. A pure function of `(seed, i)`.
#[inline(always)]
pub fn bits(seed: u64, i: u64) -> u64 {
    mix64(seed.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA)))
}

/// `ceil(keep · 2^24)`: element `i` is kept iff `bits(seed, i) >> 40 < threshold`, which is
/// `u < keep` for `u = (bits >> 40) · 2^-24` exactly (both sides are exact in f32). In
/// `1..=2^24` for `keep` in `(0, 1]`; the caller checks `keep`.
pub fn threshold(keep: f32) -> u32 {
    (keep as f64 * (1u64 << 24) as f64).ceil() as u32
}

/// Writes the mask of elements `first..first + out.len()` into `out`: `one` where kept, `zero`
/// where dropped. Chunks run in parallel; each is the same pure function of the index.
pub fn mask_into<T: Copy + Send + Sync>(out: &mut [T], first: u64, seed: u64, threshold: u32, one: T, zero: T) {
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let start = first.wrapping_add((c * CHUNK) as u64);
        // The counter `seed + (i + 1)·GAMMA`, stepped by GAMMA instead of multiplied per element.
        let mut ctr = seed.wrapping_add(start.wrapping_add(1).wrapping_mul(GAMMA));
        for o in chunk.iter_mut() {
            *o = if ((mix64(ctr) >> 40) as u32) < threshold { one } else { zero };
            ctr = ctr.wrapping_add(GAMMA);
        }
    });
}

/// Reference: `n` mask values in f32, element `i` kept iff `u_i < keep` with
/// `u_i = (bits(seed, i) >> 40) · 2^-24` (24 random bits, uniform in `[0, 1)`), valued `1/keep`.
/// Rounding the result to bf16/f16 gives those dtypes' masks.
pub fn mask_ref(n: usize, keep: f32, seed: u64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let u = (bits(seed, i as u64) >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
        out.push(if u < keep { 1.0 / keep } else { 0.0 });
    }
    out
}
