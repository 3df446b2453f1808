//! The trainable state of a run wherever it lives: the flat LoRA parameters, their gradients and
//! the optimizer, with the four things a step does to them (accumulate gradients over
//! micro-batches, clip, update, read back for a checkpoint).
//!
//! Two routes, one API:
//! - **host** (the model on the CPU): parameters in `LoraParams::data`, gradients in a `Vec<f32>`,
//!   a host [`Optimizer`] (`AdamW`, `PagedAdamW`, `AdamW8bit`); each micro-batch copies the
//!   adapters into tape leaves and adds their gradients into the flat vector.
//! - **tensor** (the model on a device): parameters and gradients are one flat f32 tensor each on
//!   the model's device; the leaves are views of the parameter tensor (nothing copied), a
//!   micro-batch's gradients are concatenated in the flat layout on the device and added, and a
//!   [`TensorOptimizer`] updates the parameters in place (the CUDA kernels, or a staged host
//!   optimizer). The host copy in `params.data` is refreshed only when asked
//!   ([`Trainable::host_params`]: checkpoints, the final adapter).
//!
//! The same seed gives the same steps on either route: tests run the tensor route on the CPU and
//! compare it with the host route bit for bit. Checkpoints hold the same optimizer state either way.

use crate::data::Batch;
use crate::optim::{
    clip_grad_norm, clip_grad_norm_tensor, make_tensor_optimizer, AdamWConfig, Optimizer, OptimizerState,
    TensorOptimizer,
};
use autograd::Tape;
use llama::{LoraParams, LoraVars, Model};
use tensor::{DType, Device, Tensor};

enum Route {
    Host { grads: Vec<f32>, opt: Box<dyn Optimizer> },
    Tensor { params: Tensor, grads: Tensor, opt: Box<dyn TensorOptimizer>, host_stale: bool },
}

/// LoRA parameters, gradients and optimizer of one run (see the module docs).
pub struct Trainable {
    params: LoraParams,
    route: Route,
}

fn segments(params: &LoraParams) -> Vec<usize> {
    params.slots.iter().flat_map(|s| [s.a.len(), s.b.len()]).collect()
}

impl Trainable {
    /// The state for a model on `device`: the host route on the CPU, the tensor route elsewhere.
    /// `optimizer` is a `--optimizer` name (adamw, paged-adamw, paged-adamw-8bit).
    pub fn new(params: LoraParams, optimizer: &str, cfg: AdamWConfig, device: Device) -> Result<Self, String> {
        match device {
            Device::Cpu => {
                let opt = crate::train::make_optimizer(optimizer, &segments(&params), cfg)?;
                let grads = vec![0.0; params.len()];
                Ok(Trainable { params, route: Route::Host { grads, opt } })
            }
            d => Self::on_tensors(params, optimizer, cfg, d),
        }
    }

    /// The tensor route on `device`, whatever it is (the CPU too: what the tests compare with the
    /// host route).
    pub fn on_tensors(params: LoraParams, optimizer: &str, cfg: AdamWConfig, device: Device) -> Result<Self, String> {
        let opt = make_tensor_optimizer(optimizer, &segments(&params), cfg, device)?;
        let n = params.len();
        let flat = Tensor::from_slice(&params.data, [n])
            .and_then(|t| t.to_device(device))
            .map_err(|e| format!("LoRA parameters to {device:?}: {e}"))?;
        let grads = Tensor::zeros([n], DType::F32)
            .to_device(device)
            .map_err(|e| format!("LoRA gradients on {device:?}: {e}"))?;
        Ok(Trainable { params, route: Route::Tensor { params: flat, grads, opt, host_stale: false } })
    }

    /// Number of trainable parameters.
    pub fn len(&self) -> usize {
        self.params.len()
    }

