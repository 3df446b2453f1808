//! Blockwise 4-bit quantization and dequantization over flat slices, multithreaded with rayon:
//! one task per chunk of whole blocks, each running the vectorised loops of `kernels.rs`
//! (compiled for AVX2 too and picked at run time).
//!
//! Reference: bitsandbytes 0.50.2 `functional.py: quantize_4bit / dequantize_4bit` and
//! `backends/default/ops.py` (blocks over the row-major flattened tensor, absmax in fp32,
//! `x * (1/absmax)` for full blocks and `x / absmax` for the trailing partial block, element 2j
//! in the high nibble, an odd count padded with the code of 0.0).
//! Deliberately not here: double quantization (`double_quant.rs`), tensors and dtypes
//! (`weight.rs`), CUDA's all-zero-block quirk (it writes code 0 where we write the code of 0.0).

use rayon::prelude::*;
use tensor::Element;

use crate::codebook::{check_blocksize, QuantTraits, QuantType};
use crate::kernels::{absmax_bits, decode_range, encode_full, encode_partial};
use crate::{Error, Result};

/// Elements per rayon task (a multiple of every valid blocksize).
const CHUNK_ELEMS: usize = 1 << 15;

const IDENTITY: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

/// Quantize `x` (row-major flattened) to 4-bit codes in blocks of `blocksize`.
///
/// Returns `(packed, absmax)`: `packed` has `x.len().div_ceil(2)` bytes (element 2j in the high
/// nibble of byte j), `absmax` one fp32 per block. Inputs are widened to f32 exactly first.
/// A NaN or infinity anywhere is an error naming `name` and the first offending index.
pub fn quantize_4bit<T: Element>(
    name: &str,
    x: &[T],
    blocksize: usize,
    quant_type: QuantType,
) -> Result<(Vec<u8>, Vec<f32>)> {
    check_blocksize(blocksize)?;
    let n = x.len();
    let mut packed = vec![0u8; n.div_ceil(2)];
    let mut absmax = vec![0f32; n.div_ceil(blocksize)];
    let chunk_blocks = CHUNK_ELEMS / blocksize;
    let chunk_elems = chunk_blocks * blocksize;
    let traits = quant_type.traits();
    let res = packed.par_chunks_mut(chunk_elems / 2).zip(absmax.par_chunks_mut(chunk_blocks)).enumerate().try_for_each(
        |(ci, (p, a))| {
            let start = ci * chunk_elems;
            let xs = &x[start..(start + chunk_elems).min(n)];
            quantize_chunk(xs, blocksize, traits, p, a)
        },
    );
    if res.is_err() {
        return Err(first_non_finite(name, x));
    }
    Ok((packed, absmax))
}

/// The error for the first NaN/Inf of `x` (a sequential scan, so the index is deterministic).
pub(crate) fn first_non_finite<T: Element>(name: &str, x: &[T]) -> Error {
    let (index, value) =
        x.iter().map(|v| v.to_f32()).enumerate().find(|(_, v)| !v.is_finite()).unwrap_or((0, f32::NAN));
    Error::NonFinite { tensor: name.to_string(), index, value }
}

/// Per-block absmax only (no codes): what double quantization's offset needs. Errors on NaN/Inf
/// like [`quantize_4bit`]. Used to plan a streaming write before quantizing.
pub fn block_absmax<T: Element>(name: &str, x: &[T], blocksize: usize) -> Result<Vec<f32>> {
    check_blocksize(blocksize)?;
    let mut absmax = vec![0f32; x.len().div_ceil(blocksize)];
    let ok = absmax.par_iter_mut().zip(x.par_chunks(blocksize)).try_for_each(|(a, xb)| {
        let bits = absmax_bits(xb);
        *a = f32::from_bits(bits);
        if bits >= 0x7f80_0000 {
            Err(())
        } else {
            Ok(())
        }
    });
    ok.map_err(|_| first_non_finite(name, x))?;
    Ok(absmax)
}

type ChunkResult = std::result::Result<(), ()>;

fn quantize_chunk<T: Element>(
    x: &[T],
    bs: usize,
    traits: &QuantTraits,
    packed: &mut [u8],
    absmax: &mut [f32],
) -> ChunkResult {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked on the line above.
            return unsafe { quantize_chunk_avx2(x, bs, traits, packed, absmax) };
        }
    }
    quantize_chunk_body(x, bs, traits, packed, absmax)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_chunk_avx2<T: Element>(
    x: &[T],
    bs: usize,
    traits: &QuantTraits,
    packed: &mut [u8],
    absmax: &mut [f32],
) -> ChunkResult {
    quantize_chunk_body(x, bs, traits, packed, absmax)
}

