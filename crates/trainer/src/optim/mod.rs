//! Optimizers over flat f32 parameter/gradient buffers, and gradient-norm clipping.
//!
//! Reference: bitsandbytes 0.50 (`AdamW32bit`, `PagedAdamW32bit`, `AdamW8bit`, `PagedAdamW8bit`),
//! formulas in shared/reference/README.md §3.8; torch's `clip_grad_norm_`. All trainable
//! parameters, gradients and state live in flat buffers (STYLE.md: llm.c's
//! `malloc_and_point_parameters`), so one step is one pass. The same optimizers over flat
//! parameter *tensors* on any device, with the state on the GPU under feature `cuda`, are in
//! [`device`] ([`TensorOptimizer`]). Deliberately not here: the learning rate schedule (the caller
//! passes `lr` each step), gradient accumulation, and the CUDA kernels themselves (kernels/adamw.cu).
//!
//! | type | state | bytes/param |
//! |---|---|---|
//! | [`AdamW`] | m, v in `Vec<f32>` | 8 |
//! | [`PagedAdamW`] | m, v in a [`paged_alloc::PagedAllocator`] | 8, of which only the budget resident |
//! | [`AdamW8bit`] | blockwise 8-bit m, v (+ absmax per 256), tensors < 4096 elements 32-bit | ≈ 2.03 |
//!
//! Every optimizer saves and loads its state as named buffers ([`OptimizerState`]); loading and
//! continuing is bit-identical to never having stopped, whatever the backend.

mod adam8bit_simd;
mod adamw;
pub mod device;
mod dynamic_map;
mod engine;

#[cfg(test)]
mod tests_8bit;
#[cfg(test)]
mod tests_adamw;
#[cfg(test)]
mod tests_device;
#[cfg(test)]
mod tests_paged;

pub use adamw::AdamW;
pub use device::{clip_grad_norm_tensor, grad_norm_tensor, make_tensor_optimizer, Staged, TensorOptimizer};
#[cfg(feature = "cuda")]
pub use device::{CudaAdamW, CudaAdamW8bit, CudaPagedAdamW};
pub use dynamic_map::{dequantize_blockwise, quantize_blockwise, DynamicMap};
pub use engine::{AdamW8bit, PagedAdamW, MIN_8BIT_SIZE, QUANT_BLOCK};

/// AdamW hyperparameters other than the learning rate. Kept in f64 like bitsandbytes' Python
/// floats: per-step scalars are formed in f64 and rounded to f32 once, as torch does when a Python
/// scalar meets an f32 tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay (`p *= 1 - lr·wd`). 0 by default, as in transformers' Trainer.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("optim {op}: {what} has {got} elements, expected {expected}")]
    Length { op: &'static str, what: &'static str, got: usize, expected: usize },
    #[error("optim load_state: {0}")]
    State(String),
    #[error("optim config: {0}")]
    Config(String),
    #[error(transparent)]
    Paged(#[from] paged_alloc::Error),
    /// A tensor operand or a device operation of the tensor optimizers ([`device`]).
    #[error(transparent)]
    Tensor(#[from] tensor::Error),
}

pub type Result<T> = std::result::Result<T, OptimError>;

/// One saved state buffer.
#[derive(Clone, Debug, PartialEq)]
pub enum StateTensor {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// Everything an optimizer needs to continue bit-identically: its kind, the step count and named
/// buffers (ready for a safetensors checkpoint).
#[derive(Clone, Debug, PartialEq)]
pub struct OptimizerState {
    pub kind: String,
    pub step: u64,
    pub tensors: Vec<(String, StateTensor)>,
}

impl OptimizerState {
    pub fn get(&self, name: &str) -> Option<&StateTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
    pub(crate) fn f32(&self, name: &str, len: usize) -> Result<&[f32]> {
        match self.get(name) {
            Some(StateTensor::F32(v)) if v.len() == len => Ok(v),
            Some(StateTensor::F32(v)) => {
                Err(OptimError::State(format!("`{name}` has {} elements, expected {len}", v.len())))
            }
            _ => Err(OptimError::State(format!("missing f32 buffer `{name}`"))),
        }
    }
    pub(crate) fn u8(&self, name: &str, len: usize) -> Result<&[u8]> {
        match self.get(name) {
            Some(StateTensor::U8(v)) if v.len() == len => Ok(v),
            Some(StateTensor::U8(v)) => {
                Err(OptimError::State(format!("`{name}` has {} elements, expected {len}", v.len())))
            }
            _ => Err(OptimError::State(format!("missing u8 buffer `{name}`"))),
        }
    }
    pub(crate) fn expect_kind(&self, kind: &str) -> Result<()> {
        if self.kind != kind {
            return Err(OptimError::State(format!("state of `{}` loaded into `{kind}`", self.kind)));
        }
        Ok(())
    }
}

/// An optimizer over one flat parameter buffer.
pub trait Optimizer: Send {
    fn name(&self) -> &'static str;
    /// One update; `lr` comes from the schedule. Step counting starts at 1 on the first call.
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<()>;
    /// Steps taken so far.
    fn steps(&self) -> u64;
    /// Bytes of optimizer state (m, v, quantization scales), wherever it lives.
    fn state_bytes(&self) -> usize;
    fn save_state(&self) -> Result<OptimizerState>;
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;
}

/// Per-step f32 scalars of the bitsandbytes/torch AdamW update (README §3.8).
#[derive(Clone, Copy, Debug)]
pub(crate) struct AdamConsts {
    pub b1: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    /// `1 - lr·wd`, or `None` when wd = 0 (bnb skips the multiply).
    pub decay: Option<f32>,
    /// `-lr·sqrt(1-b2^t)/(1-b1^t)`.
    pub step_size: f32,
    /// `eps·sqrt(1-b2^t)`.
    pub eps_hat: f32,
}

impl AdamConsts {
    pub fn new(cfg: &AdamWConfig, step: u64, lr: f32) -> Self {
        let lr = lr as f64;
        let t = step.min(i32::MAX as u64) as i32;
        let correction1 = 1.0 - cfg.beta1.powi(t);
        let correction2 = (1.0 - cfg.beta2.powi(t)).sqrt();
        Self {
            b1: cfg.beta1 as f32,
            one_minus_b1: (1.0 - cfg.beta1) as f32,
            b2: cfg.beta2 as f32,
            one_minus_b2: (1.0 - cfg.beta2) as f32,
            decay: (cfg.weight_decay > 0.0).then_some((1.0 - lr * cfg.weight_decay) as f32),
            step_size: (-lr * correction2 / correction1) as f32,
            eps_hat: (cfg.eps * correction2) as f32,
        }
    }
}

pub(crate) fn check_len(op: &'static str, what: &'static str, got: usize, expected: usize) -> Result<()> {
    if got != expected {
        return Err(OptimError::Length { op, what, got, expected });
    }
    Ok(())
}

/// L2 norm of all gradients, accumulated in f64.
pub fn global_grad_norm(grads: &[f32]) -> f32 {
    grads.iter().map(|&g| (g as f64) * (g as f64)).sum::<f64>().sqrt() as f32
}

/// torch's `clip_grad_norm_`: scales `grads` by `max_norm / (norm + 1e-6)` when that is below 1,
/// and returns the pre-clip norm. A non-finite norm leaves `grads` untouched (the caller should
/// skip the step); torch would instead fill them with NaN.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = global_grad_norm(grads);
    let coef = max_norm / (norm + 1e-6);
    if norm.is_finite() && coef < 1.0 {
        grads.iter_mut().for_each(|g| *g *= coef);
    }
    norm
}
