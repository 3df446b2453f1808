//! CPU binary ops and `sum_to`. Both operands are viewed through their broadcast layouts, so
//! broadcast, transposed and narrowed inputs are read in place. Dims are coalesced first; the
//! innermost run then has one of three shapes that get their own vectorisable loop: both
//! contiguous (same shape, or a row broadcast like `(B, T, C) + (C,)`), or one side a scalar per
//! row (`(N, C) * (N, 1)`). Rows are split across rayon tasks of about `CHUNK` elements.
//! `binary_ref` and `sum_to_ref` go element by element in f64.

use super::BinaryOp;
use crate::ops::reduce::cpu::sum_axis;
use crate::{bf16, f16, CpuStorage, Element, Error, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// `a op b` broadcast to `shape` (already checked to be their broadcast shape).
pub fn binary(a: &Tensor, b: &Tensor, shape: &Shape, op: BinaryOp) -> Result<Tensor> {
    let (la, lb) = (a.layout().broadcast_as(shape)?, b.layout().broadcast_as(shape)?);
    let out = match (a.cpu_storage(op.name())?, b.cpu_storage(op.name())?) {
        (CpuStorage::F32(x), CpuStorage::F32(y)) => CpuStorage::F32(apply::<f32>(x, &la, y, &lb, op)),
        (CpuStorage::BF16(x), CpuStorage::BF16(y)) => CpuStorage::BF16(apply::<bf16>(x, &la, y, &lb, op)),
        (CpuStorage::F16(x), CpuStorage::F16(y)) => CpuStorage::F16(apply::<f16>(x, &la, y, &lb, op)),
        (x, y) if x.dtype() != y.dtype() => {
            return Err(Error::DTypeMismatch { op: op.name(), lhs: x.dtype(), rhs: y.dtype() })
        }
        (x, _) => return Err(Error::UnsupportedDType { op: op.name(), dtype: x.dtype() }),
    };
    Ok(Tensor::from_cpu(out, shape.clone()))
}

fn apply<T: Element>(a: &[T], la: &Layout, b: &[T], lb: &Layout, op: BinaryOp) -> Vec<T> {
    match op {
        BinaryOp::Add => zip_map(a, la, b, lb, |x, y| x + y),
        BinaryOp::Sub => zip_map(a, la, b, lb, |x, y| x - y),
        BinaryOp::Mul => zip_map(a, la, b, lb, |x, y| x * y),
        BinaryOp::Div => zip_map(a, la, b, lb, |x, y| x / y),
        BinaryOp::Maximum => zip_map(a, la, b, lb, |x, y| if x > y || x.is_nan() { x } else { y }),
    }
}

/// `f(a[i], b[i])` for every element of two layouts of the same shape, into a new row-major vec.
pub fn zip_map<T: Element>(a: &[T], la: &Layout, b: &[T], lb: &Layout, f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<T> {
    let n = la.shape().elem_count();
    let mut out = vec![T::zero(); n];
    if n == 0 {
        return out;
    }
    if let (Some(ra), Some(rb)) = (la.contiguous_range(), lb.contiguous_range()) {
        let (a, b) = (&a[ra], &b[rb]);
        out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| {
            run(o, a, 1, b, 1, &f);
        });
        return out;
    }
    let (dims, sa, sb) = coalesce(la.shape().dims(), la.strides(), lb.strides());
    let r = dims.len();
    let inner = dims[r - 1];
    let rows_per_task = (CHUNK / inner).max(1);
    out.par_chunks_mut(rows_per_task * inner).enumerate().for_each(|(task, o)| {
        for (j, row) in o.chunks_mut(inner).enumerate() {
            let (mut rem, mut oa, mut ob) = (task * rows_per_task + j, la.offset(), lb.offset());
            for d in (0..r - 1).rev() {
                let c = rem % dims[d];
                rem /= dims[d];
                oa += c * sa[d];
                ob += c * sb[d];
            }
            run(row, &a[oa..], sa[r - 1], &b[ob..], sb[r - 1], &f);
        }
    });
    out
}

/// One run of outputs with inner strides `ia`, `ib`; the common stride pairs get plain loops.
#[inline(always)]
fn run<T: Element>(o: &mut [T], a: &[T], ia: usize, b: &[T], ib: usize, f: &impl Fn(f32, f32) -> f32) {
    match (ia, ib) {
        (1, 1) => {
            for ((o, x), y) in o.iter_mut().zip(a).zip(b) {
                *o = T::from_f32(f(x.to_f32(), y.to_f32()));
            }
        }
        (1, 0) => {
            let y = b[0].to_f32();
            for (o, x) in o.iter_mut().zip(a) {
                *o = T::from_f32(f(x.to_f32(), y));
            }
        }
        (0, 1) => {
            let x = a[0].to_f32();
            for (o, y) in o.iter_mut().zip(b) {
                *o = T::from_f32(f(x, y.to_f32()));
            }
        }
        _ => {
            for (k, o) in o.iter_mut().enumerate() {
                *o = T::from_f32(f(a[k * ia].to_f32(), b[k * ib].to_f32()));
            }
        }
    }
}

/// Drop size-1 dims and merge neighbours that both operands step through as one run, so
/// `(B, T, C) + (C,)` becomes `(B·T, C)` and the innermost run is as long as possible.
fn coalesce(dims: &[usize], sa: &[usize], sb: &[usize]) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let (mut d, mut a, mut b): (Vec<usize>, Vec<usize>, Vec<usize>) = (vec![], vec![], vec![]);
    for i in 0..dims.len() {
        if dims[i] == 1 {
            continue;
        }
        match d.len().checked_sub(1) {
            Some(p) if a[p] == sa[i] * dims[i] && b[p] == sb[i] * dims[i] => {
                d[p] *= dims[i];
                a[p] = sa[i];
                b[p] = sb[i];
            }
            _ => {
                d.push(dims[i]);
                a.push(sa[i]);
                b.push(sb[i]);
            }
        }
    }
    if d.is_empty() {
        return (vec![1], vec![0], vec![0]);
    }
    (d, a, b)
}

