//! `run_*` entry points: RMSNorm, RoPE, SwiGLU, attention, embedding and cross-entropy.

use super::*;
use crate::cuda::device::{CudaDevice, Launch};
use crate::cuda::params::*;
use crate::{Error, Result};

// ---------------------------------------------------------------- rmsnorm, rope, swiglu

/// RMSNorm forward: `(y, rstd)`.
pub fn run_rmsnorm<E: KernelFloat>(dev: &CudaDevice, x: &[E], w: &[E], eps: f32) -> Result<(Vec<E>, Vec<f32>)> {
    let c = w.len();
    let rows = x.len() / c.max(1);
    let (dx, dw, y, rstd) = (up(dev, x)?, up(dev, w)?, dev.zeros::<E::Dev>(x.len())?, dev.zeros::<f32>(rows)?);
    let p = RmsnormParams {
        y: dev.ptr(&y),
        rstd: dev.ptr(&rstd),
        x: dev.ptr(&dx),
        w: dev.ptr(&dw),
        rows: rows as i64,
        cols: i32_of("run_rmsnorm", "cols", c)?,
        eps,
    };
    dev.launch("rmsnorm", &k("rmsnorm_fwd", E::SUFFIX), Launch::rows(rows, 256), &p)?;
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
    let cols = i32_of("run_rmsnorm_bwd", "cols", c)?;
    let (d_dy, d_x, d_w, d_r) = (up(dev, dy)?, up(dev, x)?, up(dev, w)?, dev.upload(rstd)?);
    let (dx, dw) = (dev.zeros::<E::Dev>(x.len())?, dev.zeros::<E::Dev>(c)?);
    let p = RmsnormBwdParams {
        dx: dev.ptr(&dx),
        dy: dev.ptr(&d_dy),
        x: dev.ptr(&d_x),
        w: dev.ptr(&d_w),
        rstd: dev.ptr(&d_r),
        rows: rows as i64,
        cols,
        _pad: 0,
    };
    dev.launch("rmsnorm", &k("rmsnorm_bwd", E::SUFFIX), Launch::rows(rows, 256), &p)?;
    let pw = RmsnormDwParams {
        dw: dev.ptr(&dw),
        dy: dev.ptr(&d_dy),
        x: dev.ptr(&d_x),
        rstd: dev.ptr(&d_r),
        rows: rows as i64,
        cols,
        _pad: 0,
    };
    let cfg = Launch { grid: (c.div_ceil(32).max(1) as u32, 1, 1), block: (32, 8, 1), shared_bytes: 0 };
    dev.launch("rmsnorm", &k("rmsnorm_bwd_dw", E::SUFFIX), cfg, &pw)?;
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
    let p = RopeParams {
        y: dev.ptr(&y),
        x: dev.ptr(&dx),
        cos: dev.ptr(&dc),
        sin: dev.ptr(&ds),
        bh: bh as i64,
        t: i32_of("run_rope", "t", t)?,
        d: i32_of("run_rope", "d", d)?,
    };
    let name = k(if bwd { "rope_bwd" } else { "rope_fwd" }, E::SUFFIX);
    dev.launch("rope", &name, Launch::elementwise(bh * t * (d / 2)), &p)?;
    down(dev, &y, x.len())
}

/// SwiGLU forward `silu(g) * u`.
pub fn run_swiglu<E: KernelFloat>(dev: &CudaDevice, g: &[E], u: &[E]) -> Result<Vec<E>> {
    let n = g.len();
    let (dg, du, y) = (up(dev, g)?, up(dev, u)?, dev.zeros::<E::Dev>(n)?);
    let p = SwigluParams { y: dev.ptr(&y), g: dev.ptr(&dg), u: dev.ptr(&du), n: n as i64 };
    dev.launch("swiglu", &k("swiglu_fwd", E::SUFFIX), Launch::elementwise(n), &p)?;
    down(dev, &y, n)
}

