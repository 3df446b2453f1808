//! `Tensor::cat`: join tensors of one dtype along `dim`; every other dim must match. Any dtype.
//!
//! Not done here: stacking along a new dim (`unsqueeze` each input first), mixed dtypes or
//! devices.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(test)]
mod tests;

use crate::{Error, Result, Storage, Tensor};

impl Tensor {
    /// Concatenate `tensors` along `dim`.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0], [2, 1]).unwrap();
    /// let b = Tensor::from_vec(vec![3.0f32, 4.0, 5.0, 6.0], [2, 2]).unwrap();
    /// let c = Tensor::cat(&[&a, &b], 1).unwrap();
    /// assert_eq!(c.to_vec::<f32>().unwrap(), vec![1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
    /// ```
    pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("cat", "no tensors to concatenate"))?;
        first.shape().dim("cat", dim)?;
        for t in &tensors[1..] {
            if t.dtype() != first.dtype() {
                return Err(Error::DTypeMismatch { op: "cat", lhs: first.dtype(), rhs: t.dtype() });
            }
            let same = t.rank() == first.rank()
                && t.dims().iter().zip(first.dims()).enumerate().all(|(i, (a, b))| i == dim || a == b);
            if !same {
                return Err(Error::ShapeMismatch { op: "cat", lhs: first.shape().clone(), rhs: t.shape().clone() });
            }
        }
        super::same_device("cat", tensors)?;
        match &**first.storage() {
            Storage::Cpu(_) => cpu::cat(tensors, dim),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => cuda::cat(tensors, dim),
        }
    }
}
