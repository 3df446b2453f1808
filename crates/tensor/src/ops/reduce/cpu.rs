//! CPU reductions. A contiguous input is viewed as `(outer, R, inner)` with `R` the reduced dim.
//! When `inner == 1` each output is one contiguous row, summed with eight f64 lanes (vectorised
//! widening adds) and long rows split into fixed-size pieces added in order, so results do not
//! depend on the thread count. When `inner > 1` whole input rows are added into an f64
//! accumulator row, which keeps the loads contiguous. `reduce_ref` folds one element at a time.

use super::ReduceOp;
use crate::{bf16, f16, CpuElement, CpuStorage, Element, Error, Result, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel piece of one long row, and columns per task when `inner > 1`.
const CHUNK: usize = 1 << 14;
const COLS: usize = 512;

/// Reduce `x` over `dim` with `op`.
pub fn reduce(x: &Tensor, dim: usize, keepdim: bool, op: ReduceOp) -> Result<Tensor> {
    let dims = x.dims();
    let r = x.shape().dim(op.name(), dim)?;
    if r == 0 && matches!(op, ReduceOp::Max | ReduceOp::ArgMax) {
        return Err(Error::invalid(op.name(), format!("cannot reduce empty dim {dim} of shape {:?}", x.shape())));
    }
    let (outer, inner) = (dims[..dim].iter().product(), dims[dim + 1..].iter().product());
    let x = x.contiguous()?;
    let out = match x.cpu_storage(op.name())? {
        CpuStorage::F32(_) => run::<f32>(x.as_slice()?, outer, r, inner, op),
        CpuStorage::BF16(_) => run::<bf16>(x.as_slice()?, outer, r, inner, op),
        CpuStorage::F16(_) => run::<f16>(x.as_slice()?, outer, r, inner, op),
        s => return Err(Error::UnsupportedDType { op: op.name(), dtype: s.dtype() }),
    };
    Ok(Tensor::from_cpu(out, out_shape(x.shape(), dim, keepdim)))
}

fn out_shape(shape: &Shape, dim: usize, keepdim: bool) -> Shape {
    let mut d = shape.dims().to_vec();
    if keepdim {
        d[dim] = 1;
    } else {
        d.remove(dim);
    }
    Shape::new(d)
}

fn run<T: CpuElement>(x: &[T], outer: usize, r: usize, inner: usize, op: ReduceOp) -> CpuStorage {
    let narrow = |v: Vec<f32>| T::wrap(v.into_iter().map(T::from_f32).collect());
    match op {
        ReduceOp::Sum => narrow(sum_axis(x, outer, r, inner, 1.0)),
        ReduceOp::Mean => narrow(sum_axis(x, outer, r, inner, 1.0 / r as f64)),
        ReduceOp::Max => narrow(fold_axis(x, outer, r, inner).into_iter().map(|(v, _)| v).collect()),
        ReduceOp::ArgMax => CpuStorage::I32(fold_axis(x, outer, r, inner).into_iter().map(|(_, i)| i).collect()),
    }
}

/// `scale · Σ_k x[o, k, i]` for a row-major `(outer, r, inner)` slice, accumulated in f64.
pub fn sum_axis<T: Element>(x: &[T], outer: usize, r: usize, inner: usize, scale: f64) -> Vec<f32> {
    let mut out = vec![0f32; outer * inner];
    if inner == 1 {
        out.par_iter_mut().enumerate().for_each(|(o, y)| *y = (row_sum(&x[o * r..(o + 1) * r]) * scale) as f32);
        return out;
    }
    out.par_chunks_mut(inner.max(1)).enumerate().for_each(|(o, y)| {
        y.par_chunks_mut(COLS).enumerate().for_each(|(c, y)| {
            let mut acc = vec![0f64; y.len()];
            for k in 0..r {
                let row = &x[(o * r + k) * inner + c * COLS..][..y.len()];
                for (a, v) in acc.iter_mut().zip(row) {
                    *a += v.to_f32() as f64;
                }
            }
            for (y, a) in y.iter_mut().zip(&acc) {
                *y = (a * scale) as f32;
            }
        })
    });
    out
}

/// Sum of a contiguous run; long runs go in fixed pieces (in parallel) added left to right.
fn row_sum<T: Element>(x: &[T]) -> f64 {
    if x.len() <= 2 * CHUNK {
        return lanes_sum(x);
    }
    let parts: Vec<f64> = x.par_chunks(CHUNK).map(lanes_sum).collect();
    parts.into_iter().sum()
}

fn lanes_sum<T: Element>(x: &[T]) -> f64 {
    let mut acc = [0f64; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v.to_f32() as f64;
        }
    }
    let tail: f64 = it.remainder().iter().map(|v| v.to_f32() as f64).sum();
    acc.iter().sum::<f64>() + tail
}

/// `v` beats the running best: larger, or the first NaN (NaN then sticks, as in PyTorch).
#[inline(always)]
fn beats(v: f32, best: f32) -> bool {
    v > best || (v.is_nan() && !best.is_nan())
}

/// Maximum and its first index over `r` for each `(outer, inner)` position (`r > 0`).
fn fold_axis<T: Element>(x: &[T], outer: usize, r: usize, inner: usize) -> Vec<(f32, i32)> {
    let mut out = vec![(0f32, 0i32); outer * inner];
    out.par_chunks_mut(inner.max(1)).enumerate().for_each(|(o, y)| {
        for (y, v) in y.iter_mut().zip(&x[o * r * inner..]) {
            *y = (v.to_f32(), 0);
        }
        for k in 1..r {
            for (y, v) in y.iter_mut().zip(&x[(o * r + k) * inner..]) {
                let v = v.to_f32();
                if beats(v, y.0) {
                    *y = (v, k as i32);
                }
            }
        }
    });
    out
}

/// Reference: one output at a time, one element at a time, through the strided index.
pub fn reduce_ref(x: &Tensor, dim: usize, keepdim: bool, op: ReduceOp) -> Result<Tensor> {
    let r = x.shape().dim(op.name(), dim)?;
    let dims = x.dims();
    let (outer, inner): (usize, usize) = (dims[..dim].iter().product(), dims[dim + 1..].iter().product());
    let v = x.to_vec_f32()?;
    let (mut vals, mut idx) = (vec![], vec![]);
    for o in 0..outer {
        for i in 0..inner {
            let (mut sum, mut best, mut arg) = (0f64, f32::NAN, 0usize);
            for k in 0..r {
                let e = v[(o * r + k) * inner + i];
                sum += e as f64;
                if k == 0 || beats(e, best) {
                    (best, arg) = (e, k);
                }
            }
            vals.push(match op {
                ReduceOp::Sum => sum as f32,
                ReduceOp::Mean => (sum / r as f64) as f32,
                _ => best,
            });
            idx.push(arg as i32);
        }
    }
    let shape = out_shape(x.shape(), dim, keepdim);
    match op {
        ReduceOp::ArgMax => Tensor::from_vec(idx, shape),
        _ => Tensor::from_vec(vals, shape)?.to_dtype(x.dtype()),
    }
}
