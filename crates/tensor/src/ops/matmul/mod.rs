//! `a.matmul(&b)`: `(.., M, K) x (.., K, N) -> (.., M, N)` with NumPy broadcasting of the batch
//! dims. The CPU path is the `gemm` crate (runtime-dispatched AVX2/AVX-512 kernels, rayon),
//! except f32 products with one of M, K, N at most 16 (LoRA's rank-r shapes) on AVX-512F CPUs,
//! which take the hand-written kernels in `skinny.rs`. Transposed views such as `w.t()` are passed
//! as strides, never copied; bf16/f16 are widened to f32, multiplied in f32 and rounded back once.
//!
//! Not done here: rank-1 operands (unsqueeze to a 1-row or 1-column matrix), mixed dtypes,
//! integer matmul, quantized weights (the nf4 crate dequantizes tiles and calls this).

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod skinny;
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
        super::same_device("matmul", &[a, b])?;
        match &**a.storage() {
            Storage::Cpu(_) => cpu::matmul(a, b, &batch, [m, k, n]),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => cuda::matmul(a, b, &batch, [m, k, n]),
        }
    }

    /// [`Tensor::addmm`] consuming `self`: when `self` is the only holder of dense f32 CPU
    /// storage the product is accumulated into it in place (no copy of the accumulator), else
    /// this is `self.addmm(a, b, beta)`. Same checks, same result.
    pub fn addmm_into(mut self, a: &Tensor, b: &Tensor, beta: f32) -> Result<Tensor> {
        let mkn = self.addmm_check(a, b)?;
        let cpu_f32 = |t: &Tensor| t.dtype() == crate::DType::F32 && matches!(&**t.storage(), Storage::Cpu(_));
        if cpu_f32(a) && cpu_f32(b) {
            if let Some(out) = self.unique_f32_mut() {
                cpu::addmm_f32_in_place(out, a, b, mkn, beta)?;
                return Ok(self);
            }
        }
        self.addmm(a, b, beta)
    }

    /// `[M, K, N]` of `self (M, N) + a (M, K)·b (K, N)` of one dtype on one device, or the error.
    fn addmm_check(&self, a: &Tensor, b: &Tensor) -> Result<[usize; 3]> {
        let ranks_ok = self.rank() == 2 && a.rank() == 2 && b.rank() == 2;
        let (m, k, n) = if ranks_ok { (a.dims()[0], a.dims()[1], b.dims()[1]) } else { (0, 0, 0) };
        if !ranks_ok || b.dims()[0] != k || self.dims() != [m, n] {
            return Err(Error::invalid(
                "addmm",
                format!("needs acc (M, N) + (M, K)·(K, N), got {:?} + {:?}·{:?}", self.shape(), a.shape(), b.shape()),
            ));
        }
        for t in [a, b] {
            if t.dtype() != self.dtype() {
                return Err(Error::DTypeMismatch { op: "addmm", lhs: self.dtype(), rhs: t.dtype() });
            }
        }
        super::same_device("addmm", &[self, a, b])?;
        Ok([m, k, n])
    }

    /// `self + beta·(a·b)` for 2-D `self (M, N)`, `a (M, K)`, `b (K, N)` of one float dtype. In
    /// f32 the product is accumulated straight into a copy of `self` (one pass over the output
    /// instead of a product and an add, e.g. a LoRA update onto a frozen layer's output); other
    /// dtypes round the product first, as `self.add(&a.matmul(b)?.scale(beta)?)` does.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let acc = Tensor::from_vec(vec![1.0f32, 1.0], [1, 2]).unwrap();
    /// let a = Tensor::from_vec(vec![2.0f32], [1, 1]).unwrap();
    /// let b = Tensor::from_vec(vec![3.0f32, 4.0], [1, 2]).unwrap();
    /// assert_eq!(acc.addmm(&a, &b, 0.5).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 5.0]);
    /// ```
    pub fn addmm(&self, a: &Tensor, b: &Tensor, beta: f32) -> Result<Tensor> {
        let [m, k, n] = self.addmm_check(a, b)?;
        match (self.dtype(), &**self.storage(), &**a.storage(), &**b.storage()) {
            (crate::DType::F32, Storage::Cpu(_), Storage::Cpu(_), Storage::Cpu(_)) => {
                cpu::addmm_f32(self, a, b, [m, k, n], beta)
            }
            #[cfg(feature = "cuda")]
            (_, Storage::Cuda(_), Storage::Cuda(_), Storage::Cuda(_)) => cuda::addmm(self, a, b, [m, k, n], beta),
            _ => self.add(&a.matmul(b)?.scale(beta)?),
        }
    }
}
