//! `run_*` entry points: RMSNorm, RoPE, SwiGLU, attention, embedding and cross-entropy.

use super::*;
use crate::cuda::device::CudaDevice;
use crate::cuda::launch;
pub use crate::cuda::launch::{AttnDims, ATTENTION_MAX_D};
use crate::{Error, Result};

// ---------------------------------------------------------------- rmsnorm, rope, swiglu

/// RMSNorm forward: `(y, rstd)`.
pub fn run_rmsnorm<E: KernelFloat>(dev: &CudaDevice, x: &[E], w: &[E], eps: f32) -> Result<(Vec<E>, Vec<f32>)> {
    let c = w.len();
    let rows = x.len() / c.max(1);
    let (dx, dw, y, rstd) = (up(dev, x)?, up(dev, w)?, dev.zeros::<E::Dev>(x.len())?, dev.zeros::<f32>(rows)?);
    launch::rmsnorm(dev, E::SUFFIX, (dev.ptr(&y), dev.ptr(&rstd)), dev.ptr(&dx), dev.ptr(&dw), rows, c, eps)?;
    Ok((down(dev, &y, x.len())?, down_raw(dev, &rstd, rows)?))
}

/// RMSNorm backward: `(dx, dw)`.
pub fn run_rmsnorm_bwd<E: KernelFloat>(
    dev: &CudaDevice,
    dy: &[E],
    x: &[E],
    w: &[E],
    rstd: &[f32],
) -> Result<(Vec<E>, Vec<E>)> {
    let c = w.len();
    let rows = x.len() / c.max(1);
    let (d_dy, d_x, d_w, d_r) = (up(dev, dy)?, up(dev, x)?, up(dev, w)?, dev.upload(rstd)?);
    let (dx, dw) = (dev.zeros::<E::Dev>(x.len())?, dev.zeros::<E::Dev>(c)?);
    launch::rmsnorm_bwd(
        dev,
        E::SUFFIX,
        (dev.ptr(&dx), dev.ptr(&dw)),
        dev.ptr(&d_dy),
        dev.ptr(&d_x),
        dev.ptr(&d_w),
        dev.ptr(&d_r),
        rows,
        c,
    )?;
    Ok((down(dev, &dx, x.len())?, down(dev, &dw, c)?))
}

/// RoPE over `x (B, H, T, D)` with `cos`, `sin (T, D/2)`; `bwd` rotates by the negative angle.
pub fn run_rope<E: KernelFloat>(
    dev: &CudaDevice,
    x: &[E],
    cos: &[f32],
    sin: &[f32],
    t: usize,
    d: usize,
    bwd: bool,
) -> Result<Vec<E>> {
    let bh = x.len() / (t * d).max(1);
    let (dx, dc, ds, y) = (up(dev, x)?, dev.upload(cos)?, dev.upload(sin)?, dev.zeros::<E::Dev>(x.len())?);
    launch::rope(dev, E::SUFFIX, dev.ptr(&y), dev.ptr(&dx), (dev.ptr(&dc), dev.ptr(&ds)), bh, t, d, bwd)?;
    down(dev, &y, x.len())
}

/// SwiGLU forward `silu(g) * u`.
pub fn run_swiglu<E: KernelFloat>(dev: &CudaDevice, g: &[E], u: &[E]) -> Result<Vec<E>> {
    let n = g.len();
    let (dg, du, y) = (up(dev, g)?, up(dev, u)?, dev.zeros::<E::Dev>(n)?);
    launch::swiglu(dev, E::SUFFIX, dev.ptr(&y), dev.ptr(&dg), dev.ptr(&du), n)?;
    down(dev, &y, n)
}

/// SwiGLU backward `(dg, du)`.
pub fn run_swiglu_bwd<E: KernelFloat>(dev: &CudaDevice, dy: &[E], g: &[E], u: &[E]) -> Result<(Vec<E>, Vec<E>)> {
    let n = g.len();
    let (d_dy, d_g, d_u) = (up(dev, dy)?, up(dev, g)?, up(dev, u)?);
    let (dg, du) = (dev.zeros::<E::Dev>(n)?, dev.zeros::<E::Dev>(n)?);
    launch::swiglu_bwd(dev, E::SUFFIX, (dev.ptr(&dg), dev.ptr(&du)), dev.ptr(&d_dy), dev.ptr(&d_g), dev.ptr(&d_u), n)?;
    Ok((down(dev, &dg, n)?, down(dev, &du, n)?))
}

// ---------------------------------------------------------------- attention

/// Causal GQA attention forward: `(out (B, Hq, T, D), lse (B, Hq, T))`.
pub fn run_attention<E: KernelFloat>(
    dev: &CudaDevice,
    q: &[E],
    kk: &[E],
    v: &[E],
    a: AttnDims,
    scale: f32,
) -> Result<(Vec<E>, Vec<f32>)> {
    launch::check_attn("cuda::run_attention", a)?;
    let (dq, dk, dv) = (up(dev, q)?, up(dev, kk)?, up(dev, v)?);
    let (out, lse) = (dev.zeros::<E::Dev>(q.len())?, dev.zeros::<f32>(a.b * a.hq * a.t)?);
    launch::attention(
        dev,
        E::SUFFIX,
        (dev.ptr(&out), dev.ptr(&lse)),
        (dev.ptr(&dq), dev.ptr(&dk), dev.ptr(&dv)),
        a,
        scale,
    )?;
    Ok((down(dev, &out, q.len())?, down_raw(dev, &lse, a.b * a.hq * a.t)?))
}

