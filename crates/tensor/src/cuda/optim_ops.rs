//! The optimizer step on resident CUDA tensors: 32-bit and blockwise 8-bit AdamW, the gradient
//! norm and clipping by it, each one launch (two for the norm) of `kernels/adamw.cu` /
//! `kernels/reduce.cu` on buffers that stay on the device, plus the host-to-device write a staged
//! (host) optimizer needs to put its result back.
//!
//! **These functions mutate their operands in place through shared storage**: a `Tensor` is an
//! `Arc` over its buffer, and the kernels write through the device addresses of `p`, `m`, `v`,
//! the 8-bit state and `g` (clipping), so every tensor (clone or view) over the same storage sees
//! the update. That is what the trainer wants (its named parameter views alias one flat buffer);
//! the caller must not expect copy-on-write.
//!
//! Reference: trainer `optim::adamw::adamw_kernel`, `optim::dynamic_map::adam8bit_block`,
//! `optim::global_grad_norm` and `clip_grad_norm`; the kernels are tested bit-exact against them
//! through the host entry points in [`run`](super::run) (`run_adamw`, `run_adamw8bit`,
//! `run_clip`). Operands must be contiguous f32 (codes u8) tensors on one CUDA device; anything
//! else is an `Error`, never a panic. Deliberately not here: the step count and the per-step
//! scalars (the caller forms [`AdamStep`] exactly as the CPU forms `AdamConsts`), segment
//! handling (the 8-bit caller launches per tensor), the paging of managed state (the caller of
//! [`adamw_step_raw`] makes its pages resident and keeps them so for the launch).

use super::device::{CudaDevice, Launch};
use super::params::{ClipParams, SumSqFinishParams, SumSqParams};
use super::run::{launch_adamw, launch_adamw8bit, SUMSQ_BLOCKS};
use super::{resident, CudaStorage};
use crate::{CpuStorage, DType, Device, Error, Result, Tensor};

/// The per-step AdamW scalars (f64 formed, rounded once to f32), as the kernels take them.
pub use super::run::AdamStep;

/// The CUDA storage of `t`, checked to be a contiguous tensor of `dtype`.
fn operand<'a>(op: &'static str, what: &str, t: &'a Tensor, dtype: DType) -> Result<&'a CudaStorage> {
    let s = resident::storage(t, op).map_err(|_| {
        Error::Device(format!("{op}: {what} must be on a CUDA device, got a tensor on {:?}", t.device()))
    })?;
    if t.dtype() != dtype {
        return Err(Error::invalid(op, format!("{what} must be {dtype:?}, got {:?}", t.dtype())));
    }
    if !t.is_contiguous() {
        return Err(Error::invalid(op, format!("{what} must be contiguous, got a view of shape {:?}", t.dims())));
    }
    Ok(s)
}

/// Checks that `t` has `len` elements and lives on `dev`'s ordinal.
fn same(op: &'static str, what: &str, t: &Tensor, s: &CudaStorage, dev: &CudaDevice, len: usize) -> Result<()> {
    if s.ordinal() != dev.ordinal() {
        return Err(Error::Device(format!(
            "{op}: {what} is on {:?}, the other operands on {:?}",
            t.device(),
            Device::Cuda(dev.ordinal())
        )));
    }
    if t.elem_count() != len {
        return Err(Error::invalid(op, format!("{what} has {} elements, expected {len}", t.elem_count())));
    }
    Ok(())
}

/// The address of `t`'s first element (its layout offset included).
fn addr(t: &Tensor, s: &CudaStorage) -> u64 {
    s.ptr_at(t.layout().offset())
}

/// 32-bit AdamW in place: `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²; p *= decay;
/// p += step_size · m / (sqrt(v) + eps_hat)`, all f32, bit for bit with the CPU's `adamw_kernel`.
/// `p`, `g`, `m`, `v`: contiguous f32 tensors of one length on one CUDA device; `p`, `m` and `v`
/// are written through their (shared) storage. Queued on the device's stream, not waited for.
pub fn adamw_step(p: &Tensor, g: &Tensor, m: &Tensor, v: &Tensor, c: AdamStep) -> Result<()> {
    const OP: &str = "optim_ops::adamw_step";
    let ps = operand(OP, "p", p, DType::F32)?;
    let dev = ps.device();
    let n = p.elem_count();
    let (gs, ms, vs) =
        (operand(OP, "g", g, DType::F32)?, operand(OP, "m", m, DType::F32)?, operand(OP, "v", v, DType::F32)?);
    for (what, t, s) in [("g", g, gs), ("m", m, ms), ("v", v, vs)] {
        same(OP, what, t, s, dev, n)?;
    }
    if n == 0 {
        return Ok(());
    }
    launch_adamw(dev, [addr(p, ps), addr(g, gs), addr(m, ms), addr(v, vs)], n, c)
}

