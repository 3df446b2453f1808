//! Optimizers over flat parameter and gradient *tensors* on any device: the [`TensorOptimizer`]
//! trait, [`Staged`] (a host [`Optimizer`] behind a download/upload, any device), and with
//! feature `cuda` [`CudaAdamW`] / [`CudaAdamW8bit`], whose state lives on the GPU and whose step
//! is one kernel launch per run of tensors (`tensor::cuda::optim_ops`, kernels/adamw.cu), and
//! [`CudaPagedAdamW`], whose m and v live in pages of CUDA managed memory (paged-alloc) and whose
//! step is one launch of the same kernel per page (paged_device.rs).
//!
//! Every optimizer here saves exactly the [`OptimizerState`] of its host twin (`CudaAdamW` ↔
//! [`AdamW`](super::AdamW) / [`PagedAdamW`](super::PagedAdamW): kind `adamw`, `m`, `v`;
//! `CudaAdamW8bit` ↔ [`AdamW8bit`](super::AdamW8bit): kind `adamw8bit`, `m`, `v`, `m_q8`,
//! `v_q8`, `absmax_m`, `absmax_v`), and the kernels are bit-exact with the host kernels, so a
//! checkpoint written on one device resumes on the other bit-identically.
//!
//! Updates are in place. On CUDA the kernels write through the tensor's storage, so every view
//! of it (the trainer's named LoRA views) sees the new values. On the CPU, Rust allows writing a
//! buffer only through its one owner: when `params` is the only handle on its storage the
//! elements are updated in that same allocation; when other tensors share it, `*params` is given
//! fresh storage holding the update and the other handles keep the old values (as
//! `Tensor::addmm_into` does). On CUDA `paged-adamw` is [`CudaPagedAdamW`] (falling back to
//! [`Staged`] over the host paged optimizer, with the reason on stderr, when the managed backend
//! cannot be created). Deliberately not here: `paged-adamw-8bit` state in managed memory, so on
//! CUDA that one runs as [`Staged`]: state paged on the host, params and grads crossing the bus
//! once each per step.

use std::borrow::Cow;
use std::sync::Arc;

use tensor::{CpuStorage, DType, Device, Storage, Tensor};

use super::{clip_grad_norm, global_grad_norm, AdamWConfig, Optimizer, OptimizerState, Result};

