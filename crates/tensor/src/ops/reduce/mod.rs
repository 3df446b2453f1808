//! Reductions over one dimension: `sum`, `mean`, `max` (keeping or dropping the dim), `argmax`
//! (i32 indices, first maximum wins, NaN counts as the maximum), and `sum_all` (a 0-dim tensor).
//! Sums accumulate in f64; results come back in the input dtype.
//!
//! Not done here: several dims at once (chain calls, or `sum_to`), min/argmin, integer inputs.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(test)]
mod tests;

use crate::{Result, Storage, Tensor};

/// Which reduction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    ArgMax,
}

impl ReduceOp {
    /// The op's name in errors.
    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Mean => "mean",
            ReduceOp::Max => "max",
            ReduceOp::ArgMax => "argmax",
        }
    }
}

/// Reduce `x` over `dim` on its device.
pub fn reduce(x: &Tensor, dim: usize, keepdim: bool, op: ReduceOp) -> Result<Tensor> {
    match &**x.storage() {
        Storage::Cpu(_) => cpu::reduce(x, dim, keepdim, op),
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::reduce(x, dim, keepdim, op),
    }
}

impl Tensor {
    /// Sum over `dim`.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
    /// assert_eq!(x.sum(1, false).unwrap().to_vec::<f32>().unwrap(), vec![6.0, 15.0]);
    /// assert_eq!(x.sum(0, true).unwrap().dims(), &[1, 3]);
    /// ```
    pub fn sum(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        reduce(self, dim, keepdim, ReduceOp::Sum)
    }
    /// Mean over `dim`.
    pub fn mean(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        reduce(self, dim, keepdim, ReduceOp::Mean)
    }
    /// Maximum over `dim` (NaN propagates).
    pub fn max(&self, dim: usize, keepdim: bool) -> Result<Tensor> {
        reduce(self, dim, keepdim, ReduceOp::Max)
    }
    /// Index of the maximum over `dim` as i32, the dim removed.
    pub fn argmax(&self, dim: usize) -> Result<Tensor> {
        reduce(self, dim, false, ReduceOp::ArgMax)
    }
    /// Sum of every element as a 0-dim tensor of the input dtype.
    pub fn sum_all(&self) -> Result<Tensor> {
        let flat = self.flatten_all()?;
        flat.sum(0, false)
    }
}
