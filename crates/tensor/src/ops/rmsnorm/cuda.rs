//! CUDA RMSNorm on resident buffers (`rmsnorm.cu`): forward `(y, rstd)`, backward `dx` and a
//! deterministic column-strip `dw`. Kernels read x, w (and dy) in one dtype: f32 or bf16 when the
//! inputs share it, else everything is widened to f32 on the device and the results narrowed
//! once to the inputs' dtypes, as the CPU computes.

use crate::cuda::{launch, resident};
use crate::{DType, Result, Shape, Tensor};

/// Forward over `x (rows.., C)` with `w (C,)`: `(y in x's dtype, rstd (rows..) f32)`.
pub fn fwd(x: &Tensor, w: &Tensor, eps: f32, rows: &Shape, c: usize, op: &'static str) -> Result<(Tensor, Tensor)> {
    let cd = resident::compute_dtype(&[x, w]);
    let sfx = resident::sfx(op, cd)?;
    let (xk, wk) = (x.to_dtype(cd)?, w.to_dtype(cd)?);
    let ((_xc, xa), (_wc, wa)) = (resident::contiguous(&xk, op)?, resident::contiguous(&wk, op)?);
    let dev = resident::device(x, op)?;
    let y = resident::zeros(&dev, cd, x.shape().clone())?;
    let rstd = resident::zeros(&dev, DType::F32, rows.clone())?;
    let ptrs = (resident::addr(&y, op)?, resident::addr(&rstd, op)?);
    launch::rmsnorm(&dev, sfx, ptrs, xa, wa, rows.elem_count(), c, eps)?;
    Ok((y.to_dtype(x.dtype())?, rstd))
}

/// Backward: `(dx in x's dtype, dw in w's dtype)`.
pub fn bwd(dy: &Tensor, x: &Tensor, w: &Tensor, rstd: &Tensor, c: usize, op: &'static str) -> Result<(Tensor, Tensor)> {
    let cd = resident::compute_dtype(&[dy, x, w]);
    let sfx = resident::sfx(op, cd)?;
    let (dyk, xk, wk) = (dy.to_dtype(cd)?, x.to_dtype(cd)?, w.to_dtype(cd)?);
    let (_dc, da) = resident::contiguous(&dyk, op)?;
    let (_xc, xa) = resident::contiguous(&xk, op)?;
    let (_wc, wa) = resident::contiguous(&wk, op)?;
    let (_rc, ra) = resident::contiguous(rstd, op)?;
    let dev = resident::device(x, op)?;
    let dx = resident::zeros(&dev, cd, x.shape().clone())?;
    let dw = resident::zeros(&dev, cd, c)?;
    let ptrs = (resident::addr(&dx, op)?, resident::addr(&dw, op)?);
    launch::rmsnorm_bwd(&dev, sfx, ptrs, da, xa, wa, ra, rstd.elem_count(), c)?;
    Ok((dx.to_dtype(x.dtype())?, dw.to_dtype(w.dtype())?))
}
