//! CUDA cross-entropy on resident buffers (`cross_entropy.cu`): per-row logsumexp and loss, the
//! loss sum by `reduce.cu`'s deterministic f64 row sum (rounded once to the f32 scalar, which
//! stays on the device), and the backward `grad_scale (softmax - onehot)`. The count of rows not
//! ignored comes from the host copy of the targets that `mod.rs` already checked, so the forward
//! waits for nothing. `fwd_grad` is the forward then the backward: two passes over the logits
//! (the CPU path fuses them into one). f16 logits run through f32.

use crate::cuda::{launch, resident};
use crate::{DType, Result, Tensor};

/// Forward: `(loss_sum (scalar f32), lse (n,) f32)` on the logits' device.
pub fn fwd(
    logits: &Tensor,
    targets: &Tensor,
    (n, v): (usize, usize),
    ignore: i32,
    op: &'static str,
) -> Result<(Tensor, Tensor)> {
    let cd = resident::compute_dtype(&[logits]);
    let sfx = resident::sfx(op, cd)?;
    let lk = logits.to_dtype(cd)?;
    let ((_lc, la), (_tc, ta)) = (resident::contiguous(&lk, op)?, resident::contiguous(targets, op)?);
    let dev = resident::device(logits, op)?;
    let lse = resident::zeros(&dev, DType::F32, n)?;
    let row_loss = resident::zeros(&dev, DType::F32, n)?;
    let loss = resident::zeros(&dev, DType::F32, ())?;
    let rl = resident::addr(&row_loss, op)?;
    launch::cross_entropy(&dev, sfx, (resident::addr(&lse, op)?, rl), la, ta, n, v, ignore)?;
    launch::reduce(&dev, "f32", resident::addr(&loss, op)?, rl, 1, n, 0)?;
    Ok((loss, lse))
}

/// Backward: `dlogits (n, v)` in the logits' dtype.
#[allow(clippy::too_many_arguments)]
pub fn bwd(
    logits: &Tensor,
    targets: &Tensor,
    lse: &Tensor,
    (n, v): (usize, usize),
    ignore: i32,
    grad_scale: f32,
    op: &'static str,
) -> Result<Tensor> {
    let cd = resident::compute_dtype(&[logits]);
    let sfx = resident::sfx(op, cd)?;
    let lk = logits.to_dtype(cd)?;
    let ((_lc, la), (_tc, ta)) = (resident::contiguous(&lk, op)?, resident::contiguous(targets, op)?);
    let (_sc, sa) = resident::contiguous(lse, op)?;
    let dev = resident::device(logits, op)?;
    let dx = resident::zeros(&dev, cd, [n, v])?;
    launch::cross_entropy_bwd(&dev, sfx, resident::addr(&dx, op)?, (la, ta, sa), n, v, ignore, grad_scale)?;
    dx.to_dtype(logits.dtype())
}

/// Forward and backward: `(loss_sum, dlogits)`.
pub fn fwd_grad(
    logits: &Tensor,
    targets: &Tensor,
    nv: (usize, usize),
    ignore: i32,
    grad_scale: f32,
    op: &'static str,
) -> Result<(Tensor, Tensor)> {
    let (loss, lse) = fwd(logits, targets, nv, ignore, op)?;
    Ok((loss, bwd(logits, targets, &lse, nv, ignore, grad_scale, op)?))
}
