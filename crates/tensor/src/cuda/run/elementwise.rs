//! `run_*` entry points: binary, unary, dropout masks, cast, reductions and softmax.

use super::*;
use crate::cuda::device::DeviceBuffer;
use crate::cuda::device::{CudaDevice, Launch};
use crate::cuda::launch;
use crate::cuda::params::*;
use crate::{bf16, Error, Result};
use crate::{f16, CpuStorage, Shape, Tensor};

// ---------------------------------------------------------------- binary, unary, cast

/// `a op b` with broadcasting (op: 0 add, 1 sub, 2 mul, 3 div, 4 maximum) for f32/bf16/f16
/// tensors on the host of any layout: their storages go up whole and the kernel reads them
/// through the broadcast strides. Returns the contiguous result as a host tensor.
pub fn run_binary(dev: &CudaDevice, a: &Tensor, b: &Tensor, op: i32) -> Result<Tensor> {
    const OP: &str = "cuda::run_binary";
    let shape = Shape::broadcast(OP, a.shape(), b.shape())?;
    let (la, lb) = (a.broadcast_as(shape.clone())?, b.broadcast_as(shape.clone())?);
    let n = shape.elem_count();
    macro_rules! go {
        ($t:ty, $va:expr, $vb:expr) => {{
            let (da, db) = (up::<$t>(dev, $va)?, up::<$t>(dev, $vb)?);
            let out = dev.zeros::<<$t as KernelFloat>::Dev>(n)?;
            launch::binary(
                dev,
                <$t>::SUFFIX,
                dev.ptr(&out),
                (dev.ptr(&da), la.layout().offset(), la.layout().strides()),
                (dev.ptr(&db), lb.layout().offset(), lb.layout().strides()),
                shape.dims(),
                op,
            )?;
            Tensor::from_vec(down::<$t>(dev, &out, n)?, shape)
        }};
    }
    match (a.cpu_storage(OP)?, b.cpu_storage(OP)?) {
        (CpuStorage::F32(va), CpuStorage::F32(vb)) => go!(f32, va, vb),
        (CpuStorage::BF16(va), CpuStorage::BF16(vb)) => go!(bf16, va, vb),
        (CpuStorage::F16(va), CpuStorage::F16(vb)) => go!(f16, va, vb),
        (sa, sb) => Err(Error::DTypeMismatch { op: OP, lhs: sa.dtype(), rhs: sb.dtype() }),
    }
}

/// Elementwise map (op codes in `UnaryParams`); `p0`, `p1` are affine's mul/add or powf's e.
pub fn run_unary<E: KernelFloat>(dev: &CudaDevice, x: &[E], op: i32, p0: f32, p1: f32) -> Result<Vec<E>> {
    let n = x.len();
    let (dx, out) = (up(dev, x)?, dev.zeros::<E::Dev>(n)?);
    launch::unary(dev, E::SUFFIX, dev.ptr(&out), dev.ptr(&dx), n, op, p0, p1)?;
    down(dev, &out, n)
}

/// The dropout mask of `n` elements (`ops::dropout::mask` on a flat shape), `keep` and `seed`
/// as there: the kernel alone, on a fresh zeroed buffer.
pub fn run_dropout_mask<E: KernelFloat>(dev: &CudaDevice, n: usize, keep: f32, seed: u64) -> Result<Vec<E>> {
    let dtype = match E::SUFFIX {
        "bf16" => crate::DType::BF16,
        "f16" => crate::DType::F16,
        _ => crate::DType::F32,
    };
    let (threshold, value) = crate::ops::dropout::params(keep, dtype)?;
    let out = dev.zeros::<E::Dev>(n)?;
    launch::dropout(dev, E::SUFFIX, dev.ptr(&out), seed, n, threshold, value)?;
    down(dev, &out, n)
}

/// Float cast `S -> D` (f32 <-> bf16 / f16), round-to-nearest-even.
pub fn run_cast<S: KernelFloat, D: KernelFloat>(dev: &CudaDevice, x: &[S]) -> Result<Vec<D>> {
    let n = x.len();
    let (dx, out) = (up(dev, x)?, dev.zeros::<D::Dev>(n)?);
    launch::cast(dev, S::SUFFIX, D::SUFFIX, dev.ptr(&out), dev.ptr(&dx), n)?;
    down(dev, &out, n)
}

