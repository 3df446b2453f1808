//! CUDA elementwise maps on resident buffers: `unary.cu` over the contiguous elements (a view is
//! made contiguous first with the copy kernel), f32/bf16/f16, result in the input dtype.

use super::UnaryOp;
use crate::cuda::{launch, resident};
use crate::{Result, Tensor};

/// `op` applied to every element of the CUDA tensor `x`.
pub fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    let name = op.name();
    let sfx = resident::sfx_any_float(name, x.dtype())?;
    let (code, p0, p1) = match op {
        UnaryOp::Exp => (0, 0.0, 0.0),
        UnaryOp::Log => (1, 0.0, 0.0),
        UnaryOp::Sqrt => (2, 0.0, 0.0),
        UnaryOp::Rsqrt => (3, 0.0, 0.0),
        UnaryOp::Neg => (4, 0.0, 0.0),
        UnaryOp::Sqr => (5, 0.0, 0.0),
        UnaryOp::Recip => (6, 0.0, 0.0),
        UnaryOp::Silu => (7, 0.0, 0.0),
        UnaryOp::Affine(m, a) => (8, m, a),
        UnaryOp::Powf(e) => (9, e, 0.0),
    };
    let (_xc, xa) = resident::contiguous(x, name)?;
    let dev = resident::device(x, name)?;
    let out = resident::zeros(&dev, x.dtype(), x.shape().clone())?;
    launch::unary(&dev, sfx, resident::addr(&out, name)?, xa, x.elem_count(), code, p0, p1)?;
    Ok(out)
}
