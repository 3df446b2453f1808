//! CUDA SwiGLU on resident buffers (`swiglu.cu`): `silu(g) * u` and its backward, elementwise over
//! contiguous buffers (views are copied first). f16 or mixed dtypes run through f32.

use crate::cuda::{launch, resident};
use crate::{Result, Tensor};

/// `silu(gate) * up` in gate's dtype.
pub fn fwd(gate: &Tensor, up: &Tensor, op: &'static str) -> Result<Tensor> {
    let cd = resident::compute_dtype(&[gate, up]);
    let sfx = resident::sfx(op, cd)?;
    let (gk, uk) = (gate.to_dtype(cd)?, up.to_dtype(cd)?);
    let ((_gc, ga), (_uc, ua)) = (resident::contiguous(&gk, op)?, resident::contiguous(&uk, op)?);
    let dev = resident::device(gate, op)?;
    let y = resident::zeros(&dev, cd, gate.shape().clone())?;
    launch::swiglu(&dev, sfx, resident::addr(&y, op)?, ga, ua, gate.elem_count())?;
    y.to_dtype(gate.dtype())
}

/// `(dgate, dup)` in gate's dtype.
pub fn bwd(dy: &Tensor, gate: &Tensor, up: &Tensor, op: &'static str) -> Result<(Tensor, Tensor)> {
    let cd = resident::compute_dtype(&[dy, gate, up]);
    let sfx = resident::sfx(op, cd)?;
    let (dk, gk, uk) = (dy.to_dtype(cd)?, gate.to_dtype(cd)?, up.to_dtype(cd)?);
    let (_dc, da) = resident::contiguous(&dk, op)?;
    let ((_gc, ga), (_uc, ua)) = (resident::contiguous(&gk, op)?, resident::contiguous(&uk, op)?);
    let dev = resident::device(gate, op)?;
    let dg = resident::zeros(&dev, cd, gate.shape().clone())?;
    let du = resident::zeros(&dev, cd, gate.shape().clone())?;
    let ptrs = (resident::addr(&dg, op)?, resident::addr(&du, op)?);
    launch::swiglu_bwd(&dev, sfx, ptrs, da, ga, ua, gate.elem_count())?;
    Ok((dg.to_dtype(gate.dtype())?, du.to_dtype(gate.dtype())?))
}
