//! CPU gathers and scatter-add. `index_select` copies whole `inner` runs (`copy_from_slice`),
//! rows split across rayon tasks. `embedding_bwd` avoids write races without atomics: a counting
//! sort groups the rows of `dy` by id (keeping their order), then each vocab row is summed by one
//! task, so the result is deterministic and matches the serial reference bit for bit.
//! Ids are range-checked by the caller (`mod.rs`).

use crate::{bf16, f16, CpuElement, CpuStorage, Error, Result, Shape, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

fn contiguous_slice<'a>(x: &'a Tensor, op: &'static str) -> Result<(&'a CpuStorage, std::ops::Range<usize>)> {
    let range =
        x.layout().contiguous_range().ok_or_else(|| Error::invalid(op, format!("{:?} is not contiguous", x.dims())))?;
    Ok((x.cpu_storage(op)?, range))
}

/// Slices `ids` of `dim` of `x` (ids already checked to be in range).
pub fn index_select(x: &Tensor, ids: &[i32], dim: usize) -> Result<Tensor> {
    let x = x.contiguous()?;
    let dims = x.dims();
    let (outer, size, inner): (usize, usize, usize) =
        (dims[..dim].iter().product(), dims[dim], dims[dim + 1..].iter().product());
    let (s, range) = contiguous_slice(&x, "index_select")?;
    let out = crate::with_cpu_storage!(s, v => select(&v[range], ids, outer, size, inner));
    let mut shape = dims.to_vec();
    shape[dim] = ids.len();
    Ok(Tensor::from_cpu(out, Shape::new(shape)))
}

fn select<T: CpuElement>(x: &[T], ids: &[i32], outer: usize, size: usize, inner: usize) -> CpuStorage {
    let n = ids.len();
    let mut out = vec![T::zero(); outer * n * inner];
    if out.is_empty() {
        return T::wrap(out);
    }
    let rows_per_task = (CHUNK / inner).max(1);
    out.par_chunks_mut(rows_per_task * inner).enumerate().for_each(|(task, o)| {
        for (j, dst) in o.chunks_mut(inner).enumerate() {
            let r = task * rows_per_task + j;
            let src = ((r / n) * size + ids[r % n] as usize) * inner;
            dst.copy_from_slice(&x[src..src + inner]);
        }
    });
    T::wrap(out)
}

/// Reference gather: each output element read through the strided index of its source.
pub fn index_select_ref(x: &Tensor, ids: &[i32], dim: usize) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(ids.len());
    for &i in ids {
        parts.push(x.narrow(dim, i as usize, 1)?);
    }
    let refs: Vec<&Tensor> = parts.iter().collect();
    if refs.is_empty() {
        return x.narrow(dim, 0, 0)?.contiguous();
    }
    crate::ops::cat::cpu::cat_ref(&refs, dim)
}

/// `(vocab, C)` sums of the rows of `dy (N, C)` grouped by `ids` (checked to be in range).
pub fn embedding_bwd(dy: &Tensor, ids: &[i32], vocab: usize) -> Result<Tensor> {
    let dy = dy.contiguous()?;
    let c = dy.dims()[1];
    let out = match dy.cpu_storage("embedding_bwd")? {
        CpuStorage::F32(_) => scatter::<f32>(dy.as_slice()?, ids, vocab, c),
        CpuStorage::BF16(_) => scatter::<bf16>(dy.as_slice()?, ids, vocab, c),
        CpuStorage::F16(_) => scatter::<f16>(dy.as_slice()?, ids, vocab, c),
        s => return Err(Error::UnsupportedDType { op: "embedding_bwd", dtype: s.dtype() }),
    };
    Ok(Tensor::from_cpu(out, Shape::new([vocab, c])))
}

fn scatter<T: CpuElement>(dy: &[T], ids: &[i32], vocab: usize, c: usize) -> CpuStorage {
    // start[v]..start[v + 1] indexes `order`, the rows with id v in increasing n.
    let mut start = vec![0usize; vocab + 1];
    for &i in ids {
        start[i as usize + 1] += 1;
    }
    for v in 0..vocab {
        start[v + 1] += start[v];
    }
    let mut fill = start.clone();
    let mut order = vec![0usize; ids.len()];
    for (n, &i) in ids.iter().enumerate() {
        order[fill[i as usize]] = n;
        fill[i as usize] += 1;
    }
    let mut out = vec![T::zero(); vocab * c];
    out.par_chunks_mut(c.max(1)).enumerate().for_each(|(v, row)| {
        let rows = &order[start[v]..start[v + 1]];
        if rows.is_empty() {
            return;
        }
        let mut acc = vec![0f32; c];
        for &n in rows {
            for (a, d) in acc.iter_mut().zip(&dy[n * c..(n + 1) * c]) {
                *a += d.to_f32();
            }
        }
        for (o, a) in row.iter_mut().zip(&acc) {
            *o = T::from_f32(*a);
        }
    });
    T::wrap(out)
}

/// Reference scatter-add: rows added one at a time in order of `n`, in f32.
pub fn embedding_bwd_ref(dy: &Tensor, ids: &[i32], vocab: usize) -> Result<Tensor> {
    let c = dy.dims()[1];
    let d = dy.to_vec_f32()?;
    let mut acc = vec![0f32; vocab * c];
    for (n, &i) in ids.iter().enumerate() {
        for k in 0..c {
            acc[i as usize * c + k] += d[n * c + k];
        }
    }
    Tensor::from_vec(acc, [vocab, c])?.to_dtype(dy.dtype())
}
