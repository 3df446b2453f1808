//! Double quantization ("compress_statistics"): the per-block fp32 absmax is centred on one fp32
//! offset and quantized again with the signed 8-bit dynamic map in groups of 256, keeping one
//! fp32 "nested absmax" per group. About 0.127 extra bits per weight instead of 0.5.
//!
//! Reference: bitsandbytes 0.50.2 `functional.py: quantize_4bit` (after
//! `if compress_statistics:`), `quantize_blockwise` / `dequantize_blockwise` with the default
//! (pure-torch) kernels: same `x * (1/absmax)` / trailing `x / absmax` scaling and nearest code
//! with ties to the lower index as the 4-bit path.
//! Deliberately not here: bitsandbytes' CPU C++ 65536-step LUT, which picks a neighbouring
//! code for ~0.16 % of values (CUDA and the torch path agree with this file); torch's fp32
//! `mean()` for the offset (we accumulate in f64, see [`mean_offset`]).

use rayon::prelude::*;

use crate::codebook::{check_blocksize, dynamic_map, dynamic_map_midpoints, NESTED_BLOCKSIZE};
use crate::{Error, Result};

/// The double-quantized absmax of a 4-bit tensor: 8-bit codes into the dynamic map, one fp32
/// scale per group of `nested_blocksize` codes, and the fp32 offset added back on restore.
#[derive(Debug, PartialEq)]
pub struct NestedAbsmax {
    /// One 8-bit dynamic-map code per 4-bit block.
    pub codes: Vec<u8>,
    /// fp32 `max |absmax - offset|` per group of `nested_blocksize` blocks.
    pub nested_absmax: Vec<f32>,
    /// The fp32 offset (mean of the absmax) subtracted before quantizing.
    pub offset: f32,
    /// Group size of the nested quantization (256 in bitsandbytes).
    pub nested_blocksize: usize,
}

/// The offset the engine uses: mean of `absmax` accumulated in f64, rounded once to f32.
/// bitsandbytes uses torch's fp32 `mean()`, which can differ in the last bit; pass its value to
/// [`double_quantize`] when bit-exact codes are wanted. An empty slice gives 0.
pub fn mean_offset(absmax: &[f32]) -> f32 {
    if absmax.is_empty() {
        return 0.0;
    }
    let sum: f64 = absmax.iter().map(|&a| a as f64).sum();
    (sum / absmax.len() as f64) as f32
}

/// Quantize `absmax - offset` with the dynamic map in groups of [`NESTED_BLOCKSIZE`].
pub fn double_quantize(absmax: &[f32], offset: f32) -> NestedAbsmax {
    let centred: Vec<f32> = absmax.par_iter().map(|&a| a - offset).collect();
    let (codes, nested_absmax) = quantize_dynamic_blocks(&centred, NESTED_BLOCKSIZE);
    NestedAbsmax { codes, nested_absmax, offset, nested_blocksize: NESTED_BLOCKSIZE }
}

/// 8-bit blockwise quantization of finite `x` with the dynamic map: per block
/// `m = max |x|`, `v = x * (1/max(m, 1e-38))` (trailing partial block: `x / max(m, 1e-38)`),
/// code = nearest dynamic-map value, ties to the lower index. Returns `(codes, block maxima)`.
pub fn quantize_dynamic_blocks(x: &[f32], blocksize: usize) -> (Vec<u8>, Vec<f32>) {
    let mids = dynamic_map_midpoints();
    let mut codes = vec![0u8; x.len()];
    let mut maxima = vec![0f32; x.len().div_ceil(blocksize)];
    codes.par_chunks_mut(blocksize).zip(maxima.par_iter_mut()).zip(x.par_chunks(blocksize)).for_each(|((c, m), xb)| {
        let am = xb.iter().fold(0f32, |acc, v| acc.max(v.abs()));
        *m = am;
        let floor = am.max(1e-38);
        let inv = 1.0f32 / floor;
        let full = xb.len() == blocksize;
        for (ci, &v) in c.iter_mut().zip(xb) {
            let s = if full { v * inv } else { v / floor };
            *ci = mids.partition_point(|&mid| mid < s) as u8;
        }
    });
    (codes, maxima)
}

/// Undo double quantization: `absmax[b] = fp32(fp32(dyn[code[b]] * nested[b / 256]) + offset)`,
/// two separate fp32 roundings (never a fused multiply-add), into `out` (one per code).
pub fn restore_absmax_into(nested: &NestedAbsmax, out: &mut [f32]) -> Result<()> {
    check_blocksize(nested.nested_blocksize)?;
    let need = nested.codes.len().div_ceil(nested.nested_blocksize);
    if out.len() != nested.codes.len() || nested.nested_absmax.len() < need {
        return Err(Error::arg(
            "nested absmax",
            format!(
                "{} codes, {} nested absmax values (need {need}), output of {}",
                nested.codes.len(),
                nested.nested_absmax.len(),
                out.len()
            ),
        ));
    }
    let dynm = dynamic_map();
    let nbs = nested.nested_blocksize;
    let offset = nested.offset;
    out.par_chunks_mut(nbs).zip(nested.codes.par_chunks(nbs)).zip(nested.nested_absmax.par_iter()).for_each(
        |((o, c), &scale)| {
            for (ov, &q) in o.iter_mut().zip(c) {
                let scaled = dynm[q as usize] * scale;
                *ov = scaled + offset;
            }
        },
    );
    Ok(())
}

/// [`restore_absmax_into`] into a new vector.
pub fn restore_absmax(nested: &NestedAbsmax) -> Result<Vec<f32>> {
    let mut out = vec![0f32; nested.codes.len()];
    restore_absmax_into(nested, &mut out)?;
    Ok(out)
}