    /// True when there is nothing to train.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// The optimizer's name.
    pub fn optimizer_name(&self) -> &'static str {
        match &self.route {
            Route::Host { opt, .. } => opt.name(),
            Route::Tensor { opt, .. } => opt.name(),
        }
    }

    /// Bytes of optimizer state.
    pub fn state_bytes(&self) -> usize {
        match &self.route {
            Route::Host { opt, .. } => opt.state_bytes(),
            Route::Tensor { opt, .. } => opt.state_bytes(),
        }
    }

    /// The optimizer state, for a checkpoint.
    pub fn save_state(&self) -> Result<OptimizerState, String> {
        match &self.route {
            Route::Host { opt, .. } => opt.save_state(),
            Route::Tensor { opt, .. } => opt.save_state(),
        }
        .map_err(|e| e.to_string())
    }

    /// Continue from a checkpoint's optimizer state (saved on any device).
    pub fn load_state(&mut self, state: &OptimizerState) -> Result<(), String> {
        match &mut self.route {
            Route::Host { opt, .. } => opt.load_state(state),
            Route::Tensor { opt, .. } => opt.load_state(state),
        }
        .map_err(|e| e.to_string())
    }

    /// The parameters on the host, downloaded first if the device copy moved on.
    pub fn host_params(&mut self) -> Result<&LoraParams, String> {
        if let Route::Tensor { params, host_stale, .. } = &mut self.route {
            if *host_stale {
                self.params.data = params.to_vec_f32().map_err(|e| format!("LoRA parameters to the host: {e}"))?;
                *host_stale = false;
            }
        }
        Ok(&self.params)
    }

    /// The parameters on the host, downloaded first if needed, taken out of the state.
    pub fn into_params(mut self) -> Result<LoraParams, String> {
        self.host_params()?;
        Ok(self.params)
    }

    /// Adapters as constants on the model's device, for evaluation and generation.
    pub fn eval_vars(&mut self) -> Result<LoraVars, String> {
        match &self.route {
            Route::Host { .. } => LoraVars::constants(&self.params),
            Route::Tensor { params, .. } => LoraVars::constants_of(&self.params, params),
        }
        .map_err(|e| e.to_string())
    }

    /// Gradients of one optimizer step, accumulated over `batches` (zeroed first). Returns the
    /// step's loss (sum over tokens / total target tokens) and the token count.
    pub fn accumulate(
        &mut self,
        model: &Model,
        batches: &[Batch],
        checkpointing: bool,
        dropout_seed: u64,
    ) -> Result<(f64, usize), String> {
        match &mut self.route {
            Route::Host { grads, .. } => {
                crate::train::accumulate_step(model, &self.params, batches, grads, checkpointing, dropout_seed)
            }
            Route::Tensor { params, grads, .. } => {
                let total: usize = batches.iter().map(Batch::target_count).sum();
                let n = self.params.len();
                let device = params.device();
                let err = |e: &dyn std::fmt::Display| e.to_string();
                let mut acc: Option<Tensor> = None;
                let mut loss = 0.0f64;
                if total > 0 {
                    for (i, b) in batches.iter().enumerate() {
                        let tape = Tape::new();
                        let seed = dropout_seed.wrapping_add(i as u64 * 0x1000_0001);
                        let vars = LoraVars::leaves_of(&tape, &self.params, params, seed).map_err(|e| err(&e))?;
                        let l = model
                            .loss(&b.input_ids, &b.labels, b.batch, Some(&vars), checkpointing, Some(total as f32))
                            .map_err(|e| err(&e))?;
                        loss += l.value().to_scalar().map_err(|e| err(&e))? as f64;
                        let g = tape.backward(&l).map_err(|e| err(&e))?;
                        let flat = vars.flat_grads(&g, n, device).map_err(|e| err(&e))?;
                        acc = Some(match acc {
                            None => flat,
                            Some(a) => a.add(&flat).map_err(|e| err(&e))?,
                        });
                    }
                }
                *grads = match acc {
                    Some(a) => a,
                    None => Tensor::zeros([n], DType::F32).to_device(device).map_err(|e| err(&e))?,
                };
                Ok((loss, total))
            }
        }
    }

    /// The gradients of the last [`accumulate`](Self::accumulate) (clipped, once
    /// [`clip`](Self::clip) has run), copied to the host in the flat layout of `LoraParams::data`.
    pub fn grads(&self) -> Result<Vec<f32>, String> {
        match &self.route {
            Route::Host { grads, .. } => Ok(grads.clone()),
            Route::Tensor { grads, .. } => grads.to_vec_f32().map_err(|e| e.to_string()),
        }
    }

    /// torch's `clip_grad_norm_` on the step's gradients: returns the norm before clipping; a
    /// non-finite norm (a NaN or infinite gradient) leaves them as they are — skip the step then.
    pub fn clip(&mut self, max_norm: f32) -> Result<f32, String> {
        match &mut self.route {
            Route::Host { grads, .. } => {
                if grads.iter().any(|g| !g.is_finite()) {
                    return Ok(f32::NAN);
                }
                Ok(clip_grad_norm(grads, max_norm))
            }
            Route::Tensor { grads, .. } => clip_grad_norm_tensor(grads, max_norm).map_err(|e| e.to_string()),
        }
    }

    /// One optimizer update with the clipped gradients.
    pub fn step(&mut self, lr: f32) -> Result<(), String> {
        match &mut self.route {
            Route::Host { grads, opt } => opt.step(&mut self.params.data, grads, lr),
            Route::Tensor { params, grads, opt, host_stale } => {
                *host_stale = true;
                opt.step(params, grads, lr)
            }
        }
        .map_err(|e| e.to_string())
    }

    /// The optimizer's step count.
    pub fn steps(&self) -> u64 {
        match &self.route {
            Route::Host { opt, .. } => opt.steps(),
            Route::Tensor { opt, .. } => opt.steps(),
        }
    }
}
