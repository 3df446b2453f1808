//! `rmsnorm`: Llama's RMSNorm over the last dimension, forward and hand-written backward, as one
//! fused op. Reference: transformers `LlamaRMSNorm` (fp32 `x * rsqrt(mean(x²) + eps) * w`).
//! Computes in f32 and rounds once to the input dtype; HF with bf16 activations rounds the
//! normalised `x` before multiplying by `w`, so bf16 results may differ from it by one bf16 ulp.
//! Returns fresh gradients (no `+=` into caller buffers): accumulation is the autograd tape's job.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use super::fused::{check_float, check_same_shape, f32_data, from_f32};
use crate::{DType, Error, Result, Shape, Storage, Tensor};

const OP_FWD: &str = "rmsnorm::fwd";
const OP_BWD: &str = "rmsnorm::bwd";

/// `(rows shape, C)` of an `(.., C)` input with a `(C,)` weight.
fn check(op: &'static str, x: &Tensor, w: &Tensor) -> Result<(Shape, usize)> {
    check_float(x, op)?;
    check_float(w, op)?;
    let (&c, rows) = x
        .dims()
        .split_last()
        .ok_or_else(|| Error::invalid(op, format!("x must have rank >= 1, got shape {:?}", x.shape())))?;
    if c == 0 {
        return Err(Error::invalid(op, format!("x has an empty last dimension, shape {:?}", x.shape())));
    }
    if w.dims() != [c] {
        return Err(Error::ShapeMismatch { op, lhs: x.shape().clone(), rhs: w.shape().clone() });
    }
    Ok((Shape::new(rows.to_vec()), c))
}

/// RMSNorm forward: `x (.., C)`, `w (C,)` → `(y (.., C) in x's dtype, rstd (..,) f32)` where
/// `rstd = 1/sqrt(mean(x²) + eps)` per row is what [`bwd`] needs.
pub fn fwd(x: &Tensor, w: &Tensor, eps: f32) -> Result<(Tensor, Tensor)> {
    let (rows, c) = check(OP_FWD, x, w)?;
    super::same_device(OP_FWD, &[x, w])?;
    match &**x.storage() {
        Storage::Cpu(_) => {
            let (xs, ws) = (f32_data(x, OP_FWD)?, f32_data(w, OP_FWD)?);
            let (y, rstd) = cpu::rmsnorm_fwd(&xs, &ws, c, eps);
            Ok((from_f32(y, x.shape().clone(), x.dtype(), OP_FWD)?, Tensor::from_vec(rstd, rows)?))
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::fwd(x, w, eps, &rows, c, OP_FWD),
    }
}

/// RMSNorm backward: from `dy (.., C)`, the forward's `x`, `w` and `rstd`, returns
/// `(dx (.., C) in x's dtype, dw (C,) in w's dtype)`.
pub fn bwd(dy: &Tensor, x: &Tensor, w: &Tensor, rstd: &Tensor) -> Result<(Tensor, Tensor)> {
    let (rows, c) = check(OP_BWD, x, w)?;
    check_float(dy, OP_BWD)?;
    check_same_shape(dy, x, OP_BWD)?;
    if rstd.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch { op: OP_BWD, lhs: rstd.dtype(), rhs: DType::F32 });
    }
    if rstd.shape() != &rows {
        return Err(Error::ShapeMismatch { op: OP_BWD, lhs: x.shape().clone(), rhs: rstd.shape().clone() });
    }
    super::same_device(OP_BWD, &[dy, x, w, rstd])?;
    match &**x.storage() {
        Storage::Cpu(_) => {
            let (dys, xs, ws, rs) =
                (f32_data(dy, OP_BWD)?, f32_data(x, OP_BWD)?, f32_data(w, OP_BWD)?, f32_data(rstd, OP_BWD)?);
            let (dx, dw) = cpu::rmsnorm_bwd(&dys, &xs, &ws, &rs, c);
            Ok((from_f32(dx, x.shape().clone(), x.dtype(), OP_BWD)?, from_f32(dw, c, w.dtype(), OP_BWD)?))
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::bwd(dy, x, w, rstd, c, OP_BWD),
    }
}
