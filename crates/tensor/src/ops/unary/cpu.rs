//! CPU elementwise maps. The fast path matches on the op once, outside the loop, so each map is
//! its own monomorphised loop over a contiguous slice (vectorised where LLVM can: neg, sqr,
//! affine, recip, sqrt); rayon splits long tensors into chunks. `unary_ref` evaluates each element
//! in f64 through the strided index.

use super::UnaryOp;
use crate::{bf16, f16, CpuElement, CpuStorage, Element, Error, Result, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// Apply `op` to a float tensor of any layout (odd layouts are made contiguous first).
pub fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let x = x.contiguous()?;
    let out = match x.cpu_storage(op.name())? {
        CpuStorage::F32(_) => CpuStorage::F32(map_op::<f32>(x.as_slice()?, op)),
        CpuStorage::BF16(_) => CpuStorage::BF16(map_op::<bf16>(x.as_slice()?, op)),
        CpuStorage::F16(_) => CpuStorage::F16(map_op::<f16>(x.as_slice()?, op)),
        s => return Err(Error::UnsupportedDType { op: op.name(), dtype: s.dtype() }),
    };
    Ok(Tensor::from_cpu(out, x.shape().clone()))
}

fn map_op<T: CpuElement>(x: &[T], op: UnaryOp) -> Vec<T> {
    match op {
        UnaryOp::Exp => map(x, f32::exp),
        UnaryOp::Log => map(x, f32::ln),
        UnaryOp::Sqrt => map(x, f32::sqrt),
        UnaryOp::Rsqrt => map(x, |v| 1.0 / v.sqrt()),
        UnaryOp::Neg => map(x, |v| -v),
        UnaryOp::Sqr => map(x, |v| v * v),
        UnaryOp::Recip => map(x, |v| 1.0 / v),
        UnaryOp::Silu => map(x, |v| v / (1.0 + (-v).exp())),
        UnaryOp::Affine(m, a) => map(x, move |v| v * m + a),
        UnaryOp::Powf(e) => map(x, move |v| v.powf(e)),
    }
}

fn map<T: Element>(x: &[T], f: impl Fn(f32) -> f32 + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, i)| {
        for (o, &i) in o.iter_mut().zip(i) {
            *o = T::from_f32(f(i.to_f32()));
        }
    });
    out
}

/// Reference: each element in f64, read through the strided index, rounded once to the dtype.
pub fn unary_ref(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let f = |v: f64| -> f64 {
        match op {
            UnaryOp::Exp => v.exp(),
            UnaryOp::Log => v.ln(),
            UnaryOp::Sqrt => v.sqrt(),
            UnaryOp::Rsqrt => 1.0 / v.sqrt(),
            UnaryOp::Neg => -v,
            UnaryOp::Sqr => v * v,
            UnaryOp::Recip => 1.0 / v,
            UnaryOp::Silu => v / (1.0 + (-v).exp()),
            UnaryOp::Affine(m, a) => v * m as f64 + a as f64,
            UnaryOp::Powf(e) => v.powf(e as f64),
        }
    };
    let v: Vec<f32> = x.to_vec_f32()?.into_iter().map(|e| f(e as f64) as f32).collect();
    Tensor::from_vec(v, x.shape().clone())?.to_dtype(x.dtype())
}
