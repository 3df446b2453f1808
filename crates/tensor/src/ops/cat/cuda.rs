//! CUDA concatenation on resident buffers: one copy-kernel launch per input, from the input's
//! layout (any view) into its window of the output (a narrowed view of a contiguous tensor).
//! Any dtype, bit exact.

use crate::cuda::resident;
use crate::{Result, Shape, Tensor};

/// Concatenate `tensors` along `dim` (dtypes, shapes and devices already checked).
pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
    const OP: &str = "cat";
    let first = tensors[0];
    let mut dims = first.dims().to_vec();
    dims[dim] = tensors.iter().map(|t| t.dims()[dim]).sum();
    let out = resident::zeros(&resident::device(first, OP)?, first.dtype(), Shape::new(dims))?;
    let mut at = 0;
    for t in tensors {
        let len = t.dims()[dim];
        resident::copy_into(&out.narrow(dim, at, len)?, t, OP)?;
        at += len;
    }
    Ok(out)
}