/// Causal GQA attention backward: `(dq, dk, dv)`, recomputing probabilities from `lse`.
#[allow(clippy::too_many_arguments)]
pub fn run_attention_bwd<E: KernelFloat>(
    dev: &CudaDevice,
    dout: &[E],
    q: &[E],
    kk: &[E],
    v: &[E],
    out: &[E],
    lse: &[f32],
    a: AttnDims,
    scale: f32,
) -> Result<(Vec<E>, Vec<E>, Vec<E>)> {
    launch::check_attn("cuda::run_attention_bwd", a)?;
    let (d_do, d_q, d_k, d_v, d_o, d_l) =
        (up(dev, dout)?, up(dev, q)?, up(dev, kk)?, up(dev, v)?, up(dev, out)?, dev.upload(lse)?);
    let (dq, dk, dv) = (dev.zeros::<E::Dev>(q.len())?, dev.zeros::<E::Dev>(kk.len())?, dev.zeros::<E::Dev>(v.len())?);
    launch::attention_bwd(
        dev,
        E::SUFFIX,
        (dev.ptr(&dq), dev.ptr(&dk), dev.ptr(&dv)),
        dev.ptr(&d_do),
        (dev.ptr(&d_q), dev.ptr(&d_k), dev.ptr(&d_v)),
        (dev.ptr(&d_o), dev.ptr(&d_l)),
        a,
        scale,
    )?;
    Ok((down(dev, &dq, q.len())?, down(dev, &dk, kk.len())?, down(dev, &dv, v.len())?))
}

// ---------------------------------------------------------------- index, cross-entropy

/// Embedding gather `table (V, C)[ids] -> (N, C)`; an out-of-range id is `IndexOutOfRange`.
pub fn run_embedding<E: KernelFloat>(dev: &CudaDevice, table: &[E], c: usize, ids: &[i32]) -> Result<Vec<E>> {
    let vocab = table.len() / c.max(1);
    let n = ids.len();
    let (dt, di, out, err) = (up(dev, table)?, dev.upload(ids)?, dev.zeros::<E::Dev>(n * c)?, dev.zeros::<i32>(1)?);
    launch::embedding(dev, E::SUFFIX, dev.ptr(&out), dev.ptr(&dt), (dev.ptr(&di), dev.ptr(&err)), n, c, vocab)?;
    if down_raw(dev, &err, 1)?[0] != 0 {
        let bad = ids.iter().find(|&&i| i < 0 || i as usize >= vocab).copied().unwrap_or(-1);
        return Err(Error::IndexOutOfRange { op: "cuda::run_embedding", index: bad as i64, size: vocab });
    }
    down(dev, &out, n * c)
}

/// Embedding backward: `(vocab, C)` sums of `dy (N, C)` rows grouped by id (deterministic).
pub fn run_embedding_bwd<E: KernelFloat>(
    dev: &CudaDevice,
    dy: &[E],
    c: usize,
    ids: &[i32],
    vocab: usize,
) -> Result<Vec<E>> {
    let n = ids.len();
    let (d_dy, di, dt) = (up(dev, dy)?, dev.upload(ids)?, dev.zeros::<E::Dev>(vocab * c)?);
    launch::embedding_bwd(dev, E::SUFFIX, dev.ptr(&dt), dev.ptr(&d_dy), dev.ptr(&di), n, c, vocab)?;
    down(dev, &dt, vocab * c)
}

/// Cross-entropy forward over `logits (N, V)`: `(loss_sum, count, lse (N,))`.
pub fn run_cross_entropy<E: KernelFloat>(
    dev: &CudaDevice,
    logits: &[E],
    v: usize,
    targets: &[i32],
    ignore: i32,
) -> Result<(f64, usize, Vec<f32>)> {
    let n = targets.len();
    let (dl, dt) = (up(dev, logits)?, dev.upload(targets)?);
    let (lse, rl, sum, cnt) = (dev.zeros::<f32>(n)?, dev.zeros::<f32>(n)?, dev.zeros::<f64>(1)?, dev.zeros::<i32>(1)?);
    launch::cross_entropy(dev, E::SUFFIX, (dev.ptr(&lse), dev.ptr(&rl)), dev.ptr(&dl), dev.ptr(&dt), n, v, ignore)?;
    launch::cross_entropy_finish(dev, (dev.ptr(&sum), dev.ptr(&cnt)), dev.ptr(&rl), dev.ptr(&dt), n, v, ignore)?;
    Ok((down_raw(dev, &sum, 1)?[0], down_raw(dev, &cnt, 1)?[0].max(0) as usize, down_raw(dev, &lse, n)?))
}

/// Cross-entropy backward `grad_scale (softmax - onehot)`, zero rows for ignored targets.
pub fn run_cross_entropy_bwd<E: KernelFloat>(
    dev: &CudaDevice,
    logits: &[E],
    v: usize,
    targets: &[i32],
    lse: &[f32],
    ignore: i32,
    grad_scale: f32,
) -> Result<Vec<E>> {
    let n = targets.len();
    let (dl, dt, d_lse, out) = (up(dev, logits)?, dev.upload(targets)?, dev.upload(lse)?, dev.zeros::<E::Dev>(n * v)?);
    launch::cross_entropy_bwd(
        dev,
        E::SUFFIX,
        dev.ptr(&out),
        (dev.ptr(&dl), dev.ptr(&dt), dev.ptr(&d_lse)),
        n,
        v,
        ignore,
        grad_scale,
    )?;
    down(dev, &out, n * v)
}