/// An optimizer over one flat parameter tensor.
pub trait TensorOptimizer: Send {
    fn name(&self) -> &'static str;
    /// One update of `params` from `grads`: flat (contiguous) f32 tensors of the optimizer's
    /// length, in place (see the module docs); `lr` comes from the schedule. Step counting starts
    /// at 1 on the first call. An error leaves the step count unchanged.
    fn step(&mut self, params: &mut Tensor, grads: &Tensor, lr: f32) -> Result<()>;
    /// Steps taken so far.
    fn steps(&self) -> u64;
    /// Bytes of optimizer state, wherever it lives.
    fn state_bytes(&self) -> usize;
    /// The state as host buffers, named as the host optimizer of the same kind names them.
    fn save_state(&self) -> Result<OptimizerState>;
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// `t` is f32 and contiguous (a flat buffer, whatever its shape).
fn check_flat(op: &'static str, what: &str, t: &Tensor) -> tensor::Result<()> {
    if t.dtype() != DType::F32 {
        return Err(tensor::Error::invalid(op, format!("{what} must be F32, got {:?}", t.dtype())));
    }
    if !t.is_contiguous() {
        return Err(tensor::Error::invalid(
            op,
            format!("{what} must be one contiguous buffer, got a strided view of shape {:?}", t.dims()),
        ));
    }
    Ok(())
}

/// The elements of the flat f32 tensor `t` on the host: borrowed on the CPU, downloaded otherwise.
fn host_f32<'a>(op: &'static str, what: &str, t: &'a Tensor) -> tensor::Result<Cow<'a, [f32]>> {
    check_flat(op, what, t)?;
    Ok(match t.device() {
        Device::Cpu => Cow::Borrowed(t.as_slice::<f32>()?),
        Device::Cuda(_) => Cow::Owned(t.to_vec::<f32>()?),
    })
}

/// Runs `f` on the elements of the flat f32 CPU tensor `t`, in place when `t` is the only
/// handle on its storage, else on a copy that becomes `t`'s new storage (module docs).
fn cpu_update<R>(t: &mut Tensor, f: impl FnOnce(&mut [f32]) -> Result<R>) -> Result<R> {
    let layout = t.layout().clone();
    let Some(range) = layout.contiguous_range() else {
        return Err(tensor::Error::invalid("cpu_update", "not contiguous").into());
    };
    // Take `t` apart so that its `Arc` is the only one left when no other tensor shares it.
    let placeholder = Tensor::zeros([0], DType::F32);
    let mut storage = Arc::clone(std::mem::replace(t, placeholder).storage());
    if let Some(Storage::Cpu(CpuStorage::F32(v))) = Arc::get_mut(&mut storage) {
        let r = f(&mut v[range]);
        // Cannot fail: the same layout over the same storage was valid a moment ago.
        *t = Tensor::from_storage(storage, layout)?;
        return r;
    }
    let old = Tensor::from_storage(storage, layout)?;
    let mut v = match old.as_slice::<f32>() {
        Ok(s) => s.to_vec(),
        Err(e) => {
            *t = old;
            return Err(e.into());
        }
    };
    let r = f(&mut v);
    // On an error `t` keeps its old storage, as the in-place path would have left it.
    *t = match &r {
        Ok(_) => Tensor::from_vec(v, old.shape().clone())?,
        Err(_) => old,
    };
    r
}

/// Runs `f` on the elements of the flat f32 tensor `t` and makes its result `t`'s elements: in
/// place on the CPU ([`cpu_update`]); on CUDA a download, `f`, and an upload into the same
/// device storage when `f` succeeds.
fn update_in_place<R>(
    op: &'static str,
    what: &str,
    t: &mut Tensor,
    f: impl FnOnce(&mut [f32]) -> Result<R>,
) -> Result<R> {
    check_flat(op, what, t)?;
    match t.device() {
        Device::Cpu => cpu_update(t, f),
        Device::Cuda(_) => cuda_write_back(op, t, f),
    }
}

#[cfg(feature = "cuda")]
fn cuda_write_back<R>(_op: &'static str, t: &Tensor, f: impl FnOnce(&mut [f32]) -> Result<R>) -> Result<R> {
    let mut host = t.to_vec::<f32>()?;
    let r = f(&mut host)?;
    tensor::cuda::optim_ops::write_f32(t, host)?;
    Ok(r)
}

#[cfg(not(feature = "cuda"))]
fn cuda_write_back<R>(op: &'static str, t: &Tensor, _f: impl FnOnce(&mut [f32]) -> Result<R>) -> Result<R> {
    Err(no_cuda(op, t.device()).into())
}

#[cfg(not(feature = "cuda"))]
fn no_cuda(op: &'static str, device: Device) -> tensor::Error {
    tensor::Error::Device(format!("{op}: a tensor on {device:?} needs the trainer built with feature `cuda`"))
}

/// A host [`Optimizer`] over tensors on any device: each step brings the gradients and the
/// parameters to the host, runs the host step, and writes the parameters back into the same
/// tensor storage (module docs). Bit-identical to the host optimizer, state included (it *is*
/// the host optimizer). On CUDA this is the path of the paged optimizers.
pub struct Staged(Box<dyn Optimizer>);

impl Staged {
    pub fn new(inner: Box<dyn Optimizer>) -> Self {
        Self(inner)
    }
    /// The host optimizer.
    pub fn inner(&self) -> &dyn Optimizer {
        self.0.as_ref()
    }
    pub fn into_inner(self) -> Box<dyn Optimizer> {
        self.0
    }
}

impl TensorOptimizer for Staged {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn step(&mut self, params: &mut Tensor, grads: &Tensor, lr: f32) -> Result<()> {
        const OP: &str = "staged optimizer step";
        check_flat(OP, "params", params)?;
        let g = host_f32(OP, "grads", grads)?;
        let opt = &mut self.0;
        update_in_place(OP, "params", params, |p| opt.step(p, &g, lr))
    }
    fn steps(&self) -> u64 {
        self.0.steps()
    }
    fn state_bytes(&self) -> usize {
        self.0.state_bytes()
    }
    fn save_state(&self) -> Result<OptimizerState> {
        self.0.save_state()
    }
    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        self.0.load_state(state)
    }
}