/// Reference: both operands broadcast and read element by element, each result in f64.
pub fn binary_ref(a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    let shape = Shape::broadcast(op.name(), a.shape(), b.shape())?;
    let x = a.broadcast_as(shape.clone())?.to_vec_f32()?;
    let y = b.broadcast_as(shape.clone())?.to_vec_f32()?;
    let v = x.iter().zip(&y).map(|(&x, &y)| {
        let (x, y) = (x as f64, y as f64);
        (match op {
            BinaryOp::Add => x + y,
            BinaryOp::Sub => x - y,
            BinaryOp::Mul => x * y,
            BinaryOp::Div => x / y,
            BinaryOp::Maximum => {
                if x > y || x.is_nan() {
                    x
                } else {
                    y
                }
            }
        }) as f32
    });
    Tensor::from_vec(v.collect::<Vec<f32>>(), shape)?.to_dtype(a.dtype())
}

/// `x` summed down to `shape` (checked by the caller to broadcast to `x`): runs of reduced dims
/// are merged and each run is one pass of the f64-accumulating `sum_axis`, innermost first.
pub fn sum_to(x: &Tensor, shape: &Shape) -> Result<Tensor> {
    let pad = x.rank() - shape.rank();
    let mut groups: Vec<(usize, bool)> = vec![]; // (size, reduced), size-1 dims dropped
    for (i, &d) in x.dims().iter().enumerate() {
        let reduced = i < pad || shape.dims()[i - pad] == 1;
        if d == 1 {
            continue;
        }
        match groups.last_mut() {
            Some((s, r)) if *r == reduced => *s *= d,
            _ => groups.push((d, reduced)),
        }
    }
    let x = x.contiguous()?;
    let mut acc: Option<Vec<f32>> = None;
    while let Some(g) = groups.iter().rposition(|&(_, reduced)| reduced) {
        let outer: usize = groups[..g].iter().map(|s| s.0).product();
        let inner: usize = groups[g + 1..].iter().map(|s| s.0).product();
        let r = groups[g].0;
        acc = Some(match &acc {
            Some(v) => sum_axis(v, outer, r, inner, 1.0),
            None => match x.cpu_storage("sum_to")? {
                CpuStorage::F32(_) => sum_axis(x.as_slice::<f32>()?, outer, r, inner, 1.0),
                CpuStorage::BF16(_) => sum_axis(x.as_slice::<bf16>()?, outer, r, inner, 1.0),
                CpuStorage::F16(_) => sum_axis(x.as_slice::<f16>()?, outer, r, inner, 1.0),
                s => return Err(Error::UnsupportedDType { op: "sum_to", dtype: s.dtype() }),
            },
        });
        groups.remove(g);
    }
    match acc {
        Some(v) => Tensor::from_vec(v, shape.clone())?.to_dtype(x.dtype()),
        None => x.reshape(shape.clone()),
    }
}

/// Reference: scatter-add every element into its target slot in f64.
pub fn sum_to_ref(x: &Tensor, shape: &Shape) -> Result<Tensor> {
    let slots = Layout::contiguous(shape.clone()).broadcast_as(x.shape())?;
    let mut acc = vec![0f64; shape.elem_count()];
    for (v, i) in x.to_vec_f32()?.into_iter().zip(slots.indices()) {
        acc[i] += v as f64;
    }
    Tensor::from_vec(acc.into_iter().map(|v| v as f32).collect::<Vec<f32>>(), shape.clone())?.to_dtype(x.dtype())
}
