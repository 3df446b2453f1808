//! `swiglu`: Llama's MLP gate `silu(gate) * up`, forward and hand-written backward as one fused op.
//! Reference: transformers `LlamaMLP` (`down(act_fn(gate(x)) * up(x))`, `act_fn = silu`).
//! Elementwise over equal shapes only (no broadcasting); computes in f32 and rounds once to the
//! input dtype (HF in bf16 rounds `silu(gate)` first). Returns fresh gradients, no accumulation.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use super::fused::{check_float, check_same_dtype, check_same_shape, f32_data, from_f32};
use crate::{Result, Storage, Tensor};

const OP_FWD: &str = "swiglu::fwd";
const OP_BWD: &str = "swiglu::bwd";

fn check(op: &'static str, gate: &Tensor, up: &Tensor) -> Result<()> {
    check_float(gate, op)?;
    check_same_dtype(gate, up, op)?;
    check_same_shape(gate, up, op)
}

/// `silu(gate) * up` for two tensors of the same shape and dtype.
pub fn fwd(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    check(OP_FWD, gate, up)?;
    super::same_device(OP_FWD, &[gate, up])?;
    match &**gate.storage() {
        Storage::Cpu(_) => {
            let (g, u) = (f32_data(gate, OP_FWD)?, f32_data(up, OP_FWD)?);
            from_f32(cpu::swiglu_fwd(&g, &u), gate.shape().clone(), gate.dtype(), OP_FWD)
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::fwd(gate, up, OP_FWD),
    }
}

/// Backward of [`fwd`]: `(dgate, dup)` in the inputs' dtype.
pub fn bwd(dy: &Tensor, gate: &Tensor, up: &Tensor) -> Result<(Tensor, Tensor)> {
    check(OP_BWD, gate, up)?;
    check_float(dy, OP_BWD)?;
    check_same_shape(dy, gate, OP_BWD)?;
    super::same_device(OP_BWD, &[dy, gate, up])?;
    match &**gate.storage() {
        Storage::Cpu(_) => {
            let (d, g, u) = (f32_data(dy, OP_BWD)?, f32_data(gate, OP_BWD)?, f32_data(up, OP_BWD)?);
            let (dg, du) = cpu::swiglu_bwd(&d, &g, &u);
            let (shape, dtype) = (gate.shape().clone(), gate.dtype());
            Ok((from_f32(dg, shape.clone(), dtype, OP_BWD)?, from_f32(du, shape, dtype, OP_BWD)?))
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::bwd(dy, gate, up, OP_BWD),
    }
}
