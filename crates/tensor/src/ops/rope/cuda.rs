//! CUDA RoPE on resident buffers (`rope.cu`, HF half-split layout): the forward rotation and the
//! backward (inverse) rotation. The kernels take f32 `cos`/`sin` tables; tables in another dtype
//! are widened on the device. f16 inputs run through f32.

use crate::cuda::{launch, resident};
use crate::{DType, Result, Tensor};

/// Rotate `x (B, H, T, D)` by the `(T, D/2)` tables; `bwd` rotates by the negative angle.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, t: usize, d: usize, bwd: bool, op: &'static str) -> Result<Tensor> {
    let cd = resident::compute_dtype(&[x]);
    let sfx = resident::sfx(op, cd)?;
    let xk = x.to_dtype(cd)?;
    let (ck, sk) = (cos.to_dtype(DType::F32)?, sin.to_dtype(DType::F32)?);
    let (_xc, xa) = resident::contiguous(&xk, op)?;
    let ((_cc, ca), (_sc, sa)) = (resident::contiguous(&ck, op)?, resident::contiguous(&sk, op)?);
    let dev = resident::device(x, op)?;
    let y = resident::zeros(&dev, cd, x.shape().clone())?;
    let bh = x.dims()[0] * x.dims()[1];
    launch::rope(&dev, sfx, resident::addr(&y, op)?, xa, (ca, sa), bh, t, d, bwd)?;
    y.to_dtype(x.dtype())
}
