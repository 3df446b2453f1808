//! CPU concatenation. Viewing each input as `(outer, d_i · inner)`, output row `o` is the inputs'
//! row `o` laid end to end: one `copy_from_slice` per input per row, rows split across rayon
//! tasks. `cat_ref` writes one element at a time from output coordinates.

use crate::{CpuElement, Result, Shape, Tensor};
use rayon::prelude::*;

const CHUNK: usize = 1 << 14;

/// Concatenate (inputs already checked: same dtype, rank and dims except `dim`).
pub fn cat(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
    let parts = tensors.iter().map(|t| t.contiguous()).collect::<Result<Vec<_>>>()?;
    let storage = parts[0].cpu_storage("cat")?;
    let out = crate::with_cpu_storage!(storage, v => cat_typed(v.as_slice(), &parts, dim)?);
    Ok(Tensor::from_cpu(out, out_shape(tensors, dim)))
}

fn out_shape(tensors: &[&Tensor], dim: usize) -> Shape {
    let mut d = tensors[0].dims().to_vec();
    d[dim] = tensors.iter().map(|t| t.dims()[dim]).sum();
    Shape::new(d)
}

/// `_dtype` only names `T` (the element type of `parts`).
fn cat_typed<T: CpuElement>(_dtype: &[T], parts: &[Tensor], dim: usize) -> Result<crate::CpuStorage> {
    let slices = parts.iter().map(|t| t.as_slice::<T>()).collect::<Result<Vec<&[T]>>>()?;
    let outer: usize = parts[0].dims()[..dim].iter().product();
    let widths: Vec<usize> = slices.iter().map(|s| s.len().checked_div(outer).unwrap_or(0)).collect();
    let row: usize = widths.iter().sum();
    let mut out = vec![T::zero(); outer * row];
    if out.is_empty() {
        return Ok(T::wrap(out));
    }
    let rows_per_task = (CHUNK / row).max(1);
    out.par_chunks_mut(rows_per_task * row).enumerate().for_each(|(task, o)| {
        for (j, dst) in o.chunks_mut(row).enumerate() {
            let r = task * rows_per_task + j;
            let mut at = 0;
            for (s, &w) in slices.iter().zip(&widths) {
                dst[at..at + w].copy_from_slice(&s[r * w..(r + 1) * w]);
                at += w;
            }
        }
    });
    Ok(T::wrap(out))
}

/// Reference: for each output element, find the input that owns its `dim` coordinate.
pub fn cat_ref(tensors: &[&Tensor], dim: usize) -> Result<Tensor> {
    let shape = out_shape(tensors, dim);
    let d = shape.dims();
    let (outer, inner): (usize, usize) = (d[..dim].iter().product(), d[dim + 1..].iter().product());
    let data = tensors.iter().map(|t| t.to_vec_f32()).collect::<Result<Vec<_>>>()?;
    let mut out = Vec::with_capacity(shape.elem_count());
    for o in 0..outer {
        for k in 0..d[dim] {
            let (mut t, mut kk) = (0, k);
            while kk >= tensors[t].dims()[dim] {
                kk -= tensors[t].dims()[dim];
                t += 1;
            }
            let w = tensors[t].dims()[dim];
            out.extend_from_slice(&data[t][(o * w + kk) * inner..][..inner]);
        }
    }
    Tensor::from_vec(out, shape)?.to_dtype(tensors[0].dtype())
}
