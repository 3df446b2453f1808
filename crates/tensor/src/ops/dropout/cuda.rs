//! CUDA dropout masks (`dropout.cu`): one grid-stride launch writes every element of a fresh
//! contiguous tensor from `(seed, index)`, so nothing is generated or uploaded by the host.
//! The threshold and the kept value come checked from `mod.rs`.

use crate::cuda::{launch, resident, select};
use crate::{DType, Device, Result, Shape, Tensor};

/// The mask of `shape` (`n` elements) on `device`, `(threshold, value)` from `dropout::params`.
pub fn mask(
    shape: Shape,
    n: usize,
    (threshold, value): (u32, f32),
    seed: u64,
    dtype: DType,
    device: Device,
    op: &'static str,
) -> Result<Tensor> {
    let sfx = resident::sfx_any_float(op, dtype)?;
    let dev = select(device)?;
    let out = resident::zeros(&dev, dtype, shape)?;
    launch::dropout(&dev, sfx, resident::addr(&out, op)?, seed, n, threshold, value)?;
    Ok(out)
}
