//! CPU casts. The fast path converts contiguous runs in parallel chunks (half's slice conversions
//! use F16C for f16); `cast_ref` rounds each element with an independent f64 model of
//! round-to-nearest-even, so tests check the fast path against arithmetic, not against itself.

use crate::{bf16, f16, CpuElement, CpuStorage, DType, Element, Error, Result, Tensor};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

/// Elements per parallel task: big enough that scheduling is noise.
const CHUNK: usize = 1 << 15;

/// `x` as `dtype`, contiguous.
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    let x = x.contiguous()?;
    let range = x.layout().contiguous_range().ok_or_else(|| {
        Error::invalid("to_dtype", format!("tensor {:?} not contiguous after contiguous()", x.dims()))
    })?;
    let out = match (x.cpu_storage("to_dtype")?, dtype) {
        (CpuStorage::F32(v), DType::F16) => {
            CpuStorage::F16(par_convert(&v[range], |o: &mut [f16], i| o.convert_from_f32_slice(i)))
        }
        (CpuStorage::F16(v), DType::F32) => {
            CpuStorage::F32(par_convert(&v[range], |o: &mut [f32], i| i.convert_to_f32_slice(o)))
        }
        (s, _) => crate::with_cpu_storage!(s, v => convert_from(&v[range], dtype)),
    };
    Ok(Tensor::from_cpu(out, x.shape().clone()))
}

fn convert_from<S: Element>(src: &[S], dtype: DType) -> CpuStorage {
    fn go<S: Element, D: CpuElement>(src: &[S]) -> CpuStorage {
        D::wrap(par_convert(src, |o: &mut [D], i: &[S]| {
            for (o, &i) in o.iter_mut().zip(i) {
                *o = D::from_f32(i.to_f32());
            }
        }))
    }
    match dtype {
        DType::F32 => go::<S, f32>(src),
        DType::BF16 => go::<S, bf16>(src),
        DType::F16 => go::<S, f16>(src),
        DType::U8 => go::<S, u8>(src),
        DType::I32 => go::<S, i32>(src),
    }
}

fn par_convert<S: Sync, D: Element>(src: &[S], f: impl Fn(&mut [D], &[S]) + Sync) -> Vec<D> {
    let mut out = vec![D::zero(); src.len()];
    out.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(o, i)| f(o, i));
    out
}

/// Reference: one element at a time through the strided index; floats round with
/// [`round_ref`], integers use `as`.
pub fn cast_ref(x: &Tensor, dtype: DType) -> Result<Tensor> {
    let v = x.to_vec_f32()?;
    let shape = x.shape().clone();
    let out = match dtype {
        DType::F32 => CpuStorage::F32(v),
        DType::BF16 => CpuStorage::BF16(v.iter().map(|&e| bf16::from_f64(round_ref(e, 8, -126))).collect()),
        DType::F16 => CpuStorage::F16(v.iter().map(|&e| f16::from_f64(round_ref(e, 11, -14))).collect()),
        DType::U8 => CpuStorage::U8(v.iter().map(|&e| e as u8).collect()),
        DType::I32 => CpuStorage::I32(v.iter().map(|&e| e as i32).collect()),
    };
    Ok(Tensor::from_cpu(out, shape))
}

/// `x` rounded to nearest-even in a binary format with `bits` significant bits and smallest
/// normal exponent `emin` (bf16: 8, -126; f16: 11, -14), as an exactly representable f64.
/// Overflow is left to the final conversion, which sees a value past the format's largest.
pub fn round_ref(x: f32, bits: i32, emin: i32) -> f64 {
    let ax = (x as f64).abs();
    if !ax.is_finite() || ax == 0.0 {
        return x as f64;
    }
    // The exponent read from the bits (log2 can round up just below a power of two); f32
    // subnormals sit below every `emin` used here, so the clamp covers them.
    let e = (((x.to_bits() >> 23) & 0xff) as i32 - 127).max(emin);
    // The spacing of representable values at this exponent; dividing by a power of two is exact.
    let q = 2f64.powi(e - (bits - 1));
    let r = (ax / q).round_ties_even() * q;
    let max = (2.0 - 2f64.powi(-(bits - 1))) * 2f64.powi(if bits == 8 { 127 } else { 15 });
    // Values at or past halfway to the next power of two overflow to infinity.
    let r = if r > max { f64::INFINITY } else { r };
    r.copysign(x as f64)
}
