//! CPU softmax over the last dim, row by row, rows split across rayon tasks. Each row is three
//! vectorisable passes: a 16-lane max, `exp` into an f32 scratch row with a branch-free
//! polynomial `exp` (Cephes `expf`: 2^n · e^r, |r| ≤ ln2/2, within 2 ulp), and a scaled write.
//! The backward's row dot product accumulates in f64. `*_ref` do each row in f64 with libm `exp`.

use crate::{bf16, f16, CpuElement, CpuStorage, Element, Error, Result, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;
const LANES: usize = 16;

/// `e^x` for f32 without a libm call, so the loop around it vectorises. Below -87.3 (where
/// `e^x` is subnormal) it returns 0; above 88.3 it saturates at `e^88.3` (softmax only feeds it
/// `x - max <= 0`); NaN stays NaN.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so `n · LN2_HI` is exact for the |n| < 128 used here.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds to an integer in the mantissa (no `floor`/`round`, which are libm
    // calls on baseline x86-64), and the same bits give `n` as an integer without a float->int
    // conversion.
    const MAGIC: f32 = 12_582_912.0;
    let xc = x.clamp(-87.3, 88.3);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let ni = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    if x < -87.3 {
        0.0
    } else {
        er * scale
    }
}

fn row_max(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for (m, &v) in m.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    it.remainder().iter().fold(m.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)), |a, &b| a.max(b))
}

fn row_sum(x: &[f32]) -> f32 {
    let mut s = [0f32; LANES];
    let mut it = x.chunks_exact(LANES);
    for c in &mut it {
        for (s, &v) in s.iter_mut().zip(c) {
            *s += v;
        }
    }
    s.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

fn widen_into<T: Element>(dst: &mut [f32], src: &[T]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = s.to_f32();
    }
}

/// Softmax of each last-dim row of `x`.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let c = x.dims()[x.rank() - 1];
    let out = match x.cpu_storage("softmax_last")? {
        CpuStorage::F32(_) => fwd::<f32>(x.as_slice()?, c),
        CpuStorage::BF16(_) => fwd::<bf16>(x.as_slice()?, c),
        CpuStorage::F16(_) => fwd::<f16>(x.as_slice()?, c),
        s => return Err(Error::UnsupportedDType { op: "softmax_last", dtype: s.dtype() }),
    };
    Ok(Tensor::from_cpu(out, x.shape().clone()))
}

fn fwd<T: CpuElement>(x: &[T], c: usize) -> CpuStorage {
    let mut out = vec![T::zero(); x.len()];
    if let Some(rows) = CHUNK.checked_div(c) {
        let task = rows.max(1) * c;
        out.par_chunks_mut(task).zip(x.par_chunks(task)).for_each(|(o, x)| {
            let mut e = vec![0f32; c];
            for (o, x) in o.chunks_mut(c).zip(x.chunks(c)) {
                widen_into(&mut e, x);
                let m = row_max(&e);
                for v in e.iter_mut() {
                    *v = exp_fast(*v - m);
                }
                let inv = 1.0 / row_sum(&e);
                for (o, &v) in o.iter_mut().zip(&e) {
                    *o = T::from_f32(v * inv);
                }
            }
        });
    }
    T::wrap(out)
}

/// `dx = y ⊙ (dy − Σ_last(y ⊙ dy))` (shapes and dtypes checked by the caller).
pub fn softmax_last_bwd(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    let (y, dy) = (y.contiguous()?, dy.contiguous()?);
    let c = y.dims()[y.rank() - 1];
    let out = match y.cpu_storage("softmax_last_bwd")? {
        CpuStorage::F32(_) => bwd::<f32>(y.as_slice()?, dy.as_slice()?, c),
        CpuStorage::BF16(_) => bwd::<bf16>(y.as_slice()?, dy.as_slice()?, c),
        CpuStorage::F16(_) => bwd::<f16>(y.as_slice()?, dy.as_slice()?, c),
        s => return Err(Error::UnsupportedDType { op: "softmax_last_bwd", dtype: s.dtype() }),
    };
    Ok(Tensor::from_cpu(out, y.shape().clone()))
}

fn bwd<T: CpuElement>(y: &[T], dy: &[T], c: usize) -> CpuStorage {
    let mut out = vec![T::zero(); y.len()];
    if let Some(rows) = CHUNK.checked_div(c) {
        let task = rows.max(1) * c;
        out.par_chunks_mut(task).zip(y.par_chunks(task).zip(dy.par_chunks(task))).for_each(|(o, (y, dy))| {
            for ((o, y), dy) in o.chunks_mut(c).zip(y.chunks(c)).zip(dy.chunks(c)) {
                let mut acc = [0f64; 8];
                let (mut yi, mut di) = (y.chunks_exact(8), dy.chunks_exact(8));
                for (a, b) in (&mut yi).zip(&mut di) {
                    for k in 0..8 {
                        acc[k] += (a[k].to_f32() * b[k].to_f32()) as f64;
                    }
                }
                let tail: f64 =
                    yi.remainder().iter().zip(di.remainder()).map(|(a, b)| (a.to_f32() * b.to_f32()) as f64).sum();
                let dot = (acc.iter().sum::<f64>() + tail) as f32;
                for ((o, y), dy) in o.iter_mut().zip(y).zip(dy) {
                    *o = T::from_f32(y.to_f32() * (dy.to_f32() - dot));
                }
            }
        });
    }
    T::wrap(out)
}

/// Reference forward: each row in f64 with libm `exp`.
pub fn softmax_last_ref(x: &Tensor) -> Result<Tensor> {
    let c = x.dims()[x.rank() - 1];
    let mut v: Vec<f64> = x.to_vec_f32()?.into_iter().map(f64::from).collect();
    for row in v.chunks_mut(c.max(1)) {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let mut s = 0.0;
        for e in row.iter_mut() {
            *e = (*e - m).exp();
            s += *e;
        }
        for e in row.iter_mut() {
            *e /= s;
        }
    }
    Tensor::from_vec(v.into_iter().map(|e| e as f32).collect::<Vec<f32>>(), x.shape().clone())?.to_dtype(x.dtype())
}

/// Reference backward: each row in f64.
pub fn softmax_last_bwd_ref(yt: &Tensor, dyt: &Tensor) -> Result<Tensor> {
    let c = yt.dims()[yt.rank() - 1].max(1);
    let (y, dy) = (yt.to_vec_f32()?, dyt.to_vec_f32()?);
    let mut out = Vec::with_capacity(y.len());
    for (y, dy) in y.chunks(c).zip(dy.chunks(c)) {
        let dot: f64 = y.iter().zip(dy).map(|(&a, &b)| a as f64 * b as f64).sum();
        out.extend(y.iter().zip(dy).map(|(&a, &b)| (a as f64 * (b as f64 - dot)) as f32));
    }
    Tensor::from_vec(out, yt.shape().clone())?.to_dtype(yt.dtype())
}
