//! CUDA softmax over the last dim on resident buffers (`softmax.cu`, one block per row), forward
//! and backward; views are made contiguous first, f16 runs through f32.

use crate::cuda::{launch, resident};
use crate::{DType, Result, Tensor};

/// `softmax_last` of the CUDA tensor `x` (rank >= 1, checked).
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax_last";
    if x.dtype() == DType::F16 {
        return softmax_last(&x.to_dtype(DType::F32)?)?.to_dtype(DType::F16);
    }
    let sfx = resident::sfx(OP, x.dtype())?;
    let cols = x.dims()[x.rank() - 1];
    let rows = x.dims()[..x.rank() - 1].iter().product();
    let (_xc, xa) = resident::contiguous(x, OP)?;
    let dev = resident::device(x, OP)?;
    let y = resident::zeros(&dev, x.dtype(), x.shape().clone())?;
    if cols > 0 {
        launch::softmax(&dev, sfx, resident::addr(&y, OP)?, xa, rows, cols)?;
    }
    Ok(y)
}

/// `softmax_last_bwd` on CUDA tensors of one shape and dtype (checked).
pub fn softmax_last_bwd(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    const OP: &str = "softmax_last_bwd";
    if y.dtype() == DType::F16 {
        let (y32, dy32) = (y.to_dtype(DType::F32)?, dy.to_dtype(DType::F32)?);
        return softmax_last_bwd(&y32, &dy32)?.to_dtype(DType::F16);
    }
    let sfx = resident::sfx(OP, y.dtype())?;
    let cols = y.dims()[y.rank() - 1];
    let rows = y.dims()[..y.rank() - 1].iter().product();
    let ((_yc, ya), (_dc, da)) = (resident::contiguous(y, OP)?, resident::contiguous(dy, OP)?);
    let dev = resident::device(y, OP)?;
    let dx = resident::zeros(&dev, y.dtype(), y.shape().clone())?;
    if cols > 0 {
        launch::softmax_bwd(&dev, sfx, resident::addr(&dx, OP)?, ya, da, rows, cols)?;
    }
    Ok(dx)
}
