//! Elementwise binary ops with NumPy broadcasting (`add`, `sub`, `mul`, `div`, `maximum`), and
//! `sum_to`, which undoes a broadcast by summing (a gradient gets its input's shape back).
//! Float dtypes only; both operands must share the dtype. `maximum` propagates NaN like PyTorch.
//!
//! Not done here: implicit dtype promotion, scalar operands (use `affine`/`scale`), in-place ops.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(test)]
mod tests;

use crate::{Error, Result, Shape, Storage, Tensor};

/// Which elementwise op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Maximum,
}

impl BinaryOp {
    /// The op's name in errors.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Maximum => "maximum",
        }
    }
}

/// `a op b` with broadcasting, on the operands' device.
pub fn binary(a: &Tensor, b: &Tensor, op: BinaryOp) -> Result<Tensor> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op: op.name(), lhs: a.dtype(), rhs: b.dtype() });
    }
    let shape = Shape::broadcast(op.name(), a.shape(), b.shape())?;
    super::same_device(op.name(), &[a, b])?;
    match &**a.storage() {
        Storage::Cpu(_) => cpu::binary(a, b, &shape, op),
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::binary(a, b, &shape, op),
    }
}

impl Tensor {
    /// `self + rhs`, broadcasting.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]).unwrap();
    /// let b = Tensor::from_vec(vec![10.0f32, 20.0], [2]).unwrap();
    /// assert_eq!(x.add(&b).unwrap().to_vec::<f32>().unwrap(), vec![11.0, 22.0, 13.0, 24.0]);
    /// ```
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Add)
    }
    /// `self - rhs`, broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Sub)
    }
    /// `self * rhs`, broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Mul)
    }
    /// `self / rhs`, broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Div)
    }
    /// Elementwise maximum, broadcasting; NaN wins.
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        binary(self, rhs, BinaryOp::Maximum)
    }

    /// Sum over the dimensions along which `shape` was broadcast to `self.shape()`: the leading
    /// dimensions `shape` lacks and those where `shape` has 1. Returns `shape`, in `self`'s dtype.
    ///
    /// ```
    /// use tensor::{Shape, Tensor};
    /// let g = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
    /// assert_eq!(g.sum_to(&Shape::new([3])).unwrap().to_vec::<f32>().unwrap(), vec![5.0, 7.0, 9.0]);
    /// assert_eq!(g.sum_to(&Shape::new([2, 1])).unwrap().to_vec::<f32>().unwrap(), vec![6.0, 15.0]);
    /// ```
    pub fn sum_to(&self, shape: &Shape) -> Result<Tensor> {
        let fits = shape.rank() <= self.rank()
            && Shape::broadcast("sum_to", shape, self.shape()).ok().as_ref() == Some(self.shape());
        if !fits {
            return Err(Error::ShapeMismatch { op: "sum_to", lhs: self.shape().clone(), rhs: shape.clone() });
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        match &**self.storage() {
            Storage::Cpu(_) => cpu::sum_to(self, shape),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => cuda::sum_to(self, shape),
        }
    }
}