/// The optimizer named on the command line (`crate::train::make_optimizer`'s names: `adamw`,
/// `paged-adamw`, `paged-adamw-8bit`) over a flat parameter tensor on `device`, made of tensors
/// of `segments` sizes. CPU: [`Staged`] over the host optimizer. CUDA: `adamw` is [`CudaAdamW`],
/// `paged-adamw` is [`CudaPagedAdamW`] (or, when the managed-memory backend cannot be created,
/// e.g. no concurrent managed access or too little free memory, [`Staged`] over the host paged
/// optimizer, the reason printed on stderr); `paged-adamw-8bit` is [`Staged`] (module docs).
pub fn make_tensor_optimizer(
    name: &str,
    segments: &[usize],
    cfg: AdamWConfig,
    device: Device,
) -> std::result::Result<Box<dyn TensorOptimizer>, String> {
    let staged = || -> std::result::Result<Box<dyn TensorOptimizer>, String> {
        Ok(Box::new(Staged::new(crate::train::make_optimizer(name, segments, cfg)?)))
    };
    match device {
        Device::Cpu => staged(),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => match name {
            "adamw" => Ok(Box::new(CudaAdamW::new(cfg, segments.iter().sum(), device).map_err(|e| e.to_string())?)),
            "paged-adamw" => match CudaPagedAdamW::new(cfg, segments.iter().sum(), device) {
                Ok(o) => Ok(Box::new(o)),
                Err(e) => {
                    eprintln!(
                        "paged-adamw on {device:?}: state in CUDA managed memory unavailable ({e}); \
                         staging the host paged optimizer instead"
                    );
                    staged()
                }
            },
            _ => staged(),
        },
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Err(no_cuda("make_tensor_optimizer", device).to_string()),
    }
}

/// L2 norm of all gradients, equal to [`global_grad_norm`] (f64 accumulation, rounded to f32
/// once). On the CPU it *is* that function. On CUDA the kernels (reduce.cu) also accumulate the
/// squares in f64 (each thread, each block's tree and the final pass over the 1024 block sums,
/// a fixed order, so deterministic) and round `sqrt` of the f64 sum to f32 once; only the order
/// of the f64 additions differs from the CPU's sequential sum, so the f32 norms agree unless the
/// two f64 sums fall on either side of an f32 rounding boundary (relative gap ~1e-13 vs 6e-8).
pub fn grad_norm_tensor(grads: &Tensor) -> Result<f32> {
    const OP: &str = "grad_norm_tensor";
    if grads.dtype() != DType::F32 {
        return Err(tensor::Error::invalid(OP, format!("grads must be F32, got {:?}", grads.dtype())).into());
    }
    match grads.device() {
        Device::Cpu => Ok(match grads.as_slice::<f32>() {
            Ok(g) => global_grad_norm(g),
            Err(_) => global_grad_norm(&grads.to_vec::<f32>()?),
        }),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => Ok(tensor::cuda::optim_ops::grad_norm(&grads.contiguous()?)?),
        #[cfg(not(feature = "cuda"))]
        d @ Device::Cuda(_) => Err(no_cuda(OP, d).into()),
    }
}

