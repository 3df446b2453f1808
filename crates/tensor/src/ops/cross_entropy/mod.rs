//! `cross_entropy`: summed token cross-entropy over `(N, V)` logits with an ignore index, forward
//! (loss sum, count, per-row logsumexp) and backward `grad_scale · (softmax − onehot)` as one
//! fused op that never materialises the softmax. Reference: `torch.nn.functional.cross_entropy`
//! with `ignore_index=-100`; the caller divides by `count` for HF's mean (and passes
//! `grad_scale = 1/count`). No label smoothing, no class weights, no shifting of labels.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use super::fused::{check_float, f32_data, from_f32};
use crate::{DType, Error, Result, Storage, Tensor};

const OP_FWD: &str = "cross_entropy::fwd";
const OP_BWD: &str = "cross_entropy::bwd";

/// `(N, V)` of the logits, and the targets as i32 after checking each is in `0..V` or ignored.
fn check(op: &'static str, logits: &Tensor, targets: &Tensor, ignore_index: i32) -> Result<(usize, usize, Vec<i32>)> {
    check_float(logits, op)?;
    let [n, v] = logits.dims_n::<2>(op)?;
    if v == 0 {
        return Err(Error::invalid(op, format!("logits have an empty vocabulary, shape {:?}", logits.shape())));
    }
    if targets.dtype() != DType::I32 {
        return Err(Error::DTypeMismatch { op, lhs: targets.dtype(), rhs: DType::I32 });
    }
    if targets.dims() != [n] {
        return Err(Error::ShapeMismatch { op, lhs: logits.shape().clone(), rhs: targets.shape().clone() });
    }
    let tv = targets.to_vec::<i32>()?;
    if let Some(&bad) = tv.iter().find(|&&t| t != ignore_index && (t < 0 || t as usize >= v)) {
        return Err(Error::IndexOutOfRange { op, index: bad as i64, size: v });
    }
    Ok((n, v, tv))
}

/// Forward: `logits (N, V)` (f32/bf16/f16), `targets (N,)` i32 → `(loss_sum, count, lse (N,) f32)`
/// where `loss_sum = Σ (lse_i − logits[i, t_i])` over rows with `t_i != ignore_index` (an f32
/// scalar tensor, summed in f64), `count` is the number of such rows, and `lse` is each row's
/// logsumexp (computed for every row, ignored or not). A target outside `0..V` that is not
/// `ignore_index` is [`Error::IndexOutOfRange`].
pub fn fwd(logits: &Tensor, targets: &Tensor, ignore_index: i32) -> Result<(Tensor, usize, Tensor)> {
    super::same_device(OP_FWD, &[logits, targets])?;
    let (n, v, tv) = check(OP_FWD, logits, targets, ignore_index)?;
    match &**logits.storage() {
        Storage::Cpu(_) => {
            let x = f32_data(logits, OP_FWD)?;
            let (loss, count, lse) = cpu::ce_fwd(&x, &tv, v, ignore_index);
            Ok((Tensor::scalar(loss as f32), count, Tensor::from_vec(lse, n)?))
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => {
            let count = tv.iter().filter(|&&t| t != ignore_index).count();
            let (loss, lse) = cuda::fwd(logits, targets, (n, v), ignore_index, OP_FWD)?;
            Ok((loss, count, lse))
        }
    }
}

/// Forward and backward at once, for a loss that is the last op (its upstream gradient is a known
/// scalar): `(loss_sum, count, dlogits)` as [`fwd`] and [`bwd`] give them, with each row's
/// exponentials computed once. `grad_scale` is a function of `count` (e.g. `1/count` for the mean).
pub fn fwd_grad(
    logits: &Tensor,
    targets: &Tensor,
    ignore_index: i32,
    grad_scale: impl FnOnce(usize) -> f32,
) -> Result<(Tensor, usize, Tensor)> {
    super::same_device(OP_FWD, &[logits, targets])?;
    let (n, v, tv) = check(OP_FWD, logits, targets, ignore_index)?;
    let scale = grad_scale(tv.iter().filter(|&&t| t != ignore_index).count());
    match &**logits.storage() {
        Storage::Cpu(_) => {
            let x = f32_data(logits, OP_FWD)?;
            let (loss, count, dx) = cpu::ce_fwd_grad(&x, &tv, v, ignore_index, scale);
            Ok((Tensor::scalar(loss as f32), count, from_f32(dx, [n, v], logits.dtype(), OP_FWD)?))
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => {
            let count = tv.iter().filter(|&&t| t != ignore_index).count();
            let (loss, dx) = cuda::fwd_grad(logits, targets, (n, v), ignore_index, scale, OP_FWD)?;
            Ok((loss, count, dx))
        }
    }
}

/// Backward: `dlogits (N, V)` in the logits' dtype, `grad_scale · (softmax − onehot(t))` per row
/// from the forward's `lse`, and zero rows where `t == ignore_index`.
pub fn bwd(logits: &Tensor, targets: &Tensor, lse: &Tensor, ignore_index: i32, grad_scale: f32) -> Result<Tensor> {
    let (n, v, tv) = check(OP_BWD, logits, targets, ignore_index)?;
    if lse.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch { op: OP_BWD, lhs: lse.dtype(), rhs: DType::F32 });
    }
    if lse.dims() != [n] {
        return Err(Error::ShapeMismatch { op: OP_BWD, lhs: logits.shape().clone(), rhs: lse.shape().clone() });
    }
    super::same_device(OP_BWD, &[logits, targets, lse])?;
    match &**logits.storage() {
        Storage::Cpu(_) => {
            let (x, l) = (f32_data(logits, OP_BWD)?, f32_data(lse, OP_BWD)?);
            let dx = cpu::ce_bwd(&x, &tv, &l, v, ignore_index, grad_scale);
            from_f32(dx, [n, v], logits.dtype(), OP_BWD)
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::bwd(logits, targets, lse, (n, v), ignore_index, grad_scale, OP_BWD),
    }
}
