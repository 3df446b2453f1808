//! Helpers the ops' CUDA arms (`ops/<op>/cuda.rs`) share: the CUDA storage of a tensor and the
//! address of its first element, fresh output tensors on a device, making a view contiguous with
//! the copy kernel, permuted views, and the dtype suffix of a kernel. Everything stays on the
//! device: nothing here copies to or from the host.

use super::{launch, CudaDevice, CudaStorage};
use crate::{DType, Error, Layout, Result, Shape, Storage, Tensor};
use std::sync::Arc;

/// The CUDA storage of `t`, or `Error::Device` naming `op`.
pub(crate) fn storage<'a>(t: &'a Tensor, op: &'static str) -> Result<&'a CudaStorage> {
    match &**t.storage() {
        Storage::Cuda(s) => Ok(s),
        Storage::Cpu(_) => Err(Error::Device(format!("{op}: expected a tensor on CUDA, got one on Cpu"))),
    }
}

/// The device of a CUDA tensor.
pub(crate) fn device(t: &Tensor, op: &'static str) -> Result<Arc<CudaDevice>> {
    Ok(storage(t, op)?.device().clone())
}

/// `Error::Device("<op>: not implemented on CUDA (<why>)")`.
pub(crate) fn not_implemented(op: &str, why: impl std::fmt::Display) -> Error {
    Error::Device(format!("{op}: not implemented on CUDA ({why})"))
}

/// The suffix of the kernels every fused `.cu` file has: `f32` or `bf16` (f16 callers widen to
/// f32 first; other dtypes are not floats).
pub(crate) fn sfx(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        _ => Err(Error::UnsupportedDType { op, dtype }),
    }
}

/// The suffix for the elementwise files that also have f16 kernels (binary, unary, cast).
pub(crate) fn sfx_any_float(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F16 => Ok("f16"),
        d => sfx(op, d),
    }
}

/// A zeroed contiguous tensor of `dtype` and `shape` on `dev`.
pub(crate) fn zeros(dev: &Arc<CudaDevice>, dtype: DType, shape: impl Into<Shape>) -> Result<Tensor> {
    let shape = shape.into();
    let n = shape.try_elem_count("cuda::zeros")?;
    Ok(Tensor::from_cuda(CudaStorage::zeros(dev, dtype, n)?, shape))
}

/// The device address of `t`'s first element (its layout offset into the storage).
pub(crate) fn addr(t: &Tensor, op: &'static str) -> Result<u64> {
    Ok(storage(t, op)?.ptr_at(t.layout().offset()))
}

/// `t` made contiguous on its device (the copy kernel for a view, the same storage otherwise)
/// and the address of its first element. Keep the tensor alive until the launches that read it
/// are queued (buffers are freed stream-ordered, so that is enough).
pub(crate) fn contiguous(t: &Tensor, op: &'static str) -> Result<(Tensor, u64)> {
    let c = if t.is_contiguous() { t.clone() } else { materialize(t, op)? };
    let a = addr(&c, op)?;
    Ok((c, a))
}

/// A new contiguous tensor with the elements of the view `t` (copy kernel, bit exact).
pub(crate) fn materialize(t: &Tensor, op: &'static str) -> Result<Tensor> {
    let s = storage(t, op)?;
    let out = zeros(s.device(), t.dtype(), t.shape().clone())?;
    copy_into(&out, t, op)?;
    Ok(out)
}

/// A new contiguous copy of `t`, always a fresh buffer (for outputs that start as a copy).
pub(crate) fn fresh_copy(t: &Tensor, op: &'static str) -> Result<Tensor> {
    match t.layout().contiguous_range() {
        Some(r) => Ok(Tensor::from_cuda(storage(t, op)?.copy_range(r)?, t.shape().clone())),
        None => materialize(t, op),
    }
}

/// Copies the elements of `src` into the view `dst` (same shape and dtype, same device).
pub(crate) fn copy_into(dst: &Tensor, src: &Tensor, op: &'static str) -> Result<()> {
    if dst.shape() != src.shape() || dst.dtype() != src.dtype() {
        return Err(Error::invalid(
            op,
            format!("copy of {:?} {:?} into {:?} {:?}", src.shape(), src.dtype(), dst.shape(), dst.dtype()),
        ));
    }
    let (ds, ss) = (storage(dst, op)?, storage(src, op)?);
    let (dl, sl) = (dst.layout(), src.layout());
    launch::copy(
        ds.device(),
        ss.elem_bytes(),
        (ds.ptr_at(0), dl.offset(), dl.strides()),
        (ss.ptr_at(0), sl.offset(), sl.strides()),
        dst.dims(),
    )
}

/// The view of `t` with its dims in `order` (`order[i]` is the source dim of dim `i`).
pub(crate) fn permute(t: &Tensor, order: &[usize]) -> Result<Tensor> {
    let (dims, strides) = (t.dims(), t.layout().strides());
    let layout = Layout::from_parts(
        Shape::new(order.iter().map(|&i| dims[i]).collect::<Vec<_>>()),
        order.iter().map(|&i| strides[i]).collect(),
        t.layout().offset(),
    );
    Tensor::from_storage(t.storage().clone(), layout)
}

/// The dtype fused kernels run in for these inputs: their common dtype when they share f32 or
/// bf16, else f32 (f16 has no fused kernels; mixed dtypes compute in f32, as the CPU does).
pub(crate) fn compute_dtype(ts: &[&Tensor]) -> DType {
    match ts.first().map(|t| t.dtype()) {
        Some(d @ (DType::F32 | DType::BF16)) if ts.iter().all(|t| t.dtype() == d) => d,
        _ => DType::F32,
    }
}
