//! CUDA reductions on resident buffers. `reduce.cu` reduces the last dim of a contiguous
//! `(rows, cols)` buffer, so another dim is first moved last in a view and made contiguous (copy
//! kernel). Sums accumulate in f64 and round once; f16 runs through f32 (exact widening).

use super::ReduceOp;
use crate::cuda::{launch, resident};
use crate::{DType, Error, Result, Shape, Tensor};

/// Reduce the CUDA tensor `x` over `dim`.
pub fn reduce(x: &Tensor, dim: usize, keepdim: bool, op: ReduceOp) -> Result<Tensor> {
    let name = op.name();
    let r = x.shape().dim(name, dim)?;
    if r == 0 && matches!(op, ReduceOp::Max | ReduceOp::ArgMax) {
        return Err(Error::invalid(name, format!("cannot reduce empty dim {dim} of shape {:?}", x.shape())));
    }
    if x.dtype() == DType::F16 {
        let y = reduce(&x.to_dtype(DType::F32)?, dim, keepdim, op)?;
        return if op == ReduceOp::ArgMax { Ok(y) } else { y.to_dtype(DType::F16) };
    }
    let sfx = resident::sfx(name, x.dtype())?;
    let mut order: Vec<usize> = (0..x.rank()).filter(|&i| i != dim).collect();
    order.push(dim);
    let (_xc, xa) = resident::contiguous(&resident::permute(x, &order)?, name)?;
    let mut out_dims = x.dims().to_vec();
    if keepdim {
        out_dims[dim] = 1;
    } else {
        out_dims.remove(dim);
    }
    let out_shape = Shape::new(out_dims);
    let rows = out_shape.elem_count();
    let out_dtype = if op == ReduceOp::ArgMax { DType::I32 } else { x.dtype() };
    let dev = resident::device(x, name)?;
    let out = resident::zeros(&dev, out_dtype, out_shape)?;
    let code = match op {
        ReduceOp::Sum => 0,
        ReduceOp::Mean => 1,
        ReduceOp::Max => 2,
        ReduceOp::ArgMax => 3,
    };
    launch::reduce(&dev, sfx, resident::addr(&out, name)?, xa, rows, r, code)?;
    Ok(out)
}
