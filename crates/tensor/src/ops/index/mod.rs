//! Gathers and their scatter-add: `index_select(&ids, dim)` for any dtype, `embedding` (rows of a
//! `(V, C)` table) and `embedding_bwd` (the table's gradient: rows of `dy` added into the rows
//! their ids name). Ids are i32; an id outside `0..size` is `Error::IndexOutOfRange`, never a
//! wrap-around or a panic.
//!
//! Not done here: negative (from-the-end) ids, the ignore index (-100 is out of range here; the
//! cross-entropy op handles it), sparse gradients.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
#[cfg(test)]
mod tests;

use crate::{DType, Error, Result, Storage, Tensor};

/// The ids of a 1-D i32 tensor as a vector, or an error naming `op`.
pub(crate) fn ids_vec(op: &'static str, ids: &Tensor) -> Result<Vec<i32>> {
    if ids.dtype() != DType::I32 {
        return Err(Error::DTypeMismatch { op, lhs: ids.dtype(), rhs: DType::I32 });
    }
    if ids.rank() != 1 {
        return Err(Error::invalid(op, format!("ids must be 1-D, got shape {:?}", ids.shape())));
    }
    ids.to_vec::<i32>()
}

/// Check every id is in `0..size`.
fn check_ids(op: &'static str, ids: &[i32], size: usize) -> Result<()> {
    match ids.iter().find(|&&i| i < 0 || i as usize >= size) {
        Some(&bad) => Err(Error::IndexOutOfRange { op, index: bad as i64, size }),
        None => Ok(()),
    }
}

impl Tensor {
    /// The slices `ids[j]` of dimension `dim`, in order: the result has `ids.len()` at `dim`.
    ///
    /// ```
    /// use tensor::Tensor;
    /// let x = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [3, 2]).unwrap();
    /// let ids = Tensor::from_vec(vec![2i32, 0, 2], [3]).unwrap();
    /// assert_eq!(x.index_select(&ids, 0).unwrap().to_vec::<f32>().unwrap(), vec![5.0, 6.0, 1.0, 2.0, 5.0, 6.0]);
    /// ```
    pub fn index_select(&self, ids: &Tensor, dim: usize) -> Result<Tensor> {
        let size = self.shape().dim("index_select", dim)?;
        super::same_device("index_select", &[self, ids])?;
        let ids_v = ids_vec("index_select", ids)?;
        check_ids("index_select", &ids_v, size)?;
        match &**self.storage() {
            Storage::Cpu(_) => cpu::index_select(self, &ids_v, dim),
            #[cfg(feature = "cuda")]
            Storage::Cuda(_) => cuda::index_select(self, ids, dim, "index_select"),
        }
    }
}

/// Rows `ids` of `table (V, C)`: `(N,)` ids give `(N, C)`.
pub fn embedding(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let [_, _] = table.dims_n::<2>("embedding")?;
    super::same_device("embedding", &[table, ids])?;
    let ids_v = ids_vec("embedding", ids)?;
    check_ids("embedding", &ids_v, table.dims()[0])?;
    match &**table.storage() {
        Storage::Cpu(_) => cpu::index_select(table, &ids_v, 0),
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::index_select(table, ids, 0, "embedding"),
    }
}

/// Gradient of [`embedding`] with respect to the table: `dw[v] = Σ_{n: ids[n] = v} dy[n]`,
/// shape `(vocab, C)`, dtype of `dy` (summed in f32 in the order of `n`).
pub fn embedding_bwd(dy: &Tensor, ids: &Tensor, vocab: usize) -> Result<Tensor> {
    let [n, _] = dy.dims_n::<2>("embedding_bwd")?;
    let ids_v = ids_vec("embedding_bwd", ids)?;
    if ids_v.len() != n {
        return Err(Error::ShapeMismatch { op: "embedding_bwd", lhs: dy.shape().clone(), rhs: ids.shape().clone() });
    }
    check_ids("embedding_bwd", &ids_v, vocab)?;
    super::same_device("embedding_bwd", &[dy, ids])?;
    match &**dy.storage() {
        Storage::Cpu(_) => cpu::embedding_bwd(dy, &ids_v, vocab),
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::embedding_bwd(dy, ids, vocab, "embedding_bwd"),
    }
}
