//! CUDA attention on resident buffers (`attention.cu`, FlashAttention-2 schedule): forward
//! `(out, lse)`, backward `(dq, dk, dv)` from `lse` without atomics. The kernels take D <= 128;
//! a larger head dim is `Error::Device` ("not implemented on CUDA"). f16 or mixed dtypes run
//! through f32; results come back in q's dtype, as on the CPU.

use super::cpu::Dims;
use crate::cuda::launch::{self, AttnDims, ATTENTION_MAX_D};
use crate::cuda::resident;
use crate::{DType, Result, Tensor};

fn attn_dims(op: &'static str, d: Dims) -> Result<AttnDims> {
    if d.d > ATTENTION_MAX_D {
        return Err(resident::not_implemented(op, format!("head dim {} > {ATTENTION_MAX_D}", d.d)));
    }
    Ok(AttnDims { b: d.b, hq: d.hq, hkv: d.hkv, t: d.t, s: d.s, d: d.d })
}

/// Forward: `(out (B, Hq, T, D) in q's dtype, lse (B, Hq, T) f32)`.
pub fn fwd(q: &Tensor, k: &Tensor, v: &Tensor, dims: Dims, scale: f32, op: &'static str) -> Result<(Tensor, Tensor)> {
    let a = attn_dims(op, dims)?;
    let dev = resident::device(q, op)?;
    let cd = resident::compute_dtype(&[q, k, v]);
    let sfx = resident::sfx(op, cd)?;
    let out = resident::zeros(&dev, cd, q.shape().clone())?;
    let lse = resident::zeros(&dev, DType::F32, [a.b, a.hq, a.t])?;
    if a.b * a.hq * a.t > 0 {
        let (qk, kk, vk) = (q.to_dtype(cd)?, k.to_dtype(cd)?, v.to_dtype(cd)?);
        let (_qc, qa) = resident::contiguous(&qk, op)?;
        let ((_kc, ka), (_vc, va)) = (resident::contiguous(&kk, op)?, resident::contiguous(&vk, op)?);
        let ptrs = (resident::addr(&out, op)?, resident::addr(&lse, op)?);
        launch::attention(&dev, sfx, ptrs, (qa, ka, va), a, scale)?;
    }
    Ok((out.to_dtype(q.dtype())?, lse))
}

/// Backward: `(dq, dk, dv)` in q's dtype.
#[allow(clippy::too_many_arguments)]
pub fn bwd(
    dout: &Tensor,
    (q, k, v): (&Tensor, &Tensor, &Tensor),
    (out, lse): (&Tensor, &Tensor),
    dims: Dims,
    scale: f32,
    op: &'static str,
) -> Result<(Tensor, Tensor, Tensor)> {
    let a = attn_dims(op, dims)?;
    let dev = resident::device(q, op)?;
    let cd = resident::compute_dtype(&[dout, q, k, v, out]);
    let sfx = resident::sfx(op, cd)?;
    let dq = resident::zeros(&dev, cd, q.shape().clone())?;
    let dk = resident::zeros(&dev, cd, k.shape().clone())?;
    let dv = resident::zeros(&dev, cd, v.shape().clone())?;
    if a.b * a.hq * a.t > 0 {
        let (dok, qk, kk, vk, ok) =
            (dout.to_dtype(cd)?, q.to_dtype(cd)?, k.to_dtype(cd)?, v.to_dtype(cd)?, out.to_dtype(cd)?);
        let (_doc, doa) = resident::contiguous(&dok, op)?;
        let (_qc, qa) = resident::contiguous(&qk, op)?;
        let ((_kc, ka), (_vc, va)) = (resident::contiguous(&kk, op)?, resident::contiguous(&vk, op)?);
        let ((_oc, oa), (_lc, la)) = (resident::contiguous(&ok, op)?, resident::contiguous(lse, op)?);
        let ptrs = (resident::addr(&dq, op)?, resident::addr(&dk, op)?, resident::addr(&dv, op)?);
        launch::attention_bwd(&dev, sfx, ptrs, doa, (qa, ka, va), (oa, la), a, scale)?;
    }
    let dt = q.dtype();
    Ok((dq.to_dtype(dt)?, dk.to_dtype(dt)?, dv.to_dtype(dt)?))
}
