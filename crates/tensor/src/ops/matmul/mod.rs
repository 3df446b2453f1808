//! `a.matmul(&b)`: `(.., M, K) x (.., K, N) -> (.., M, N)` with NumPy broadcasting of the batch
//! dims. The CPU path is the `gemm` crate (runtime-dispatched AVX2/AVX-512 kernels, rayon).
//! Transposed views such as `w.t()` are passed to gemm as strides, never copied; bf16/f16 are
//! widened to f32, multiplied in f32 and rounded back once.
//!
//! Not done here: rank-1 operands (unsqueeze to a 1-row or 1-column matrix), mixed dtypes,
//! integer matmul, quantized weights (the nf4 crate dequantizes tiles and calls this).

pub mod cpu;
#[cfg(test)]
mod tests;

use crate::{Error, Result, Shape, Storage, Tensor};

impl Tensor {
    /// Matrix product over the last two dims, batch dims broadcast.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
    /// let w = Tensor::from_vec(vec![1.0f32, 0.0, 1.0, 0.0, 1.0, 1.0], [2, 3]).unwrap();
    /// // x · wᵀ without materialising wᵀ:
    /// let y = a.matmul(&w.t().unwrap()).unwrap();
    /// assert_eq!(y.to_vec::<f32>().unwrap(), vec![4.0, 5.0, 10.0, 11.0]);
    /// ```
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let (a, b) = (self, rhs);
        if a.rank() < 2 || b.rank() < 2 {
            return Err(Error::invalid(
                "matmul",
                format!("needs rank >= 2 operands, got {:?} x {:?}", a.shape(), b.shape()),
            ));
        }
        if a.dtype() != b.dtype() {
            return Err(Error::DTypeMismatch { op: "matmul", lhs: a.dtype(), rhs: b.dtype() });
        }
        let (ra, rb) = (a.rank(), b.rank());
        let (m, k, k2, n) = (a.dims()[ra - 2], a.dims()[ra - 1], b.dims()[rb - 2], b.dims()[rb - 1]);
        let mismatch = || Error::ShapeMismatch { op: "matmul", lhs: a.shape().clone(), rhs: b.shape().clone() };
        if k != k2 {
            return Err(mismatch());
        }
        let batch = Shape::broadcast("matmul", &Shape::new(&a.dims()[..ra - 2]), &Shape::new(&b.dims()[..rb - 2]))
            .map_err(|_| mismatch())?;
        match (&**a.storage(), &**b.storage()) {
            (Storage::Cpu(_), Storage::Cpu(_)) => cpu::matmul(a, b, &batch, [m, k, n]),
        }
    }
}
