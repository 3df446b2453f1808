//! The hot loops: per-block absmax, 4-bit encode (scale, nearest code, pack two per byte) and
//! decode (unpack, scale). Written as plain loops over fixed-size lanes so LLVM vectorises them,
//! compiled twice (baseline x86-64 and AVX2, chosen at run time) by the callers in `quantize.rs`.
//!
//! Reference: bitsandbytes 0.50.2 `backends/default/ops.py` (`quantize_4bit`,
//! `_dequantize_4bit_compute`); the nearest-code rule is `torch.bucketize` over the fp32
//! midpoints, done here branch-free as a count of midpoints below the value.
//! Deliberately not here: threading, validation, NaN reporting (callers do those).

use tensor::Element;

/// Bits of the largest |x| in `x`, sign cleared. The result is `>= 0x7f80_0000` exactly when
/// some element is NaN or infinite (finite magnitudes order like their bit patterns).
#[inline(always)]
pub(crate) fn absmax_bits<T: Element>(x: &[T]) -> u32 {
    let mut lanes = [0u32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            lanes[l] = lanes[l].max(c[l].to_f32().to_bits() & 0x7fff_ffff);
        }
    }
    let mut m = lanes.iter().fold(0u32, |a, &b| a.max(b));
    for v in chunks.remainder() {
        m = m.max(v.to_f32().to_bits() & 0x7fff_ffff);
    }
    m
}

/// Number of midpoints strictly below `v`: `searchsorted(mids, v, 'left')`, ties to the lower
/// index. Branch-free (15 compares summed).
#[inline(always)]
pub(crate) fn bucket15(v: f32, mids: &[f32; 15]) -> u32 {
    let mut k = 0u32;
    for m in mids {
        k += (v > *m) as u32;
    }
    k
}

/// Encode a full block: `scaled = x * inv` (one multiply by the block's reciprocal), code =
/// nearest sorted position, remapped to the format's code when `REMAP` (FP4). `x.len()` is a
/// multiple of 32 and `out.len() == x.len() / 2`; element 2j goes to the high nibble of byte j.
///
/// No clamp to [-1, 1]: every midpoint lies strictly inside (-1, 1), so a value rounded just
/// past ±1 gets the same code as ±1 would.
#[inline(always)]
pub(crate) fn encode_full<T: Element, const REMAP: bool>(
    x: &[T],
    inv: f32,
    mids: &[f32; 15],
    remap: &[u8; 16],
    out: &mut [u8],
) {
    for (o, xs) in out.chunks_exact_mut(16).zip(x.chunks_exact(32)) {
        let mut c = [0u32; 32];
        for l in 0..32 {
            c[l] = bucket15(xs[l].to_f32() * inv, mids);
        }
        if REMAP {
            for v in c.iter_mut() {
                *v = remap[*v as usize & 15] as u32;
            }
        }
        for j in 0..16 {
            o[j] = ((c[2 * j] << 4) | c[2 * j + 1]) as u8;
        }
    }
}

/// Encode the trailing partial block the way bitsandbytes' default kernel does: `x / absmax`
/// (a division, not the reciprocal). An odd element count is padded with the code of 0.0.
/// `out.len() == x.len().div_ceil(2)`.
pub(crate) fn encode_partial<T: Element>(
    x: &[T],
    absmax: f32,
    mids: &[f32; 15],
    remap: Option<&[u8; 16]>,
    out: &mut [u8],
) {
    let denom = absmax.max(1e-38);
    let code = |v: f32| -> u8 {
        let k = bucket15(v, mids) as usize;
        match remap {
            Some(r) => r[k],
            None => k as u8,
        }
    };
    for (j, o) in out.iter_mut().enumerate() {
        let hi = code(x[2 * j].to_f32() / denom);
        let lo = match x.get(2 * j + 1) {
            Some(v) => code(v.to_f32() / denom),
            None => code(0.0),
        };
        *o = (hi << 4) | lo;
    }
}

/// Dequantize flat elements `start .. start + out.len()` into `out`:
/// `out[i] = O::from_f32(fp32(code[q_i] * absmax[i / blocksize]))` (one fp32 multiply, then
/// round-to-nearest-even into the output type). `blocksize` is even and `absmax` already
/// restored (double quantization undone). A per-block 16-entry table holds the products, so
/// each element is one table lookup; the values are identical to multiplying per element.
#[inline(always)]
pub(crate) fn decode_range<O: Element>(
    packed: &[u8],
    absmax: &[f32],
    blocksize: usize,
    code: &[f32; 16],
    start: usize,
    out: &mut [O],
) {
    let end = start + out.len();
    let mut i = start;
    let mut o = 0;
    while i < end {
        let b = i / blocksize;
        let block_end = ((b + 1) * blocksize).min(end);
        let scale = absmax[b];
        let table: [O; 16] = code.map(|c| O::from_f32(c * scale));
        if i % 2 == 1 {
            out[o] = table[(packed[i / 2] & 15) as usize];
            i += 1;
            o += 1;
        }
        let pairs = (block_end - i) / 2;
        let bytes = &packed[i / 2..i / 2 + pairs];
        for (d, &byte) in out[o..o + 2 * pairs].chunks_exact_mut(2).zip(bytes) {
            d[0] = table[(byte >> 4) as usize];
            d[1] = table[(byte & 15) as usize];
        }
        i += 2 * pairs;
        o += 2 * pairs;
        if i < block_end {
            out[o] = table[(packed[i / 2] >> 4) as usize];
            i += 1;
            o += 1;
        }
    }
}
