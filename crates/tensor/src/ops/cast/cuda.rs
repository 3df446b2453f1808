//! CUDA casts on resident buffers with `cast.cu`: f32 <-> bf16/f16 (round-to-nearest-even, bit
//! exact with the CPU) and i32/u8 <-> f32 (Rust's `as`) in one launch; every other pair in two
//! launches through f32, which is the path the CPU takes too (`D::from_f32(s.to_f32())`).

use crate::cuda::{launch, resident};
use crate::{DType, Result, Tensor};

/// `x` as `dtype` (not its own dtype), contiguous, on `x`'s device.
pub fn cast(x: &Tensor, dtype: DType) -> Result<Tensor> {
    const OP: &str = "to_dtype";
    let from = x.dtype();
    if from != DType::F32 && dtype != DType::F32 {
        return cast(&cast(x, DType::F32)?, dtype);
    }
    let (_xc, xa) = resident::contiguous(x, OP)?;
    let dev = resident::device(x, OP)?;
    let out = resident::zeros(&dev, dtype, x.shape().clone())?;
    launch::cast(&dev, from.as_str(), dtype.as_str(), resident::addr(&out, OP)?, xa, x.elem_count())?;
    Ok(out)
}