/// Quantize whole blocks of `x` (the last may be partial) into `packed` and `absmax`;
/// `Err(())` on the first non-finite block.
#[inline(always)]
fn quantize_chunk_body<T: Element>(
    x: &[T],
    bs: usize,
    traits: &QuantTraits,
    packed: &mut [u8],
    absmax: &mut [f32],
) -> ChunkResult {
    let mids = traits.sorted_midpoints();
    let remap = traits.sorted_to_code();
    for ((xb, pb), a) in x.chunks(bs).zip(packed.chunks_mut(bs / 2)).zip(absmax.iter_mut()) {
        let bits = absmax_bits(xb);
        if bits >= 0x7f80_0000 {
            return Err(());
        }
        let am = f32::from_bits(bits);
        *a = am;
        if xb.len() == bs {
            let inv = 1.0f32 / am.max(1e-38);
            match remap {
                None => encode_full::<T, false>(xb, inv, &mids, &IDENTITY, pb),
                Some(r) => encode_full::<T, true>(xb, inv, &mids, r, pb),
            }
        } else {
            encode_partial(xb, am, &mids, remap, pb);
        }
    }
    Ok(())
}

/// Dequantize `out.len()` elements from `packed` codes and fp32 `absmax` (already restored if
/// double-quantized): `out[i] = O::from_f32(fp32(code[q_i] * absmax[i / blocksize]))`.
/// `name` is used in errors about too-short codes or absmax.
pub fn dequantize_4bit_into<O: Element>(
    name: &str,
    packed: &[u8],
    absmax: &[f32],
    blocksize: usize,
    quant_type: QuantType,
    out: &mut [O],
) -> Result<()> {
    check_blocksize(blocksize)?;
    check_lengths(name, packed.len(), absmax.len(), out.len(), blocksize)?;
    let code = quant_type.traits().dequant_code();
    out.par_chunks_mut(CHUNK_ELEMS).enumerate().for_each(|(ci, o)| {
        decode_chunk(packed, absmax, blocksize, &code, ci * CHUNK_ELEMS, o);
    });
    Ok(())
}

/// Error unless `packed` and `absmax` cover `n` elements.
pub(crate) fn check_lengths(name: &str, packed: usize, absmax: usize, n: usize, blocksize: usize) -> Result<()> {
    if packed < n.div_ceil(2) {
        return Err(Error::state(
            name,
            format!("{packed} code bytes cannot hold {n} elements (need {})", n.div_ceil(2)),
        ));
    }
    if absmax < n.div_ceil(blocksize) {
        return Err(Error::state(
            name,
            format!(
                "{absmax} absmax values cannot cover {n} elements in blocks of {blocksize} (need {})",
                n.div_ceil(blocksize)
            ),
        ));
    }
    Ok(())
}

/// [`decode_range`] with the AVX2 build picked at run time. The caller guarantees the ranges.
pub(crate) fn decode_chunk<O: Element>(
    packed: &[u8],
    absmax: &[f32],
    bs: usize,
    code: &[f32; 16],
    start: usize,
    out: &mut [O],
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked on the line above.
            unsafe { decode_chunk_avx2(packed, absmax, bs, code, start, out) };
            return;
        }
    }
    decode_range(packed, absmax, bs, code, start, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn decode_chunk_avx2<O: Element>(
    packed: &[u8],
    absmax: &[f32],
    bs: usize,
    code: &[f32; 16],
    start: usize,
    out: &mut [O],
) {
    decode_range(packed, absmax, bs, code, start, out)
}

/// Pack 4-bit codes two per byte, element 2j in the high nibble; an odd count leaves the low
/// nibble of the last byte 0 (callers wanting bitsandbytes' pad push the zero code first).
pub fn pack_nibbles(codes: &[u8]) -> Vec<u8> {
    codes.chunks(2).map(|p| ((p[0] & 15) << 4) | (p.get(1).copied().unwrap_or(0) & 15)).collect()
}

/// The first `n` 4-bit codes of `packed` (high nibble first).
pub fn unpack_nibbles(packed: &[u8], n: usize) -> Vec<u8> {
    packed.iter().flat_map(|&b| [b >> 4, b & 15]).take(n).collect()
}

/// Plain scalar reference of [`quantize_4bit`] for f32 input, written straight from the spec
/// (README §3.3, with the clamp): what the fast path is tested against. Assumes finite input.
pub fn quantize_4bit_ref(x: &[f32], blocksize: usize, quant_type: QuantType) -> (Vec<u8>, Vec<f32>) {
    let traits = quant_type.traits();
    let mut codes = Vec::with_capacity(x.len() + 1);
    let mut absmax = Vec::with_capacity(x.len().div_ceil(blocksize));
    for block in x.chunks(blocksize) {
        let am = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        absmax.push(am);
        let floor = am.max(1e-38);
        for &v in block {
            let s = if block.len() == blocksize { v * (1.0 / floor) } else { v / floor };
            codes.push(traits.encode_ref(s.clamp(-1.0, 1.0)));
        }
    }
    if x.len() % 2 == 1 {
        codes.push(traits.encode_ref(0.0));
    }
    (pack_nibbles(&codes), absmax)
}

/// Plain scalar reference of [`dequantize_4bit_into`]: `O::from_f32(code[q] * absmax[i / bs])`.
pub fn dequantize_4bit_ref<O: Element>(
    packed: &[u8],
    absmax: &[f32],
    n: usize,
    blocksize: usize,
    quant_type: QuantType,
) -> Vec<O> {
    let code = quant_type.traits().dequant_code();
    unpack_nibbles(packed, n)
        .iter()
        .enumerate()
        .map(|(i, &q)| O::from_f32(code[q as usize] * absmax[i / blocksize]))
        .collect()
}
