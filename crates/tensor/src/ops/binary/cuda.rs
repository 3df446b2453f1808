//! CUDA binary ops on resident buffers. `binary.cu` reads both operands through their broadcast
//! strides and offsets (views are never copied first) and writes a contiguous result. `sum_to`
//! moves the summed dims last in a view, makes it contiguous (copy kernel), and sums each row once
//! with `reduce.cu` (f64 accumulation, one rounding, as the CPU path).

use super::BinaryOp;
use crate::cuda::{launch, resident};
use crate::{DType, Result, Shape, Tensor};

fn code(op: BinaryOp) -> i32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Maximum => 4,
    }
}

/// `a op b` over the broadcast `shape` (dtypes and devices already checked to match).
pub fn binary(a: &Tensor, b: &Tensor, shape: &Shape, op: BinaryOp) -> Result<Tensor> {
    let name = op.name();
    let sfx = resident::sfx_any_float(name, a.dtype())?;
    let (la, lb) = (a.broadcast_as(shape.clone())?, b.broadcast_as(shape.clone())?);
    let (sa, sb) = (resident::storage(a, name)?, resident::storage(b, name)?);
    let out = resident::zeros(sa.device(), a.dtype(), shape.clone())?;
    launch::binary(
        sa.device(),
        sfx,
        resident::addr(&out, name)?,
        (sa.ptr_at(0), la.layout().offset(), la.layout().strides()),
        (sb.ptr_at(0), lb.layout().offset(), lb.layout().strides()),
        shape.dims(),
        code(op),
    )?;
    Ok(out)
}

/// `x` summed over the dims along which `shape` was broadcast to `x.shape()` (checked).
pub fn sum_to(x: &Tensor, shape: &Shape) -> Result<Tensor> {
    const OP: &str = "sum_to";
    if x.dtype() == DType::F16 {
        return sum_to(&x.to_dtype(DType::F32)?, shape)?.to_dtype(DType::F16);
    }
    let sfx = resident::sfx(OP, x.dtype())?;
    let extra = x.rank() - shape.rank();
    let (mut kept, mut summed) = (Vec::new(), Vec::new());
    for (i, &d) in x.dims().iter().enumerate() {
        if i < extra || (shape.dims()[i - extra] == 1 && d != 1) {
            summed.push(i);
        } else {
            kept.push(i);
        }
    }
    let cols: usize = summed.iter().map(|&i| x.dims()[i]).product();
    let order: Vec<usize> = kept.into_iter().chain(summed).collect();
    let (_xc, xa) = resident::contiguous(&resident::permute(x, &order)?, OP)?;
    let dev = resident::device(x, OP)?;
    let out = resident::zeros(&dev, x.dtype(), shape.clone())?;
    launch::reduce(&dev, sfx, resident::addr(&out, OP)?, xa, shape.elem_count(), cols, 0)?;
    Ok(out)
}
