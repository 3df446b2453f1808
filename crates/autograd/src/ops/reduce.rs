//! Reductions and the row softmax: `sum`, `mean`, `max` over a dim (keepdim or not), `sum_all`,
//! `softmax_last`. The gradient of a sum is the output gradient broadcast back over the reduced
//! dim (a stride-0 view, no copy); of a max it goes to the element `argmax` picked (the first of
//! ties, as PyTorch routes it to the returned index). Gradients accumulate (`+=`) on the tape.
//! Deliberately not here: `argmax` itself (integer output, no gradient).

use super::shape::move_last_to;
use crate::tape::record;
use crate::Var;
use tensor::ops::{index, softmax};
use tensor::{Error, Result, Shape, Tensor};

/// `g` with the reduced `dim` restored (size 1) when it was dropped, broadcast to `shape`.
fn expand(g: &Tensor, dim: usize, keepdim: bool, shape: &Shape) -> Result<Tensor> {
    let g = if keepdim { g.clone() } else { g.unsqueeze(dim)? };
    g.broadcast_as(shape.clone())
}

impl Var {
    /// Sum over `dim`.
    pub fn sum(&self, dim: usize, keepdim: bool) -> Result<Var> {
        let out = self.value().sum(dim, keepdim)?;
        let shape = self.shape().clone();
        record("sum", &[self], out, move |g| Ok(vec![Some(expand(g, dim, keepdim, &shape)?)]))
    }

    /// Mean over `dim`.
    pub fn mean(&self, dim: usize, keepdim: bool) -> Result<Var> {
        let out = self.value().mean(dim, keepdim)?;
        let shape = self.shape().clone();
        let n = shape.dim("mean", dim)?;
        record("mean", &[self], out, move |g| Ok(vec![Some(expand(&g.scale(1.0 / n as f32)?, dim, keepdim, &shape)?)]))
    }

    /// Maximum over `dim`; the gradient flows to the maximal element (the first one of ties).
    pub fn max(&self, dim: usize, keepdim: bool) -> Result<Var> {
        let out = self.value().max(dim, keepdim)?;
        let x = self.value().clone();
        record("max", &[self], out, move |g| Ok(vec![Some(max_bwd(g, &x, dim)?)]))
    }

    /// Sum of every element, as a 0-dim tensor.
    pub fn sum_all(&self) -> Result<Var> {
        let out = self.value().sum_all()?;
        let shape = self.shape().clone();
        record("sum_all", &[self], out, move |g| Ok(vec![Some(g.reshape(())?.broadcast_as(shape.clone())?)]))
    }

    /// Mean of every element, as a 0-dim tensor.
    pub fn mean_all(&self) -> Result<Var> {
        let n = self.value().elem_count().max(1);
        self.sum_all()?.scale(1.0 / n as f32)
    }

    /// Softmax over the last dimension; backward `dx = y·(dy − Σ dy·y)` (tensor's
    /// `softmax_last_bwd`).
    pub fn softmax_last(&self) -> Result<Var> {
        let y = self.value().softmax_last()?;
        let y_saved = y.clone();
        record("softmax_last", &[self], y, move |g| Ok(vec![Some(softmax::softmax_last_bwd(&y_saved, g)?)]))
    }
}

/// Scatter `g` (x's shape with `dim` reduced) into zeros of x's shape at `argmax(dim)`: with `dim`
/// moved last, row `p` of `P` rows of `n` gets `g[p]` at flat index `p·n + argmax[p]`, which is
/// `embedding_bwd` of a `(P, 1)` gradient into a `(P·n, 1)` table.
fn max_bwd(g: &Tensor, x: &Tensor, dim: usize) -> Result<Tensor> {
    let n = x.shape().dim("max", dim)?;
    let rows = x.elem_count() / n.max(1);
    let arg = x.argmax(dim)?.flatten_all()?.to_vec::<i32>()?;
    let total = i32::try_from(rows * n).map_err(|_| Error::invalid("max", "too many elements for i32 indices"))?;
    let flat: Vec<i32> = arg.iter().enumerate().map(|(p, &a)| p as i32 * n as i32 + a).collect();
    let ids = Tensor::from_vec(flat, rows)?;
    let g_rows = g.reshape([rows, 1])?;
    let scattered = index::embedding_bwd(&g_rows, &ids, total as usize)?; // (P·n, 1)
    let mut moved: Vec<usize> = x.dims().to_vec();
    moved.remove(dim);
    moved.push(n);
    move_last_to(&scattered.reshape(moved)?, dim)
}