/// [`adamw_step`] on elements `range` of `p` and `g` with m and v given as raw device addresses:
/// the paged optimizer's entry, whose state lives in CUDA managed-memory pages (paged-alloc's
/// `CudaManaged`) that are not tensors. `m_ptr` and `v_ptr` address `range.len()` f32 each, the
/// state of `p[range]`; the kernel and the arithmetic are [`adamw_step`]'s, bit for bit. `p` and
/// `g` are checked as there (contiguous f32, one CUDA device, one length); `range` must lie inside
/// them and the pointers must be non-null and 4-byte aligned, else an `Error`. Queued on the
/// device's stream, not waited for.
///
/// # Safety
/// `m_ptr` and `v_ptr` must each address `range.len()` f32s (disjoint from each other and from
/// `p`, `g`) that are device-accessible from `p`'s context **for the whole duration of the
/// launch**, which is asynchronous: for managed pages that means they stay allocated, and are not
/// paged out or written by the host, until `p`'s device stream has been synchronised (or the
/// page-out is ordered after this launch on the same stream). The caller upholds that by
/// synchronising the device ([`super::CudaDevice::synchronize`]) before it lets the allocator
/// release, evict, read or write the pages.
pub unsafe fn adamw_step_raw(
    p: &Tensor,
    g: &Tensor,
    range: std::ops::Range<usize>,
    m_ptr: u64,
    v_ptr: u64,
    c: AdamStep,
) -> Result<()> {
    const OP: &str = "optim_ops::adamw_step_raw";
    let ps = operand(OP, "p", p, DType::F32)?;
    let dev = ps.device();
    let n = p.elem_count();
    let gs = operand(OP, "g", g, DType::F32)?;
    same(OP, "g", g, gs, dev, n)?;
    if range.start > range.end || range.end > n {
        return Err(Error::invalid(OP, format!("range {range:?} outside the {n} elements of p and g")));
    }
    for (what, ptr) in [("m", m_ptr), ("v", v_ptr)] {
        if ptr == 0 || ptr % 4 != 0 {
            return Err(Error::invalid(OP, format!("{what} address {ptr:#x} is null or not 4-byte aligned")));
        }
    }
    let len = range.end - range.start;
    if len == 0 {
        return Ok(());
    }
    let (pa, ga) = (ps.ptr_at(p.layout().offset() + range.start), gs.ptr_at(g.layout().offset() + range.start));
    launch_adamw(dev, [pa, ga, m_ptr, v_ptr], len, c)
}

/// What the blockwise 8-bit kernel reads and writes besides `p` and `g`: for `n` parameters,
/// the codes of m (signed map) and v (unsigned map), `n` u8 each, one absmax of each per
/// 256-element block (`ceil(n/256)` f32 each, block 0 starting at the first parameter), and the
/// two 256-entry dynamic maps (f32, trainer `DynamicMap::{Signed, Unsigned}.values()`).
#[derive(Clone, Copy, Debug)]
pub struct Adam8bitTensors<'a> {
    pub m_codes: &'a Tensor,
    pub v_codes: &'a Tensor,
    pub absmax_m: &'a Tensor,
    pub absmax_v: &'a Tensor,
    pub signed_map: &'a Tensor,
    pub unsigned_map: &'a Tensor,
}

/// bitsandbytes' blockwise 8-bit AdamW in place over one tensor's parameters (quantization blocks
/// of 256 from `p`'s first element): dequantize m and v, update them in f32, new block absmax,
/// update `p`, requantize; a non-finite gradient leaves its parameter alone and zeroes its state.
/// Bit for bit with the CPU's `adam8bit_block`. `p`, `g`, the codes and absmax are written
/// through their (shared) storage; launch per tensor when several share a flat buffer (pass
/// `narrow`ed views, which stay contiguous). Queued on the device's stream, not waited for.
pub fn adamw8bit_step(p: &Tensor, g: &Tensor, s: Adam8bitTensors<'_>, c: AdamStep) -> Result<()> {
    const OP: &str = "optim_ops::adamw8bit_step";
    let ps = operand(OP, "p", p, DType::F32)?;
    let dev = ps.device();
    let n = p.elem_count();
    let nb = n.div_ceil(256);
    let checked = [
        ("g", g, DType::F32, n),
        ("m_codes", s.m_codes, DType::U8, n),
        ("v_codes", s.v_codes, DType::U8, n),
        ("absmax_m", s.absmax_m, DType::F32, nb),
        ("absmax_v", s.absmax_v, DType::F32, nb),
        ("signed_map", s.signed_map, DType::F32, 256),
        ("unsigned_map", s.unsigned_map, DType::F32, 256),
    ];
    let mut a = [0u64; 7];
    for (slot, (what, t, dtype, len)) in a.iter_mut().zip(checked) {
        let st = operand(OP, what, t, dtype)?;
        same(OP, what, t, st, dev, len)?;
        *slot = addr(t, st);
    }
    if n == 0 {
        return Ok(());
    }
    let [g, m_codes, v_codes, absmax_m, absmax_v, signed_map, unsigned_map] = a;
    launch_adamw8bit(dev, [addr(p, ps), g, m_codes, v_codes, absmax_m, absmax_v, signed_map, unsigned_map], n, c)
}

