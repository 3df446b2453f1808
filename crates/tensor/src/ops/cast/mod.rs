//! `to_dtype`: convert elements between dtypes. f32 -> bf16/f16 rounds to nearest, ties to even
//! (the `half` crate; F16C instructions where the CPU has them); integers convert through f32 with
//! Rust's `as` (truncating toward zero, saturating, NaN -> 0).
//!
//! Not done here: i32 values beyond 2^24 lose bits on the way through f32; a cast to the same
//! dtype returns the tensor itself (a cheap `Arc` clone, even for a strided view).

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(test)]
mod tests;

use crate::{DType, Result, Storage, Tensor};

impl Tensor {
    /// The same values as `dtype`, contiguous (unless `dtype` is already the tensor's dtype).
    ///
    /// ```
    /// use tensor::{DType, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 1.00390625], [2]).unwrap(); // 1 + 2^-8: a bf16 tie
    /// let y = x.to_dtype(DType::BF16).unwrap();
    /// assert_eq!(y.to_vec_f32().unwrap(), vec![1.0, 1.0]); // ties go to the even mantissa
    /// ```
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if dtype == self.dtype() {
            return Ok(self.clone());
        }
        match &**self.storage() {
            Storage::Cpu(_) => cpu::cast(self, dtype),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => cuda::cast(self, dtype),
        }
    }
}