/// [`clip_grad_norm`] on a flat f32 tensor, in place (module docs): scales `grads` by
/// `max_norm / (norm + 1e-6)` when that is below 1 and returns the pre-clip norm; a non-finite
/// norm leaves `grads` untouched. On CUDA the norm never leaves the device before the clip.
pub fn clip_grad_norm_tensor(grads: &mut Tensor, max_norm: f32) -> Result<f32> {
    const OP: &str = "clip_grad_norm_tensor";
    check_flat(OP, "grads", grads)?;
    match grads.device() {
        Device::Cpu => cpu_update(grads, |g| Ok(clip_grad_norm(g, max_norm))),
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => Ok(tensor::cuda::optim_ops::clip_grad_norm(grads, max_norm)?),
        #[cfg(not(feature = "cuda"))]
        d @ Device::Cuda(_) => Err(no_cuda(OP, d).into()),
    }
}

// ------------------------------------------------------------------ launch plan of the 8-bit step

/// A run of parameters updated by one launch: `len` elements at `param` in the flat parameters
/// and at `state` in a state buffer.
#[cfg(any(test, feature = "cuda"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub param: usize,
    pub state: usize,
    pub len: usize,
}

/// The state layout of [`AdamW8bit`](super::AdamW8bit) (engine.rs: tensors of at least
/// `min_8bit` elements get 8-bit state, each padded to whole 256-element blocks; smaller
/// non-empty ones 32-bit state, back to back) as launches: adjacent tensors merge into one run
/// when the parameters and the state continue and, for 8-bit, the first fills whole blocks (so
/// the kernel's blocks, counted from the run's start, are still each tensor's blocks).
#[cfg(any(test, feature = "cuda"))]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub n: usize,
    pub f_runs: Vec<Run>,
    pub f_len: usize,
    pub q_runs: Vec<Run>,
    /// 8-bit state length, each tensor padded to whole blocks.
    pub q_len: usize,
}

#[cfg(any(test, feature = "cuda"))]
impl Plan {
    pub fn new(segments: &[usize], min_8bit: usize) -> Self {
        use super::QUANT_BLOCK;
        let mut p = Plan::default();
        for &len in segments {
            if len >= min_8bit && len > 0 {
                let run = Run { param: p.n, state: p.q_len, len };
                match p.q_runs.last_mut() {
                    Some(r) if r.len % QUANT_BLOCK == 0 && r.param + r.len == run.param => r.len += len,
                    _ => p.q_runs.push(run),
                }
                p.q_len += len.div_ceil(QUANT_BLOCK) * QUANT_BLOCK;
            } else if len > 0 {
                let run = Run { param: p.n, state: p.f_len, len };
                match p.f_runs.last_mut() {
                    Some(r) if r.param + r.len == run.param => r.len += len,
                    _ => p.f_runs.push(run),
                }
                p.f_len += len;
            }
            p.n += len;
        }
        p
    }
}

#[cfg(feature = "cuda")]
use cuda::{check_operand, kernel_step};
#[cfg(feature = "cuda")]
pub use cuda::{CudaAdamW, CudaAdamW8bit};

#[cfg(any(test, feature = "cuda"))]
#[path = "paged_device.rs"]
mod paged_device;
#[cfg(feature = "cuda")]
pub use paged_device::CudaPagedAdamW;
#[cfg(test)]
pub(crate) use paged_device::{f32_units, PagedState};

#[cfg(feature = "cuda")]
mod cuda {
    use tensor::cuda::optim_ops::{self, Adam8bitTensors, AdamStep};
    use tensor::{DType, Device, Tensor};

    use super::super::{
        check_len, AdamConsts, AdamWConfig, DynamicMap, OptimError, OptimizerState, Result, StateTensor, MIN_8BIT_SIZE,
        QUANT_BLOCK,
    };
    use super::{check_flat, Plan, TensorOptimizer};