/// SwiGLU backward `(dg, du)`.
pub fn run_swiglu_bwd<E: KernelFloat>(dev: &CudaDevice, dy: &[E], g: &[E], u: &[E]) -> Result<(Vec<E>, Vec<E>)> {
    let n = g.len();
    let (d_dy, d_g, d_u) = (up(dev, dy)?, up(dev, g)?, up(dev, u)?);
    let (dg, du) = (dev.zeros::<E::Dev>(n)?, dev.zeros::<E::Dev>(n)?);
    let p = SwigluBwdParams {
        dg: dev.ptr(&dg),
        du: dev.ptr(&du),
        dy: dev.ptr(&d_dy),
        g: dev.ptr(&d_g),
        u: dev.ptr(&d_u),
        n: n as i64,
    };
    dev.launch("swiglu", &k("swiglu_bwd", E::SUFFIX), Launch::elementwise(n), &p)?;
    Ok((down(dev, &dg, n)?, down(dev, &du, n)?))
}

// ---------------------------------------------------------------- attention

/// Attention sizes: `q (B, Hq, T, D)`, `k`, `v (B, Hkv, S, D)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub t: usize,
    pub s: usize,
    pub d: usize,
}

/// Largest head dim the attention kernels take (`ATT_MAXD`).
pub const ATTENTION_MAX_D: usize = 128;

fn check_attn(op: &'static str, a: AttnDims) -> Result<[i32; 6]> {
    if a.d == 0 || a.d > ATTENTION_MAX_D || a.hkv == 0 || (a.hq / a.hkv) * a.hkv != a.hq || a.s < a.t || a.t == 0 {
        return Err(Error::invalid(
            op,
            format!("unsupported sizes {a:?} (need 1 <= D <= 128, Hq % Hkv == 0, S >= T >= 1)"),
        ));
    }
    Ok([
        i32_of(op, "B", a.b)?,
        i32_of(op, "Hq", a.hq)?,
        i32_of(op, "Hkv", a.hkv)?,
        i32_of(op, "T", a.t)?,
        i32_of(op, "S", a.s)?,
        i32_of(op, "D", a.d)?,
    ])
}

/// Causal GQA attention forward: `(out (B, Hq, T, D), lse (B, Hq, T))`.
pub fn run_attention<E: KernelFloat>(
    dev: &CudaDevice,
    q: &[E],
    kk: &[E],
    v: &[E],
    a: AttnDims,
    scale: f32,
) -> Result<(Vec<E>, Vec<f32>)> {
    let [b, hq, hkv, t, s, d] = check_attn("cuda::run_attention", a)?;
    let (dq, dk, dv) = (up(dev, q)?, up(dev, kk)?, up(dev, v)?);
    let (out, lse) = (dev.zeros::<E::Dev>(q.len())?, dev.zeros::<f32>(a.b * a.hq * a.t)?);
    let p = AttentionParams {
        out: dev.ptr(&out),
        lse: dev.ptr(&lse),
        q: dev.ptr(&dq),
        k: dev.ptr(&dk),
        v: dev.ptr(&dv),
        b,
        hq,
        hkv,
        t,
        s,
        d,
        scale,
        _pad: 0,
    };
    let cfg = Launch { grid: (a.t.div_ceil(32) as u32, (a.b * a.hq) as u32, 1), block: (128, 1, 1), shared_bytes: 0 };
    dev.launch("attention", &k("attention_fwd", E::SUFFIX), cfg, &p)?;
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
    let [b, hq, hkv, t, s, d] = check_attn("cuda::run_attention_bwd", a)?;
    let rows = a.b * a.hq * a.t;
    let (d_do, d_q, d_k, d_v, d_o, d_l) =
        (up(dev, dout)?, up(dev, q)?, up(dev, kk)?, up(dev, v)?, up(dev, out)?, dev.upload(lse)?);
    let delta = dev.zeros::<f32>(rows)?;
    let (dq, dk, dv) = (dev.zeros::<E::Dev>(q.len())?, dev.zeros::<E::Dev>(kk.len())?, dev.zeros::<E::Dev>(v.len())?);
    let pp = AttentionBwdPrepParams {
        delta: dev.ptr(&delta),
        out: dev.ptr(&d_o),
        dout: dev.ptr(&d_do),
        rows: rows as i64,
        d,
        _pad: 0,
    };
    dev.launch(
        "attention",
        &k("attention_bwd_prep", E::SUFFIX),
        Launch::linear(rows.div_ceil(4).min(65_535) as u32, 128),
        &pp,
    )?;
    let p = AttentionBwdParams {
        dq: dev.ptr(&dq),
        dk: dev.ptr(&dk),
        dv: dev.ptr(&dv),
        q: dev.ptr(&d_q),
        k: dev.ptr(&d_k),
        v: dev.ptr(&d_v),
        dout: dev.ptr(&d_do),
        lse: dev.ptr(&d_l),
        delta: dev.ptr(&delta),
        b,
        hq,
        hkv,
        t,
        s,
        d,
        scale,
        _pad: 0,
    };
    let cfg_q = Launch { grid: (a.t.div_ceil(32) as u32, (a.b * a.hq) as u32, 1), block: (128, 1, 1), shared_bytes: 0 };
    dev.launch("attention", &k("attention_bwd_dq", E::SUFFIX), cfg_q, &p)?;
    let cfg_kv =
        Launch { grid: (a.s.div_ceil(16) as u32, (a.b * a.hkv) as u32, 1), block: (128, 1, 1), shared_bytes: 0 };
    dev.launch("attention", &k("attention_bwd_dkv", E::SUFFIX), cfg_kv, &p)?;
    Ok((down(dev, &dq, q.len())?, down(dev, &dk, kk.len())?, down(dev, &dv, v.len())?))
}

