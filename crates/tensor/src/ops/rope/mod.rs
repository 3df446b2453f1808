//! `rope`: rotary position embeddings, HF half-split layout (`rotate_half`: dims `i` and `i + D/2`
//! form a pair, not interleaved neighbours), forward, backward (the inverse rotation) and tables.
//! Reference: transformers `LlamaRotaryEmbedding` / `apply_rotary_pos_emb` (default rope type,
//! attention_scaling 1). Computes in f32 and rounds once to the input dtype; HF in bf16 first
//! rounds cos/sin and each product to bf16. No scaled variants (linear, dynamic, llama3) here.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use super::fused::{check_float, check_same_shape, f32_data, from_f32};
use crate::{Error, Result, Storage, Tensor};

const OP_TABLES: &str = "rope::tables";
const OP_FWD: &str = "rope::fwd";
const OP_BWD: &str = "rope::bwd";

/// `(cos (T, D/2), sin (T, D/2))` in f32 for positions `pos0..pos0 + t` and head dim `head_dim`,
/// computed as HF does in f32: `inv_freq[i] = 1/theta^(2i/D)`, `angle = pos * inv_freq[i]`.
/// Only the first half of HF's `cat(freqs, freqs)` is kept, since the halves are equal.
pub fn tables(head_dim: usize, theta: f64, pos0: usize, t: usize) -> Result<(Tensor, Tensor)> {
    if head_dim == 0 || head_dim & 1 != 0 {
        return Err(Error::invalid(OP_TABLES, format!("head_dim must be even and > 0, got {head_dim}")));
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(Error::invalid(OP_TABLES, format!("theta must be finite and > 0, got {theta}")));
    }
    let (cos, sin) = cpu::rope_tables(head_dim, theta, pos0, t);
    Ok((Tensor::from_vec(cos, [t, head_dim / 2])?, Tensor::from_vec(sin, [t, head_dim / 2])?))
}

/// Checks `x (B, H, T, D)` against tables `(T, D/2)`; returns `(T, D)`.
fn check(op: &'static str, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<(usize, usize)> {
    check_float(x, op)?;
    check_float(cos, op)?;
    check_float(sin, op)?;
    let [_, _, t, d] = x.dims_n::<4>(op)?;
    if d & 1 != 0 {
        return Err(Error::invalid(op, format!("head dim must be even, x has shape {:?}", x.shape())));
    }
    check_same_shape(cos, sin, op)?;
    if cos.dims() != [t, d / 2] {
        return Err(Error::ShapeMismatch { op, lhs: x.shape().clone(), rhs: cos.shape().clone() });
    }
    Ok((t, d))
}

/// Rotate `x (B, H, T, D)`: `y1 = x1·cos − x2·sin`, `y2 = x2·cos + x1·sin` with `x1 = x[.., :D/2]`,
/// `x2 = x[.., D/2:]`, and `cos`, `sin` of shape `(T, D/2)` from [`tables`].
pub fn fwd(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (t, d) = check(OP_FWD, x, cos, sin)?;
    super::same_device(OP_FWD, &[x, cos, sin])?;
    match &**x.storage() {
        Storage::Cpu(_) => {
            let (xs, c, s) = (f32_data(x, OP_FWD)?, f32_data(cos, OP_FWD)?, f32_data(sin, OP_FWD)?);
            from_f32(cpu::rope_fwd(&xs, &c, &s, t, d, false), x.shape().clone(), x.dtype(), OP_FWD)
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::rope(x, cos, sin, t, d, false, OP_FWD),
    }
}

/// Backward of [`fwd`]: the inverse rotation, `dx1 = dy1·cos + dy2·sin`, `dx2 = dy2·cos − dy1·sin`.
pub fn bwd(dy: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (t, d) = check(OP_BWD, dy, cos, sin)?;
    super::same_device(OP_BWD, &[dy, cos, sin])?;
    match &**dy.storage() {
        Storage::Cpu(_) => {
            let (ds, c, s) = (f32_data(dy, OP_BWD)?, f32_data(cos, OP_BWD)?, f32_data(sin, OP_BWD)?);
            from_f32(cpu::rope_fwd(&ds, &c, &s, t, d, true), dy.shape().clone(), dy.dtype(), OP_BWD)
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::rope(dy, cos, sin, t, d, true, OP_BWD),
    }
}