// ---------------------------------------------------------------- reduce, softmax

/// Sum (0), mean (1) or max (2) over the last dim of `(rows, cols)`.
pub fn run_reduce<E: KernelFloat>(dev: &CudaDevice, x: &[E], cols: usize, op: i32) -> Result<Vec<E>> {
    let rows = x.len() / cols.max(1);
    let (dx, out) = (up(dev, x)?, dev.zeros::<E::Dev>(rows)?);
    launch::reduce(dev, E::SUFFIX, dev.ptr(&out), dev.ptr(&dx), rows, cols, op)?;
    down(dev, &out, rows)
}

/// Argmax over the last dim of `(rows, cols)`.
pub fn run_argmax<E: KernelFloat>(dev: &CudaDevice, x: &[E], cols: usize) -> Result<Vec<i32>> {
    let rows = x.len() / cols.max(1);
    let (dx, out) = (up(dev, x)?, dev.zeros::<i32>(rows)?);
    launch::reduce(dev, E::SUFFIX, dev.ptr(&out), dev.ptr(&dx), rows, cols, 3)?;
    down_raw(dev, &out, rows)
}

/// Blocks of the sum-of-squares first pass (fixed, so the result is deterministic).
pub const SUMSQ_BLOCKS: usize = 1024;

/// `(sum of squares in f64, its sqrt as f32)` of `x`: the global gradient norm.
pub fn run_sumsq(dev: &CudaDevice, x: &[f32]) -> Result<(f64, f32)> {
    let dx = dev.upload(x)?;
    let (sumsq, norm) = sumsq_on_device(dev, &dx, x.len())?;
    Ok((down_raw(dev, &sumsq, 1)?[0], down_raw(dev, &norm, 1)?[0]))
}

pub(super) fn sumsq_on_device(
    dev: &CudaDevice,
    x: &DeviceBuffer<f32>,
    n: usize,
) -> Result<(DeviceBuffer<f64>, DeviceBuffer<f32>)> {
    let partials = dev.zeros::<f64>(SUMSQ_BLOCKS)?;
    let (sumsq, norm) = (dev.zeros::<f64>(1)?, dev.zeros::<f32>(1)?);
    let p1 = SumSqParams { partials: dev.ptr(&partials), x: dev.ptr(x), n: n as i64 };
    dev.launch("reduce", "reduce_sumsq_fwd_f32", Launch::linear(SUMSQ_BLOCKS as u32, 256), &p1)?;
    let p2 = SumSqFinishParams {
        sumsq: dev.ptr(&sumsq),
        norm: dev.ptr(&norm),
        partials: dev.ptr(&partials),
        count: SUMSQ_BLOCKS as i32,
        _pad: 0,
    };
    dev.launch("reduce", "reduce_sumsq_finish_f32", Launch::linear(1, 1024), &p2)?;
    Ok((sumsq, norm))
}

/// Softmax over the last dim of `(rows, cols)`.
pub fn run_softmax<E: KernelFloat>(dev: &CudaDevice, x: &[E], cols: usize) -> Result<Vec<E>> {
    let rows = x.len() / cols.max(1);
    let (dx, y) = (up(dev, x)?, dev.zeros::<E::Dev>(x.len())?);
    launch::softmax(dev, E::SUFFIX, dev.ptr(&y), dev.ptr(&dx), rows, cols)?;
    down(dev, &y, x.len())
}

/// Softmax backward `dx = y (dy - sum(dy y))`.
pub fn run_softmax_bwd<E: KernelFloat>(dev: &CudaDevice, y: &[E], dy: &[E], cols: usize) -> Result<Vec<E>> {
    let rows = y.len() / cols.max(1);
    let (d_y, d_dy, dx) = (up(dev, y)?, up(dev, dy)?, dev.zeros::<E::Dev>(y.len())?);
    launch::softmax_bwd(dev, E::SUFFIX, dev.ptr(&dx), dev.ptr(&d_y), dev.ptr(&d_dy), rows, cols)?;
    down(dev, &dx, y.len())
}
