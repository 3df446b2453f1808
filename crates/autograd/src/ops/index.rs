//! Gathers: `index_select` along any dim and `embedding` (rows of a `(V, C)` table). Backward is
//! the scatter-add `tensor::ops::index::embedding_bwd`, so repeated ids add up; index_select on a
//! dim other than 0 moves that dim to the front with a transpose first. Gradients accumulate
//! (`+=`) on the tape. Deliberately not here: gradients for the ids (integers, none exist).

use crate::tape::record;
use crate::Var;
use tensor::ops::index as tindex;
use tensor::{Result, Tensor};

impl Var {
    /// Pick the entries `ids` (1-D, I32) along `dim`.
    pub fn index_select(&self, ids: &Tensor, dim: usize) -> Result<Var> {
        let out = self.value().index_select(ids, dim)?;
        let shape = self.shape().clone();
        let ids = ids.clone();
        record("index_select", &[self], out, move |g| {
            let size = shape.dim("index_select", dim)?;
            // With `dim` swapped to the front, the op is a row gather of a (size, rest) table.
            let gt = g.transpose(0, dim)?;
            let front: Vec<usize> = gt.dims().to_vec();
            let rest: usize = front[1..].iter().product();
            let rows = gt.reshape([front[0], rest])?;
            let table = tindex::embedding_bwd(&rows, &ids.flatten_all()?, size)?;
            let mut tdims = front;
            tdims[0] = size;
            Ok(vec![Some(table.reshape(tdims)?.transpose(0, dim)?)])
        })
    }
}

/// Rows `ids` of `table (V, C)`: `(N, C)` for ids `(N,)`. The gradient of the table is the
/// scatter-add of the output gradient into `(V, C)`.
pub fn embedding(table: &Var, ids: &Tensor) -> Result<Var> {
    let out = tindex::embedding(table.value(), ids)?;
    let vocab = table.shape().dim("embedding", 0)?;
    let ids = ids.clone();
    record("embedding", &[table], out, move |g| Ok(vec![Some(tindex::embedding_bwd(g, &ids, vocab)?)]))
}
