//! Softmax over the last dimension and its backward. Stable: each row subtracts its maximum
//! before `exp`, so large logits neither overflow nor lose the small entries. Computed in f32,
//! returned in the input dtype.
//!
//! Not done here: other dims (transpose first), masking (pass -inf logits; a row of only -inf
//! gives NaN, as in PyTorch), log-softmax (the cross-entropy op fuses its own).

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(test)]
mod tests;

use crate::{Error, Result, Storage, Tensor};

impl Tensor {
    /// `exp(x - max) / Σ exp(x - max)` along the last dimension.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1000.0f32, 1000.0, 0.0, 0.0], [2, 2]).unwrap();
    /// assert_eq!(x.softmax_last().unwrap().to_vec::<f32>().unwrap(), vec![0.5, 0.5, 0.5, 0.5]);
    /// ```
    pub fn softmax_last(&self) -> Result<Tensor> {
        if self.rank() == 0 {
            return Err(Error::invalid("softmax_last", "needs rank >= 1, got a 0-dim tensor"));
        }
        match &**self.storage() {
            Storage::Cpu(_) => cpu::softmax_last(self),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => cuda::softmax_last(self),
        }
    }
}

/// Gradient of `y = softmax_last(x)`: `dx = y ⊙ (dy − Σ_last(y ⊙ dy))`, from the forward output.
pub fn softmax_last_bwd(y: &Tensor, dy: &Tensor) -> Result<Tensor> {
    if y.shape() != dy.shape() {
        return Err(Error::ShapeMismatch { op: "softmax_last_bwd", lhs: y.shape().clone(), rhs: dy.shape().clone() });
    }
    if y.dtype() != dy.dtype() {
        return Err(Error::DTypeMismatch { op: "softmax_last_bwd", lhs: y.dtype(), rhs: dy.dtype() });
    }
    if y.rank() == 0 {
        return Err(Error::invalid("softmax_last_bwd", "needs rank >= 1, got a 0-dim tensor"));
    }
    super::same_device("softmax_last_bwd", &[y, dy])?;
    match &**y.storage() {
        Storage::Cpu(_) => cpu::softmax_last_bwd(y, dy),
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::softmax_last_bwd(y, dy),
    }
}
