//! Shape and layout ops: `reshape`, `flatten_all`, `transpose`, `t`, `narrow`, `broadcast_as`,
//! `unsqueeze`, `squeeze`, `contiguous`, `cat`, and the dtype cast `to_dtype`. Each backward is
//! the inverse view of the gradient (transpose back, reshape back, sum a broadcast, pad a
//! narrow with zeros, narrow a cat); gradients accumulate (`+=`) on the tape.
//! Deliberately not here: a general permute (chains of transposes cover the model's needs).

use crate::tape::record;
use crate::Var;
use tensor::{DType, Error, Result, Shape, Tensor};

impl Var {
    /// Same elements, new shape of equal element count.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Var> {
        let out = self.value().reshape(shape)?;
        let orig = self.shape().clone();
        record("reshape", &[self], out, move |g| Ok(vec![Some(g.reshape(orig)?)]))
    }

    /// Collapse to one dimension.
    pub fn flatten_all(&self) -> Result<Var> {
        self.reshape(self.value().elem_count())
    }

    /// Swap dims `d0` and `d1` (a view).
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Var> {
        let out = self.value().transpose(d0, d1)?;
        record("transpose", &[self], out, move |g| Ok(vec![Some(g.transpose(d0, d1)?)]))
    }

    /// Swap the last two dims (a view).
    pub fn t(&self) -> Result<Var> {
        let r = self.rank();
        if r < 2 {
            return Err(Error::invalid("t", format!("needs rank >= 2, got shape {:?}", self.shape())));
        }
        self.transpose(r - 2, r - 1)
    }

    /// Keep `len` indices of `dim` from `start` (a view); the gradient is zero outside them.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Var> {
        let out = self.value().narrow(dim, start, len)?;
        let shape = self.shape().clone();
        record("narrow", &[self], out, move |g| {
            let size = shape.dim("narrow", dim)?;
            let zeros = |n: usize| {
                let mut d = shape.dims().to_vec();
                d[dim] = n;
                Tensor::zeros(d, g.dtype())
            };
            let (before, after) = (zeros(start), zeros(size - start - len));
            let parts: Vec<&Tensor> = [&before, g, &after].into_iter().filter(|t| t.dims()[dim] > 0).collect();
            Ok(vec![Some(if parts.len() == 1 { g.clone() } else { Tensor::cat(&parts, dim)? })])
        })
    }

    /// View as a larger shape (NumPy broadcasting); the gradient is summed back.
    pub fn broadcast_as(&self, shape: impl Into<Shape>) -> Result<Var> {
        let out = self.value().broadcast_as(shape)?;
        let orig = self.shape().clone();
        record("broadcast_as", &[self], out, move |g| Ok(vec![Some(g.sum_to(&orig)?)]))
    }

    /// Insert a size-1 dim at `dim`.
    pub fn unsqueeze(&self, dim: usize) -> Result<Var> {
        let out = self.value().unsqueeze(dim)?;
        record("unsqueeze", &[self], out, move |g| Ok(vec![Some(g.squeeze(dim)?)]))
    }

    /// Remove the size-1 dim at `dim`.
    pub fn squeeze(&self, dim: usize) -> Result<Var> {
        let out = self.value().squeeze(dim)?;
        record("squeeze", &[self], out, move |g| Ok(vec![Some(g.unsqueeze(dim)?)]))
    }

    /// The same values, dense and row-major.
    pub fn contiguous(&self) -> Result<Var> {
        let out = self.value().contiguous()?;
        record("contiguous", &[self], out, |g| Ok(vec![Some(g.clone())]))
    }

    /// Cast to `dtype` (f32 ↔ bf16/f16); the gradient is cast back to the input's dtype.
    pub fn to_dtype(&self, dtype: DType) -> Result<Var> {
        let out = self.value().to_dtype(dtype)?;
        let orig = self.dtype();
        record("to_dtype", &[self], out, move |g| Ok(vec![Some(g.to_dtype(orig)?)]))
    }
}

/// Concatenate along `dim`; each input's gradient is its slice of the output gradient.
pub fn cat(vars: &[&Var], dim: usize) -> Result<Var> {
    let values: Vec<&Tensor> = vars.iter().map(|v| v.value()).collect();
    let out = Tensor::cat(&values, dim)?;
    let spans: Vec<(usize, usize, bool)> = {
        let mut start = 0;
        let mut spans = Vec::with_capacity(vars.len());
        for v in vars {
            let len = v.shape().dim("cat", dim)?;
            spans.push((start, len, v.requires_grad()));
            start += len;
        }
        spans
    };
    record("cat", vars, out, move |g| {
        spans
            .iter()
            .map(|&(start, len, need)| if need { g.narrow(dim, start, len).map(Some) } else { Ok(None) })
            .collect()
    })
}

/// Move the last dim of `t` to position `dim`, keeping the others in order (a view).
pub(crate) fn move_last_to(t: &Tensor, dim: usize) -> Result<Tensor> {
    let mut t = t.clone();
    for k in (dim..t.rank().saturating_sub(1)).rev() {
        t = t.transpose(k, k + 1)?;
    }
    Ok(t)
}
