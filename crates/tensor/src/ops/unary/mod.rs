//! Elementwise float maps: `exp`, `log`, `sqrt`, `rsqrt`, `neg`, `sqr`, `recip`, `silu`,
//! `affine(mul, add)`, `scale(f)`, `powf(e)`. Computed in f32 and returned in the input dtype.
//!
//! Not done here: in-place variants and integer dtypes (those are indices, not values).

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(test)]
mod tests;

use crate::{Result, Storage, Tensor};

/// Which map to apply; parameters travel with the variant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnaryOp {
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Neg,
    Sqr,
    Recip,
    /// `x · sigmoid(x)`.
    Silu,
    /// `x · mul + add`.
    Affine(f32, f32),
    Powf(f32),
}

impl UnaryOp {
    /// The op's name in errors.
    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Exp => "exp",
            UnaryOp::Log => "log",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Neg => "neg",
            UnaryOp::Sqr => "sqr",
            UnaryOp::Recip => "recip",
            UnaryOp::Silu => "silu",
            UnaryOp::Affine(..) => "affine",
            UnaryOp::Powf(_) => "powf",
        }
    }
}

/// Apply `op` to every element of `x` on its device.
pub fn unary(x: &Tensor, op: UnaryOp) -> Result<Tensor> {
    match &**x.storage() {
        Storage::Cpu(_) => cpu::unary(x, op),
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::unary(x, op),
    }
}

impl Tensor {
    /// `e^x`.
    pub fn exp(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Exp)
    }
    /// Natural logarithm.
    pub fn log(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Log)
    }
    /// Square root.
    pub fn sqrt(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Sqrt)
    }
    /// `1 / sqrt(x)`.
    pub fn rsqrt(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Rsqrt)
    }
    /// `-x`.
    pub fn neg(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Neg)
    }
    /// `x²`.
    pub fn sqr(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Sqr)
    }
    /// `1 / x`.
    pub fn recip(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Recip)
    }
    /// `x · sigmoid(x)`.
    pub fn silu(&self) -> Result<Tensor> {
        unary(self, UnaryOp::Silu)
    }
    /// `x · mul + add`.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
    /// assert_eq!(x.affine(3.0, 1.0).unwrap().to_vec::<f32>().unwrap(), vec![4.0, 7.0]);
    /// ```
    pub fn affine(&self, mul: f32, add: f32) -> Result<Tensor> {
        unary(self, UnaryOp::Affine(mul, add))
    }
    /// `x · f`.
    pub fn scale(&self, f: f32) -> Result<Tensor> {
        unary(self, UnaryOp::Affine(f, 0.0))
    }
    /// `x^e`.
    pub fn powf(&self, e: f32) -> Result<Tensor> {
        unary(self, UnaryOp::Powf(e))
    }
}
