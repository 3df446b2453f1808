//! CUDA gathers and scatter-add on resident buffers (`index.cu`). The gather kernel copies rows of
//! a `(size, inner)` table, so `index_select` over another dim moves that dim first in a view,
//! copies it contiguous, gathers, and moves it back. The gather is a bit copy, so f16 uses the
//! bf16 kernel and i32 the f32 one; u8 has none. `embedding_bwd` sums rows by id in a fixed
//! order (deterministic, no atomics); f16 runs through f32. Ids were range-checked on the host.

use crate::cuda::{launch, resident};
use crate::{DType, Result, Shape, Tensor};

/// The slices `ids` (a 1-D i32 CUDA tensor, checked) of dim `dim` of `x`.
pub fn index_select(x: &Tensor, ids: &Tensor, dim: usize, op: &'static str) -> Result<Tensor> {
    let sfx = match x.dtype() {
        DType::F32 | DType::I32 => "f32",
        DType::BF16 | DType::F16 => "bf16",
        DType::U8 => return Err(resident::not_implemented(op, "u8 gather")),
    };
    let rank = x.rank();
    let mut order = vec![dim];
    order.extend((0..rank).filter(|&i| i != dim));
    let (_xc, xa) = resident::contiguous(&resident::permute(x, &order)?, op)?;
    let (_ic, ia) = resident::contiguous(ids, op)?;
    let size = x.dims()[dim];
    let inner: usize = order[1..].iter().map(|&i| x.dims()[i]).product();
    let n = ids.elem_count();
    let dev = resident::device(x, op)?;
    // (n, other dims..): the gathered slices, dim first.
    let mut gathered_dims = vec![n];
    gathered_dims.extend(order[1..].iter().map(|&i| x.dims()[i]));
    let out = resident::zeros(&dev, x.dtype(), Shape::new(gathered_dims))?;
    let err = resident::zeros(&dev, DType::I32, 1)?;
    launch::embedding(&dev, sfx, resident::addr(&out, op)?, xa, (ia, resident::addr(&err, op)?), n, inner, size)?;
    if dim == 0 {
        return Ok(out);
    }
    // Dim `i` of the result is dim `back[i]` of `out`.
    let back: Vec<usize> = (0..rank)
        .map(|i| {
            if i < dim {
                i + 1
            } else if i == dim {
                0
            } else {
                i
            }
        })
        .collect();
    resident::materialize(&resident::permute(&out, &back)?, op)
}

/// `(vocab, C)` sums of the rows of `dy (N, C)` grouped by `ids` (checked).
pub fn embedding_bwd(dy: &Tensor, ids: &Tensor, vocab: usize, op: &'static str) -> Result<Tensor> {
    if dy.dtype() == DType::F16 {
        return embedding_bwd(&dy.to_dtype(DType::F32)?, ids, vocab, op)?.to_dtype(DType::F16);
    }
    let sfx = resident::sfx(op, dy.dtype())?;
    let [n, c] = dy.dims_n::<2>(op)?;
    let (_dc, da) = resident::contiguous(dy, op)?;
    let (_ic, ia) = resident::contiguous(ids, op)?;
    let dev = resident::device(dy, op)?;
    let out = resident::zeros(&dev, dy.dtype(), [vocab, c])?;
    launch::embedding_bwd(&dev, sfx, resident::addr(&out, op)?, da, ia, n, c, vocab)?;
    Ok(out)
}