// ---------------------------------------------------------------- index, cross-entropy

/// Embedding gather `table (V, C)[ids] -> (N, C)`; an out-of-range id is `IndexOutOfRange`.
pub fn run_embedding<E: KernelFloat>(dev: &CudaDevice, table: &[E], c: usize, ids: &[i32]) -> Result<Vec<E>> {
    let vocab = table.len() / c.max(1);
    let n = ids.len();
    let (dt, di, out, err) = (up(dev, table)?, dev.upload(ids)?, dev.zeros::<E::Dev>(n * c)?, dev.zeros::<i32>(1)?);
    let p = EmbeddingParams {
        out: dev.ptr(&out),
        table: dev.ptr(&dt),
        ids: dev.ptr(&di),
        err: dev.ptr(&err),
        n: n as i64,
        c: c as i64,
        vocab: vocab as i64,
    };
    dev.launch("index", &k("index_fwd", E::SUFFIX), Launch::rows(n, 256), &p)?;
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
    let p = EmbeddingBwdParams {
        dtable: dev.ptr(&dt),
        dy: dev.ptr(&d_dy),
        ids: dev.ptr(&di),
        n: n as i64,
        c: c as i64,
        vocab: vocab as i64,
    };
    dev.launch("index", &k("index_bwd", E::SUFFIX), Launch::rows(vocab, 256), &p)?;
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
    let vi = i32_of("cuda::run_cross_entropy", "V", v)?;
    let (dl, dt) = (up(dev, logits)?, dev.upload(targets)?);
    let (lse, rl, sum, cnt) = (dev.zeros::<f32>(n)?, dev.zeros::<f32>(n)?, dev.zeros::<f64>(1)?, dev.zeros::<i32>(1)?);
    let p = CrossEntropyParams {
        lse: dev.ptr(&lse),
        row_loss: dev.ptr(&rl),
        logits: dev.ptr(&dl),
        targets: dev.ptr(&dt),
        n: n as i64,
        v: vi,
        ignore_index: ignore,
    };
    dev.launch("cross_entropy", &k("cross_entropy_fwd", E::SUFFIX), Launch::rows(n, 256), &p)?;
    let pf = CrossEntropyFinishParams {
        loss_sum: dev.ptr(&sum),
        count: dev.ptr(&cnt),
        row_loss: dev.ptr(&rl),
        targets: dev.ptr(&dt),
        n: n as i64,
        ignore_index: ignore,
        v: vi,
    };
    dev.launch("cross_entropy", "cross_entropy_fwd_finish_f32", Launch::linear(1, 1024), &pf)?;
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
    let p = CrossEntropyBwdParams {
        dlogits: dev.ptr(&out),
        logits: dev.ptr(&dl),
        targets: dev.ptr(&dt),
        lse: dev.ptr(&d_lse),
        n: n as i64,
        v: i32_of("cuda::run_cross_entropy_bwd", "V", v)?,
        ignore_index: ignore,
        grad_scale,
        _pad: 0,
    };
    dev.launch("cross_entropy", &k("cross_entropy_bwd", E::SUFFIX), Launch::elementwise(n * v), &p)?;
    down(dev, &out, n * v)
}