/// The L2 norm of `g` (a contiguous f32 CUDA tensor) as a one-element f32 tensor on its device,
/// without a host round trip: each thread, each block's tree and the final pass accumulate the
/// squares in **f64** over a fixed grid (deterministic), and `sqrt` of the f64 sum is rounded to
/// f32 once, as the CPU's `global_grad_norm` does; only the summation order differs from the
/// CPU's sequential f64 sum, so the f32 results agree except on a rounding tie.
pub fn grad_norm_device(g: &Tensor) -> Result<Tensor> {
    const OP: &str = "optim_ops::grad_norm";
    let gs = operand(OP, "g", g, DType::F32)?;
    let dev = gs.device();
    let norm = resident::zeros(dev, DType::F32, [1])?;
    let ns = resident::storage(&norm, OP)?;
    // Scratch freed stream-ordered when these drop, after the launches below have run.
    let partials = dev.zeros::<f64>(SUMSQ_BLOCKS)?;
    let sumsq = dev.zeros::<f64>(1)?;
    let p1 = SumSqParams { partials: dev.ptr(&partials), x: addr(g, gs), n: g.elem_count() as i64 };
    dev.launch("reduce", "reduce_sumsq_fwd_f32", Launch::linear(SUMSQ_BLOCKS as u32, 256), &p1)?;
    let p2 = SumSqFinishParams {
        sumsq: dev.ptr(&sumsq),
        norm: addr(&norm, ns),
        partials: dev.ptr(&partials),
        count: SUMSQ_BLOCKS as i32,
        _pad: 0,
    };
    dev.launch("reduce", "reduce_sumsq_finish_f32", Launch::linear(1, 1024), &p2)?;
    Ok(norm)
}

/// [`grad_norm_device`] brought to the host (waits for the stream).
pub fn grad_norm(g: &Tensor) -> Result<f32> {
    grad_norm_device(g)?.to_scalar()
}

/// torch's `clip_grad_norm_` given the norm on the device (from [`grad_norm_device`]): scales
/// `g` in place, through its shared storage, by `max_norm / (norm + 1e-6)` when the norm is
/// finite and that factor is below 1; otherwise leaves `g` untouched. The test runs on the device
/// (no host round trip). `norm`: a one-element f32 tensor on `g`'s device.
pub fn clip_by_norm(g: &Tensor, norm: &Tensor, max_norm: f32) -> Result<()> {
    const OP: &str = "optim_ops::clip_by_norm";
    let gs = operand(OP, "g", g, DType::F32)?;
    let dev = gs.device();
    let ns = operand(OP, "norm", norm, DType::F32)?;
    same(OP, "norm", norm, ns, dev, 1)?;
    let n = g.elem_count();
    if n == 0 {
        return Ok(());
    }
    let p = ClipParams { g: addr(g, gs), norm: addr(norm, ns), n: n as i64, max_norm, _pad: 0 };
    dev.launch("adamw", "adamw_clip_fwd_f32", Launch::elementwise(n), &p)
}

/// The trainer's `clip_grad_norm` on the device: the norm, then clipping by it (no host round
/// trip between them), and the pre-clip norm brought back (waits for the stream).
pub fn clip_grad_norm(g: &Tensor, max_norm: f32) -> Result<f32> {
    let norm = grad_norm_device(g)?;
    clip_by_norm(g, &norm, max_norm)?;
    norm.to_scalar()
}

/// `len` zeroed elements of `dtype` on CUDA `device`, shape `(len,)`: optimizer state.
pub fn zeros(device: Device, dtype: DType, len: usize) -> Result<Tensor> {
    resident::zeros(&super::select(device)?, dtype, [len])
}

/// Writes the host values `src` into the elements of the CUDA f32 tensor `dst` (any view of its
/// storage), in row-major order, in place through the shared storage: an upload to a scratch
/// buffer and the copy kernel into `dst`'s view. `src` must have `dst`'s element count.
pub fn write_f32(dst: &Tensor, src: Vec<f32>) -> Result<()> {
    const OP: &str = "optim_ops::write_f32";
    let ds = resident::storage(dst, OP)?;
    if dst.dtype() != DType::F32 {
        return Err(Error::invalid(OP, format!("destination must be F32, got {:?}", dst.dtype())));
    }
    let n = src.len();
    if n != dst.elem_count() {
        return Err(Error::invalid(OP, format!("{n} values for a tensor of {} elements", dst.elem_count())));
    }
    if n == 0 {
        return Ok(());
    }
    let up = CudaStorage::upload(ds.device(), &CpuStorage::F32(src), 0..n)?;
    let up = Tensor::from_cuda(up, dst.shape().clone());
    resident::copy_into(dst, &up, OP)
}
