//! `attention`: causal scaled-dot-product attention with grouped KV heads (GQA), flash-style:
//! the forward streams key tiles through an online softmax and keeps only `lse` per query; the
//! backward recomputes probabilities from `lse` (FlashAttention-2). The query block sits at the
//! END of the keys: query `t` of `T` sees keys `0..=S−T+t` of `S` (prefill and KV-cache decode).
//! Reference: transformers `LlamaAttention` (fp32 softmax of `QKᵀ·scale` with a causal mask,
//! `repeat_kv`). No dropout, no padding masks, no sliding window. Computes in f32.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use super::fused::{check_float, check_same_dtype, check_same_shape, f32_data, from_f32};
use crate::{DType, Error, Result, Storage, Tensor};
use cpu::Dims;

const OP_FWD: &str = "attention::fwd";
const OP_BWD: &str = "attention::bwd";

/// Checks `q (B, Hq, T, D)`, `k`, `v (B, Hkv, S, D)` and the scale; returns the dims.
fn check(op: &'static str, q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<Dims> {
    check_float(q, op)?;
    check_same_dtype(q, k, op)?;
    check_same_dtype(q, v, op)?;
    let [b, hq, t, d] = q.dims_n::<4>(op)?;
    let [bk, hkv, s, dk] = k.dims_n::<4>(op)?;
    check_same_shape(k, v, op)?;
    if b != bk || d != dk {
        return Err(Error::ShapeMismatch { op, lhs: q.shape().clone(), rhs: k.shape().clone() });
    }
    if d == 0 || hkv == 0 || hq % hkv != 0 {
        return Err(Error::invalid(
            op,
            format!("need D > 0 and Hq a multiple of Hkv > 0: q {:?}, k {:?}", q.shape(), k.shape()),
        ));
    }
    if t > s {
        return Err(Error::invalid(
            op,
            format!("more queries than keys (T > S): q {:?}, k {:?}", q.shape(), k.shape()),
        ));
    }
    if !scale.is_finite() {
        return Err(Error::invalid(op, format!("scale must be finite, got {scale}")));
    }
    Ok(Dims { b, hq, hkv, t, s, d })
}

/// Forward: `(out (B, Hq, T, D) in q's dtype, lse (B, Hq, T) f32)` where
/// `out = softmax(q·kᵀ·scale + causal mask)·v` with query head `h` using KV head `h / (Hq/Hkv)`,
/// and `lse` is the logsumexp of each query's masked scores (what [`bwd`] needs).
pub fn fwd(q: &Tensor, k: &Tensor, v: &Tensor, scale: f32) -> Result<(Tensor, Tensor)> {
    let dims = check(OP_FWD, q, k, v, scale)?;
    super::same_device(OP_FWD, &[q, k, v])?;
    match &**q.storage() {
        Storage::Cpu(_) => {
            let (qs, ks, vs) = (f32_data(q, OP_FWD)?, f32_data(k, OP_FWD)?, f32_data(v, OP_FWD)?);
            let (out, lse) = cpu::attention_fwd(&qs, &ks, &vs, dims, scale);
            Ok((
                from_f32(out, q.shape().clone(), q.dtype(), OP_FWD)?,
                Tensor::from_vec(lse, [dims.b, dims.hq, dims.t])?,
            ))
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::fwd(q, k, v, dims, scale, OP_FWD),
    }
}

/// Backward: `(dq, dk, dv)` in the inputs' dtype from `dout (B, Hq, T, D)` and the forward's
/// inputs, `out` and `lse`. `dk`, `dv` sum over the query heads that share each KV head.
pub fn bwd(
    dout: &Tensor,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    out: &Tensor,
    lse: &Tensor,
    scale: f32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dims = check(OP_BWD, q, k, v, scale)?;
    check_float(dout, OP_BWD)?;
    check_float(out, OP_BWD)?;
    check_same_shape(dout, q, OP_BWD)?;
    check_same_shape(out, q, OP_BWD)?;
    if lse.dtype() != DType::F32 {
        return Err(Error::DTypeMismatch { op: OP_BWD, lhs: lse.dtype(), rhs: DType::F32 });
    }
    if lse.dims() != [dims.b, dims.hq, dims.t] {
        return Err(Error::ShapeMismatch { op: OP_BWD, lhs: q.shape().clone(), rhs: lse.shape().clone() });
    }
    super::same_device(OP_BWD, &[dout, q, k, v, out, lse])?;
    match &**q.storage() {
        Storage::Cpu(_) => {
            let (qs, ks, vs) = (f32_data(q, OP_BWD)?, f32_data(k, OP_BWD)?, f32_data(v, OP_BWD)?);
            let (dos, os, ls) = (f32_data(dout, OP_BWD)?, f32_data(out, OP_BWD)?, f32_data(lse, OP_BWD)?);
            let (dq, dk, dv) = cpu::attention_bwd(&dos, &qs, &ks, &vs, &os, &ls, dims, scale);
            let dt = q.dtype();
            Ok((
                from_f32(dq, q.shape().clone(), dt, OP_BWD)?,
                from_f32(dk, k.shape().clone(), dt, OP_BWD)?,
                from_f32(dv, v.shape().clone(), dt, OP_BWD)?,
            ))
        }
        #[cfg(feature = "cuda")]
        Storage::Cuda(_) => cuda::bwd(dout, (q, k, v), (out, lse), dims, scale, OP_BWD),
    }
}