    /// The kernels' copy of the host's per-step scalars (the same f32 values).
    pub(super) fn kernel_step(c: &AdamConsts) -> AdamStep {
        AdamStep {
            b1: c.b1,
            one_minus_b1: c.one_minus_b1,
            b2: c.b2,
            one_minus_b2: c.one_minus_b2,
            decay: c.decay,
            step_size: c.step_size,
            eps_hat: c.eps_hat,
        }
    }

    /// `t` is a flat f32 tensor of `n` elements on `device`.
    pub(super) fn check_operand(
        op: &'static str,
        what: &'static str,
        t: &Tensor,
        device: Device,
        n: usize,
    ) -> Result<()> {
        check_flat(op, what, t)?;
        if t.device() != device {
            return Err(tensor::Error::Device(format!(
                "{op}: {what} is on {:?}, the optimizer state on {device:?}",
                t.device()
            ))
            .into());
        }
        check_len(op, what, t.elem_count(), n)
    }

    fn upload_f32(v: &[f32], device: Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(v, [v.len()])?.to_device(device)?)
    }

    fn upload_u8(v: &[u8], device: Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(v, [v.len()])?.to_device(device)?)
    }

    fn cuda_only(op: &'static str, device: Device) -> Result<()> {
        match device {
            Device::Cuda(_) => Ok(()),
            Device::Cpu => Err(OptimError::Config(format!("{op}: needs a CUDA device, got Cpu (use Staged)"))),
        }
    }

    /// bitsandbytes/torch AdamW with 32-bit m and v as f32 tensors on a GPU: one launch of
    /// `adamw_fwd_f32` per step, bit-identical to [`AdamW`](super::super::AdamW) (same f32
    /// operations and order, per-step scalars from the same `AdamConsts`), saved as `AdamW`
    /// saves (kind `adamw`, `m`, `v`).
    pub struct CudaAdamW {
        cfg: AdamWConfig,
        step: u64,
        device: Device,
        m: Tensor,
        v: Tensor,
    }

    impl CudaAdamW {
        /// Zeroed state for `n` parameters on CUDA `device`.
        pub fn new(cfg: AdamWConfig, n: usize, device: Device) -> Result<Self> {
            cuda_only("CudaAdamW::new", device)?;
            let m = optim_ops::zeros(device, DType::F32, n)?;
            let v = optim_ops::zeros(device, DType::F32, n)?;
            Ok(Self { cfg, step: 0, device, m, v })
        }
        pub fn config(&self) -> &AdamWConfig {
            &self.cfg
        }
        pub fn device(&self) -> Device {
            self.device
        }
        pub fn len(&self) -> usize {
            self.m.elem_count()
        }
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
    }

    impl TensorOptimizer for CudaAdamW {
        fn name(&self) -> &'static str {
            "adamw"
        }
        fn step(&mut self, params: &mut Tensor, grads: &Tensor, lr: f32) -> Result<()> {
            const OP: &str = "cuda adamw step";
            let n = self.len();
            check_operand(OP, "params", params, self.device, n)?;
            check_operand(OP, "grads", grads, self.device, n)?;
            let c = AdamConsts::new(&self.cfg, self.step + 1, lr);
            optim_ops::adamw_step(params, grads, &self.m, &self.v, kernel_step(&c))?;
            self.step += 1;
            Ok(())
        }
        fn steps(&self) -> u64 {
            self.step
        }
        fn state_bytes(&self) -> usize {
            self.len() * 8
        }
        fn save_state(&self) -> Result<OptimizerState> {
            Ok(OptimizerState {
                kind: self.name().into(),
                step: self.step,
                tensors: vec![
                    ("m".into(), StateTensor::F32(self.m.to_vec::<f32>()?)),
                    ("v".into(), StateTensor::F32(self.v.to_vec::<f32>()?)),
                ],
            })
        }
        fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
            state.expect_kind(self.name())?;
            let n = self.len();
            let (m, v) = (state.f32("m", n)?, state.f32("v", n)?);
            let (m, v) = (upload_f32(m, self.device)?, upload_f32(v, self.device)?);
            (self.m, self.v, self.step) = (m, v, state.step);
            Ok(())
        }
    }

    /// bitsandbytes' blockwise 8-bit AdamW with its state on a GPU, bit-identical to
    /// [`AdamW8bit`](super::super::AdamW8bit) over the same `segments`: tensors of at least
    /// `min_8bit_size` elements get 8-bit m and v (codes, one absmax per 256-element block
    /// starting at the tensor, `adamw8bit_fwd_f32`), smaller ones 32-bit state
    /// (`adamw_fwd_f32`); one launch per run of adjacent tensors ([`Plan`]). Saved as `AdamW8bit`
    /// saves (kind `adamw8bit`, `m`, `v`, and when any tensor is 8-bit `m_q8`, `v_q8`,
    /// `absmax_m`, `absmax_v`, padding included).
    pub struct CudaAdamW8bit {
        cfg: AdamWConfig,
        step: u64,
        device: Device,
        plan: Plan,
        m: Tensor,
        v: Tensor,
        m_q8: Tensor,
        v_q8: Tensor,
        absmax_m: Tensor,
        absmax_v: Tensor,
        signed_map: Tensor,
        unsigned_map: Tensor,
    }

    impl CudaAdamW8bit {
        /// Zeroed state on CUDA `device` for a flat buffer of tensors of `segments` sizes, with
        /// bnb's threshold [`MIN_8BIT_SIZE`].
        pub fn new(cfg: AdamWConfig, segments: &[usize], device: Device) -> Result<Self> {
            Self::with_min_8bit_size(cfg, segments, MIN_8BIT_SIZE, device)
        }
        /// As [`Self::new`] with another small-tensor threshold (bnb's `min_8bit_size`).
        pub fn with_min_8bit_size(
            cfg: AdamWConfig,
            segments: &[usize],
            min_8bit_size: usize,
            device: Device,
        ) -> Result<Self> {
            cuda_only("CudaAdamW8bit::new", device)?;
            let plan = Plan::new(segments, min_8bit_size);
            let blocks = plan.q_len / QUANT_BLOCK;
            let zeros = |dtype, len| optim_ops::zeros(device, dtype, len);
            Ok(Self {
                cfg,
                step: 0,
                device,
                m: zeros(DType::F32, plan.f_len)?,
                v: zeros(DType::F32, plan.f_len)?,
                m_q8: zeros(DType::U8, plan.q_len)?,
                v_q8: zeros(DType::U8, plan.q_len)?,
                absmax_m: zeros(DType::F32, blocks)?,
                absmax_v: zeros(DType::F32, blocks)?,
                signed_map: upload_f32(&DynamicMap::Signed.values(), device)?,
                unsigned_map: upload_f32(&DynamicMap::Unsigned.values(), device)?,
                plan,
            })
        }
        pub fn config(&self) -> &AdamWConfig {
            &self.cfg
        }
        pub fn device(&self) -> Device {
            self.device
        }
        /// Number of parameters.
        pub fn len(&self) -> usize {
            self.plan.n
        }
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
        /// Kernel launches per step.
        pub fn launches_per_step(&self) -> usize {
            self.plan.f_runs.len() + self.plan.q_runs.len()
        }
    }

    impl TensorOptimizer for CudaAdamW8bit {
        fn name(&self) -> &'static str {
            "adamw8bit"
        }
        fn step(&mut self, params: &mut Tensor, grads: &Tensor, lr: f32) -> Result<()> {
            const OP: &str = "cuda adamw8bit step";
            let n = self.len();
            check_operand(OP, "params", params, self.device, n)?;
            check_operand(OP, "grads", grads, self.device, n)?;
            let c = kernel_step(&AdamConsts::new(&self.cfg, self.step + 1, lr));
            let (p, g) = (params.flatten_all()?, grads.flatten_all()?);
            for r in &self.plan.f_runs {
                let (pr, gr) = (p.narrow(0, r.param, r.len)?, g.narrow(0, r.param, r.len)?);
                let (m, v) = (self.m.narrow(0, r.state, r.len)?, self.v.narrow(0, r.state, r.len)?);
                optim_ops::adamw_step(&pr, &gr, &m, &v, c)?;
            }
            for r in &self.plan.q_runs {
                let (pr, gr) = (p.narrow(0, r.param, r.len)?, g.narrow(0, r.param, r.len)?);
                let (b0, nb) = (r.state / QUANT_BLOCK, r.len.div_ceil(QUANT_BLOCK));
                let (m_codes, v_codes) = (self.m_q8.narrow(0, r.state, r.len)?, self.v_q8.narrow(0, r.state, r.len)?);
                let (absmax_m, absmax_v) = (self.absmax_m.narrow(0, b0, nb)?, self.absmax_v.narrow(0, b0, nb)?);
                let s = Adam8bitTensors {
                    m_codes: &m_codes,
                    v_codes: &v_codes,
                    absmax_m: &absmax_m,
                    absmax_v: &absmax_v,
                    signed_map: &self.signed_map,
                    unsigned_map: &self.unsigned_map,
                };
                optim_ops::adamw8bit_step(&pr, &gr, s, c)?;
            }
            self.step += 1;
            Ok(())
        }
        fn steps(&self) -> u64 {
            self.step
        }
        fn state_bytes(&self) -> usize {
            self.plan.f_len * 8 + self.plan.q_len * 2 + self.plan.q_len / QUANT_BLOCK * 8
        }
        fn save_state(&self) -> Result<OptimizerState> {
            let mut tensors = vec![
                ("m".to_string(), StateTensor::F32(self.m.to_vec::<f32>()?)),
                ("v".into(), StateTensor::F32(self.v.to_vec::<f32>()?)),
            ];
            if self.plan.q_len > 0 {
                tensors.push(("m_q8".into(), StateTensor::U8(self.m_q8.to_vec::<u8>()?)));
                tensors.push(("v_q8".into(), StateTensor::U8(self.v_q8.to_vec::<u8>()?)));
                tensors.push(("absmax_m".into(), StateTensor::F32(self.absmax_m.to_vec::<f32>()?)));
                tensors.push(("absmax_v".into(), StateTensor::F32(self.absmax_v.to_vec::<f32>()?)));
            }
            Ok(OptimizerState { kind: self.name().into(), step: self.step, tensors })
        }
        fn load_state(&mut self, s: &OptimizerState) -> Result<()> {
            s.expect_kind(self.name())?;
            let (f_len, q_len) = (self.plan.f_len, self.plan.q_len);
            let blocks = q_len / QUANT_BLOCK;
            // Validate and upload everything before replacing anything.
            let (m, v) = (upload_f32(s.f32("m", f_len)?, self.device)?, upload_f32(s.f32("v", f_len)?, self.device)?);
            let q = if q_len > 0 {
                let (mq, vq) = (s.u8("m_q8", q_len)?, s.u8("v_q8", q_len)?);
                let (am, av) = (s.f32("absmax_m", blocks)?, s.f32("absmax_v", blocks)?);
                Some((
                    upload_u8(mq, self.device)?,
                    upload_u8(vq, self.device)?,
                    upload_f32(am, self.device)?,
                    upload_f32(av, self.device)?,
                ))
            } else {
                None
            };
            (self.m, self.v) = (m, v);
            if let Some((mq, vq, am, av)) = q {
                (self.m_q8, self.v_q8, self.absmax_m, self.absmax_v) = (mq, vq, am, av);
            }
            self.step = s.step;
            Ok(())
        }
    }
}
