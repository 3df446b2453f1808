//! One function per kernel (or fixed kernel sequence) of `kernels/*.cu`: it fills the kernel's
//! `#[repr(C)]` parameter struct from device addresses and sizes, picks the launch shape, and
//! launches on the device's stream. Nothing else: no allocation of inputs or outputs, no copies.
//! Both callers go through here, so each launch is written once: the host-slice entry points in
//! [`run`](super::run) (upload, launch, download: what the kernel tests use) and the ops'
//! resident-buffer paths in `ops/<op>/cuda.rs`.
//!
//! Contract: every address is a live buffer of `dev` holding the elements the sizes imply
//! (outputs included); the callers check shapes. Sizes that must fit a kernel's `int` are
//! checked here. `sfx` is the kernel's dtype suffix (`f32`, `bf16`, `f16`).

use super::device::{CudaDevice, Launch};
use super::params::*;
use crate::{Error, Result};

/// `v` as the kernel's `int`, or an error naming `op` and `what`.
pub(crate) fn i32_of(op: &'static str, what: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::invalid(op, format!("{what} = {v} does not fit the kernel's i32")))
}

fn k(op: &str, sfx: &str) -> String {
    format!("{op}_{sfx}")
}

/// Merges adjacent dims that every stride vector walks as one (`stride[i] == stride[i+1]·dims[i+1]`)
/// and drops size-1 dims, so a view needs as few of the kernels' fixed dim slots as possible.
/// A shape of only size-1 dims comes back with rank 0 (one element at the offsets).
pub(crate) fn coalesce<const K: usize>(dims: &[usize], strides: [&[usize]; K]) -> (Vec<usize>, [Vec<usize>; K]) {
    let mut out_dims: Vec<usize> = Vec::with_capacity(dims.len());
    let mut out_strides: [Vec<usize>; K] = std::array::from_fn(|_| Vec::with_capacity(dims.len()));
    for (i, &d) in dims.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let merge =
            !out_dims.is_empty() && (0..K).all(|j| out_strides[j].last().copied() == strides[j][i].checked_mul(d));
        if merge {
            if let Some(last) = out_dims.last_mut() {
                *last *= d;
            }
            for j in 0..K {
                if let Some(last) = out_strides[j].last_mut() {
                    *last = strides[j][i];
                }
            }
        } else {
            out_dims.push(d);
            for j in 0..K {
                out_strides[j].push(strides[j][i]);
            }
        }
    }
    (out_dims, out_strides)
}

fn fill_i64<const N: usize>(dst: &mut [i64; N], src: &[usize]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s as i64;
    }
}

// ---------------------------------------------------------------- binary, copy, unary, cast

/// `out = a op b` over the broadcast shape `dims` (op: 0 add, 1 sub, 2 mul, 3 div, 4 maximum),
/// `a` and `b` read through element strides (0 = broadcast) from their offsets, `out` contiguous.
#[allow(clippy::too_many_arguments)]
pub(crate) fn binary(
    dev: &CudaDevice,
    sfx: &str,
    out: u64,
    (a, a_offset, a_strides): (u64, usize, &[usize]),
    (b, b_offset, b_strides): (u64, usize, &[usize]),
    dims: &[usize],
    op: i32,
) -> Result<()> {
    const OP: &str = "cuda::binary";
    let n: usize = dims.iter().product();
    if n == 0 {
        return Ok(());
    }
    let out_strides = crate::Shape::new(dims.to_vec()).contiguous_strides();
    let (cd, [cs_out, cs_a, cs_b]) = coalesce(dims, [&out_strides, a_strides, b_strides]);
    if cd.len() > BINARY_MAX_DIMS {
        return Err(Error::invalid(OP, format!("{} dims after merging (at most {BINARY_MAX_DIMS})", cd.len())));
    }
    let mut p = BinaryParams {
        out,
        a,
        b,
        n: n as i64,
        a_offset: a_offset as i64,
        b_offset: b_offset as i64,
        rank: cd.len() as i32,
        op,
        contiguous: (cs_a == cs_out && cs_b == cs_out) as i32,
        ..Default::default()
    };
    fill_i64(&mut p.dims, &cd);
    fill_i64(&mut p.a_strides, &cs_a);
    fill_i64(&mut p.b_strides, &cs_b);
    dev.launch("binary", &k("binary_fwd", sfx), Launch::elementwise(n), &p)
}

/// Copies the `dims`-shaped view of `x` (strides, offset) into the view of `out`, bit for bit,
/// `elem_bytes` (1, 2 or 4) per element.
pub(crate) fn copy(
    dev: &CudaDevice,
    elem_bytes: usize,
    (out, out_offset, out_strides): (u64, usize, &[usize]),
    (x, x_offset, x_strides): (u64, usize, &[usize]),
    dims: &[usize],
) -> Result<()> {
    const OP: &str = "cuda::copy";
    let n: usize = dims.iter().product();
    if n == 0 {
        return Ok(());
    }
    let name = match elem_bytes {
        1 => "copy_fwd_u8",
        2 => "copy_fwd_u16",
        4 => "copy_fwd_u32",
        _ => return Err(Error::invalid(OP, format!("no copy kernel for {elem_bytes}-byte elements"))),
    };
    let (cd, [cs_out, cs_x]) = coalesce(dims, [out_strides, x_strides]);
    if cd.len() > COPY_MAX_DIMS {
        return Err(Error::invalid(OP, format!("{} dims after merging (at most {COPY_MAX_DIMS})", cd.len())));
    }
    let mut p = CopyParams {
        out,
        x,
        n: n as i64,
        x_offset: x_offset as i64,
        out_offset: out_offset as i64,
        rank: cd.len() as i32,
        ..Default::default()
    };
    fill_i64(&mut p.dims, &cd);
    fill_i64(&mut p.x_strides, &cs_x);
    fill_i64(&mut p.out_strides, &cs_out);
    dev.launch("cast", name, Launch::elementwise(n), &p)
}

/// `out[i] = f(x[i])` over `n` contiguous elements (op codes in `UnaryParams`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn unary(dev: &CudaDevice, sfx: &str, out: u64, x: u64, n: usize, op: i32, p0: f32, p1: f32) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let p = UnaryParams { out, x, n: n as i64, op, p0, p1, _pad: 0 };
    dev.launch("unary", &k("unary_fwd", sfx), Launch::elementwise(n), &p)
}

/// `n` contiguous elements cast from `from` to `to` (`cast_fwd_<from>_<to>`: f32 <-> bf16/f16,
/// i32/u8 <-> f32).
pub(crate) fn cast(dev: &CudaDevice, from: &str, to: &str, out: u64, x: u64, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let p = CastParams { out, x, n: n as i64 };
    dev.launch("cast", &format!("cast_fwd_{from}_{to}"), Launch::elementwise(n), &p)
}

// ---------------------------------------------------------------- reduce, softmax

/// Sum (0), mean (1), max (2) or argmax (3, i32 out) over the last dim of `(rows, cols)`.
pub(crate) fn reduce(dev: &CudaDevice, sfx: &str, out: u64, x: u64, rows: usize, cols: usize, op: i32) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let p = ReduceParams { out, x, rows: rows as i64, cols: i32_of("cuda::reduce", "cols", cols)?, op };
    dev.launch("reduce", &k("reduce_fwd", sfx), Launch::rows(rows, 256), &p)
}

/// Softmax over the last dim of `(rows, cols)`.
pub(crate) fn softmax(dev: &CudaDevice, sfx: &str, y: u64, x: u64, rows: usize, cols: usize) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let p = SoftmaxParams { y, x, rows: rows as i64, cols: i32_of("cuda::softmax", "cols", cols)?, _pad: 0 };
    dev.launch("softmax", &k("softmax_fwd", sfx), Launch::rows(rows, 256), &p)
}

/// Softmax backward `dx = y (dy - sum(dy y))` over `(rows, cols)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn softmax_bwd(
    dev: &CudaDevice,
    sfx: &str,
    dx: u64,
    y: u64,
    dy: u64,
    rows: usize,
    cols: usize,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let p =
        SoftmaxBwdParams { dx, y, dy, rows: rows as i64, cols: i32_of("cuda::softmax_bwd", "cols", cols)?, _pad: 0 };
    dev.launch("softmax", &k("softmax_bwd", sfx), Launch::rows(rows, 256), &p)
}

// ---------------------------------------------------------------- rmsnorm, rope, swiglu

/// RMSNorm forward over `(rows, cols)`: `y` in the input dtype, `rstd (rows,)` f32.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rmsnorm(
    dev: &CudaDevice,
    sfx: &str,
    (y, rstd): (u64, u64),
    x: u64,
    w: u64,
    rows: usize,
    cols: usize,
    eps: f32,
) -> Result<()> {
    if rows == 0 {
        return Ok(());
    }
    let p = RmsnormParams { y, rstd, x, w, rows: rows as i64, cols: i32_of("cuda::rmsnorm", "cols", cols)?, eps };
    dev.launch("rmsnorm", &k("rmsnorm_fwd", sfx), Launch::rows(rows, 256), &p)
}

/// RMSNorm backward: `dx (rows, cols)` and `dw (cols,)`, both written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rmsnorm_bwd(
    dev: &CudaDevice,
    sfx: &str,
    (dx, dw): (u64, u64),
    dy: u64,
    x: u64,
    w: u64,
    rstd: u64,
    rows: usize,
    cols: usize,
) -> Result<()> {
    let c = i32_of("cuda::rmsnorm_bwd", "cols", cols)?;
    if rows > 0 {
        let p = RmsnormBwdParams { dx, dy, x, w, rstd, rows: rows as i64, cols: c, _pad: 0 };
        dev.launch("rmsnorm", &k("rmsnorm_bwd", sfx), Launch::rows(rows, 256), &p)?;
    }
    let pw = RmsnormDwParams { dw, dy, x, rstd, rows: rows as i64, cols: c, _pad: 0 };
    let cfg = Launch { grid: (cols.div_ceil(32).max(1) as u32, 1, 1), block: (32, 8, 1), shared_bytes: 0 };
    dev.launch("rmsnorm", &k("rmsnorm_bwd_dw", sfx), cfg, &pw)
}

/// RoPE over `x (bh, t, d)` with f32 `cos`, `sin (t, d/2)`; `bwd` rotates by the negative angle.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rope(
    dev: &CudaDevice,
    sfx: &str,
    y: u64,
    x: u64,
    (cos, sin): (u64, u64),
    bh: usize,
    t: usize,
    d: usize,
    bwd: bool,
) -> Result<()> {
    let n = bh * t * (d / 2);
    if n == 0 {
        return Ok(());
    }
    let p = RopeParams {
        y,
        x,
        cos,
        sin,
        bh: bh as i64,
        t: i32_of("cuda::rope", "t", t)?,
        d: i32_of("cuda::rope", "d", d)?,
    };
    let name = k(if bwd { "rope_bwd" } else { "rope_fwd" }, sfx);
    dev.launch("rope", &name, Launch::elementwise(n), &p)
}

/// SwiGLU forward `y = silu(g) * u` over `n` elements.
pub(crate) fn swiglu(dev: &CudaDevice, sfx: &str, y: u64, g: u64, u: u64, n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let p = SwigluParams { y, g, u, n: n as i64 };
    dev.launch("swiglu", &k("swiglu_fwd", sfx), Launch::elementwise(n), &p)
}

/// SwiGLU backward: `dg`, `du` written.
#[allow(clippy::too_many_arguments)]
pub(crate) fn swiglu_bwd(
    dev: &CudaDevice,
    sfx: &str,
    (dg, du): (u64, u64),
    dy: u64,
    g: u64,
    u: u64,
    n: usize,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let p = SwigluBwdParams { dg, du, dy, g, u, n: n as i64 };
    dev.launch("swiglu", &k("swiglu_bwd", sfx), Launch::elementwise(n), &p)
}

/// Dropout mask over `n` contiguous elements of `out`: `value` where kept, 0 where dropped
/// (`threshold = ceil(keep·2^24)`; the rule in `ops/dropout`). Grid-stride, so any `n`.
pub(crate) fn dropout(
    dev: &CudaDevice,
    sfx: &str,
    out: u64,
    seed: u64,
    n: usize,
    threshold: u32,
    value: f32,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let p = DropoutParams { out, seed, n: n as i64, threshold, value };
    dev.launch("dropout", &k("dropout_fwd", sfx), Launch::elementwise(n), &p)
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

/// The sizes as the kernels' ints, or an error naming `op` for sizes the kernels do not take.
pub(crate) fn check_attn(op: &'static str, a: AttnDims) -> Result<[i32; 6]> {
    if a.d == 0 || a.d > ATTENTION_MAX_D || a.hkv == 0 || (a.hq / a.hkv) * a.hkv != a.hq || a.s < a.t || a.t == 0 {
        return Err(Error::invalid(
            op,
            format!("unsupported sizes {a:?} (need 1 <= D <= 128, Hq % Hkv == 0, S >= T >= 1)"),
        ));
    }
    if a.b * a.hq > 65_535 || a.b * a.hkv > 65_535 {
        return Err(Error::invalid(op, format!("B·Hq = {} exceeds the 65535 grid rows of the kernels", a.b * a.hq)));
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

/// Causal GQA attention forward: `out (B, Hq, T, D)` and `lse (B, Hq, T)` f32.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    dev: &CudaDevice,
    sfx: &str,
    (out, lse): (u64, u64),
    (q, kk, v): (u64, u64, u64),
    a: AttnDims,
    scale: f32,
) -> Result<()> {
    let [b, hq, hkv, t, s, d] = check_attn("cuda::attention", a)?;
    if a.b == 0 {
        return Ok(());
    }
    let p = AttentionParams { out, lse, q, k: kk, v, b, hq, hkv, t, s, d, scale, _pad: 0 };
    let cfg = Launch { grid: (a.t.div_ceil(32) as u32, (a.b * a.hq) as u32, 1), block: (128, 1, 1), shared_bytes: 0 };
    dev.launch("attention", &k("attention_fwd", sfx), cfg, &p)
}

/// Causal GQA attention backward: `dq`, `dk`, `dv` written, probabilities recomputed from `lse`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_bwd(
    dev: &CudaDevice,
    sfx: &str,
    (dq, dk, dv): (u64, u64, u64),
    dout: u64,
    (q, kk, v): (u64, u64, u64),
    (out, lse): (u64, u64),
    a: AttnDims,
    scale: f32,
) -> Result<()> {
    let [b, hq, hkv, t, s, d] = check_attn("cuda::attention_bwd", a)?;
    if a.b == 0 {
        return Ok(());
    }
    let rows = a.b * a.hq * a.t;
    // Freed stream-ordered after the kernels that read it.
    let delta = dev.zeros::<f32>(rows)?;
    let delta_ptr = dev.ptr(&delta);
    let pp = AttentionBwdPrepParams { delta: delta_ptr, out, dout, rows: rows as i64, d, _pad: 0 };
    let prep = Launch::linear(rows.div_ceil(4).min(65_535) as u32, 128);
    dev.launch("attention", &k("attention_bwd_prep", sfx), prep, &pp)?;
    let p = AttentionBwdParams {
        dq,
        dk,
        dv,
        q,
        k: kk,
        v,
        dout,
        lse,
        delta: delta_ptr,
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
    dev.launch("attention", &k("attention_bwd_dq", sfx), cfg_q, &p)?;
    let cfg_kv =
        Launch { grid: (a.s.div_ceil(16) as u32, (a.b * a.hkv) as u32, 1), block: (128, 1, 1), shared_bytes: 0 };
    dev.launch("attention", &k("attention_bwd_dkv", sfx), cfg_kv, &p)
}

// ---------------------------------------------------------------- index, cross-entropy

/// Embedding gather `out (n, c) = table (vocab, c)[ids (n,)]`; an out-of-range id writes a zero
/// row and sets `*err` (an i32) to 1.
#[allow(clippy::too_many_arguments)]
pub(crate) fn embedding(
    dev: &CudaDevice,
    sfx: &str,
    out: u64,
    table: u64,
    (ids, err): (u64, u64),
    n: usize,
    c: usize,
    vocab: usize,
) -> Result<()> {
    if n == 0 || c == 0 {
        return Ok(());
    }
    let p = EmbeddingParams { out, table, ids, err, n: n as i64, c: c as i64, vocab: vocab as i64 };
    dev.launch("index", &k("index_fwd", sfx), Launch::rows(n, 256), &p)
}

/// Embedding backward: `dtable (vocab, c)` written with the sums of `dy (n, c)` rows by id.
#[allow(clippy::too_many_arguments)]
pub(crate) fn embedding_bwd(
    dev: &CudaDevice,
    sfx: &str,
    dtable: u64,
    dy: u64,
    ids: u64,
    n: usize,
    c: usize,
    vocab: usize,
) -> Result<()> {
    if vocab == 0 || c == 0 {
        return Ok(());
    }
    let p = EmbeddingBwdParams { dtable, dy, ids, n: n as i64, c: c as i64, vocab: vocab as i64 };
    dev.launch("index", &k("index_bwd", sfx), Launch::rows(vocab, 256), &p)
}

/// Cross-entropy forward per row of `logits (n, v)`: `lse (n,)` and `row_loss (n,)` (f32,
/// 0 where the target is ignored).
#[allow(clippy::too_many_arguments)]
pub(crate) fn cross_entropy(
    dev: &CudaDevice,
    sfx: &str,
    (lse, row_loss): (u64, u64),
    logits: u64,
    targets: u64,
    n: usize,
    v: usize,
    ignore: i32,
) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    let p = CrossEntropyParams {
        lse,
        row_loss,
        logits,
        targets,
        n: n as i64,
        v: i32_of("cuda::cross_entropy", "V", v)?,
        ignore_index: ignore,
    };
    dev.launch("cross_entropy", &k("cross_entropy_fwd", sfx), Launch::rows(n, 256), &p)
}

/// Cross-entropy finish: `loss_sum` (f64) and `count` (i32) over the rows not ignored.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cross_entropy_finish(
    dev: &CudaDevice,
    (loss_sum, count): (u64, u64),
    row_loss: u64,
    targets: u64,
    n: usize,
    v: usize,
    ignore: i32,
) -> Result<()> {
    let p = CrossEntropyFinishParams {
        loss_sum,
        count,
        row_loss,
        targets,
        n: n as i64,
        ignore_index: ignore,
        v: i32_of("cuda::cross_entropy", "V", v)?,
    };
    dev.launch("cross_entropy", "cross_entropy_fwd_finish_f32", Launch::linear(1, 1024), &p)
}

/// Cross-entropy backward: `dlogits (n, v)` written, `grad_scale (softmax - onehot)` per row,
/// zero rows where the target is ignored.
#[allow(clippy::too_many_arguments)]
pub(crate) fn cross_entropy_bwd(
    dev: &CudaDevice,
    sfx: &str,
    dlogits: u64,
    (logits, targets, lse): (u64, u64, u64),
    n: usize,
    v: usize,
    ignore: i32,
    grad_scale: f32,
) -> Result<()> {
    if n * v == 0 {
        return Ok(());
    }
    let p = CrossEntropyBwdParams {
        dlogits,
        logits,
        targets,
        lse,
        n: n as i64,
        v: i32_of("cuda::cross_entropy_bwd", "V", v)?,
        ignore_index: ignore,
        grad_scale,
        _pad: 0,
    };
    dev.launch("cross_entropy", &k("cross_entropy_bwd", sfx), Launch::elementwise(n * v), &p)
}

#[cfg(test)]
mod tests {
    //! The index math of the strided kernels checked without a GPU: `copy_fwd_*` and
    //! `binary_fwd_*` written out in Rust over the dims and strides `copy` and `binary` pass
    //! (after `coalesce`), against the CPU references, over random views.
    use super::*;
    use crate::ops::binary::{cpu::binary_ref, BinaryOp};
    use crate::ops::copy::strided_copy_ref;
    use crate::{Rng, Shape, Tensor};

    /// cast.cu `copy_impl`: element `i` of the shape read at `x_off + Σ c·xs`, written at
    /// `out_off + Σ c·os`.
    fn emulate_copy(
        out: &mut [f32],
        (oo, os): (usize, &[usize]),
        x: &[f32],
        (xo, xs): (usize, &[usize]),
        dims: &[usize],
    ) {
        let (cd, [cs_out, cs_x]) = coalesce(dims, [os, xs]);
        assert!(cd.len() <= COPY_MAX_DIMS);
        let n: usize = dims.iter().product();
        for i in 0..n {
            let (mut ix, mut io, mut rem) = (xo, oo, i);
            for d in (0..cd.len()).rev() {
                let c = rem % cd[d];
                rem /= cd[d];
                ix += c * cs_x[d];
                io += c * cs_out[d];
            }
            out[io] = x[ix];
        }
    }

    /// A random view of a fresh tensor: transposes, narrows, size-1 dims and a broadcast.
    fn random_view(rng: &mut Rng) -> Tensor {
        let rank = 1 + (rng.uniform() * 6.0) as usize;
        let dims: Vec<usize> = (0..rank).map(|_| 1 + (rng.uniform() * 4.0) as usize).collect();
        let mut t = Tensor::randn(dims, 1.0, rng);
        for _ in 0..3 {
            let r = t.rank();
            match (rng.uniform() * 4.0) as usize {
                0 if r >= 2 => t = t.transpose((rng.uniform() * r as f32) as usize % r, r - 1).unwrap(),
                1 => {
                    let d = (rng.uniform() * r as f32) as usize % r;
                    let size = t.dims()[d];
                    if size > 1 {
                        t = t.narrow(d, 1, size - 1).unwrap();
                    }
                }
                2 => t = t.unsqueeze((rng.uniform() * (r + 1) as f32) as usize % (r + 1)).unwrap(),
                _ => {
                    let mut dims = t.dims().to_vec();
                    if let Some(d) = dims.iter().position(|&d| d == 1) {
                        dims[d] = 3;
                        t = t.broadcast_as(dims).unwrap();
                    }
                }
            }
        }
        t
    }

    #[test]
    fn copy_kernel_index_math_matches_the_strided_reference() {
        let mut rng = Rng::new(11);
        for case in 0..300 {
            let v = random_view(&mut rng);
            let storage = crate::with_cpu_storage!(v.cpu_storage("t").unwrap(), s => s.iter().map(|x| crate::Element::to_f32(*x)).collect::<Vec<f32>>());
            let want = strided_copy_ref(&storage, v.layout());
            let contiguous = Shape::new(v.dims().to_vec()).contiguous_strides();
            let mut out = vec![f32::NAN; v.elem_count()];
            emulate_copy(&mut out, (0, &contiguous), &storage, (v.layout().offset(), v.layout().strides()), v.dims());
            assert_eq!(out, want, "case {case}: view {:?} strides {:?}", v.dims(), v.layout().strides());
        }
    }

    #[test]
    fn copy_into_a_window_is_what_cat_writes() {
        // cat of x (3, 2) and y viewed as (3, 4) along dim 1: y's window is narrow(1, 2, 4).
        let x = Tensor::from_vec((0..6).map(|i| i as f32).collect::<Vec<_>>(), [3, 2]).unwrap();
        let yt = Tensor::from_vec((10..22).map(|i| i as f32).collect::<Vec<_>>(), [4, 3]).unwrap();
        let y = yt.t().unwrap();
        let mut out = vec![f32::NAN; 18];
        let out_t = Tensor::zeros([3, 6], crate::DType::F32);
        for (t, at, w) in [(&x, 0, 2), (&y, 2, 4)] {
            let win = out_t.narrow(1, at, w).unwrap();
            let s = t.cpu_storage("t").unwrap();
            let data =
                crate::with_cpu_storage!(s, v => v.iter().map(|x| crate::Element::to_f32(*x)).collect::<Vec<f32>>());
            let (wl, tl) = (win.layout(), t.layout());
            emulate_copy(&mut out, (wl.offset(), wl.strides()), &data, (tl.offset(), tl.strides()), t.dims());
        }
        let want = Tensor::cat(&[&x, &y], 1).unwrap().to_vec::<f32>().unwrap();
        assert_eq!(out, want);
    }

    #[test]
    fn binary_kernel_index_math_matches_the_reference() {
        let mut rng = Rng::new(12);
        for case in 0..200 {
            let a = random_view(&mut rng);
            // b: a's shape with some dims set to 1 (or dropped in front), a broadcast operand.
            let mut bd = a.dims().to_vec();
            for d in bd.iter_mut() {
                if rng.uniform() < 0.4 {
                    *d = 1;
                }
            }
            let skip = (rng.uniform() * bd.len() as f32) as usize;
            let b = Tensor::randn(bd[skip..].to_vec(), 1.0, &mut rng);
            let shape = Shape::broadcast("t", a.shape(), b.shape()).unwrap();
            let (la, lb) = (a.broadcast_as(shape.clone()).unwrap(), b.broadcast_as(shape.clone()).unwrap());
            let out_strides = shape.contiguous_strides();
            let (cd, [cs_out, cs_a, cs_b]) =
                coalesce(shape.dims(), [&out_strides, la.layout().strides(), lb.layout().strides()]);
            assert!(cd.len() <= BINARY_MAX_DIMS, "case {case}: {} dims", cd.len());
            let contiguous = cs_a == cs_out && cs_b == cs_out;
            let da = crate::with_cpu_storage!(a.cpu_storage("t").unwrap(), s => s.iter().map(|x| crate::Element::to_f32(*x)).collect::<Vec<f32>>());
            let db = b.to_vec::<f32>().unwrap();
            let n = shape.elem_count();
            let mut out = vec![f32::NAN; n];
            for (i, o) in out.iter_mut().enumerate() {
                let (mut ia, mut ib) = (la.layout().offset(), lb.layout().offset());
                if contiguous {
                    ia += i;
                    ib += i;
                } else {
                    let mut rem = i;
                    for d in (0..cd.len()).rev() {
                        let c = rem % cd[d];
                        rem /= cd[d];
                        ia += c * cs_a[d];
                        ib += c * cs_b[d];
                    }
                }
                *o = da[ia] + db[ib];
            }
            let want = binary_ref(&a, &b, BinaryOp::Add).unwrap().to_vec::<f32>().unwrap();
            assert_eq!(out, want, "case {case}: {:?} + {:?}", a.shape(), b.shape());
        }
    }

    #[test]
    fn coalesce_merges_dense_runs_and_drops_ones() {
        let (d, [s]) = coalesce(&[2, 1, 3, 4], [&[12, 99, 4, 1]]);
        assert_eq!((d, s), (vec![24], vec![1]));
        // Dims 1 and 2 are one run in both stride vectors; dim 0 is not (1 != 8·3 in the second).
        let (d, [s, t]) = coalesce(&[2, 3, 4], [&[12, 4, 1], &[1, 8, 2]]);
        assert_eq!((d, s, t), (vec![2, 12], vec![12, 1], vec![1, 2]));
        let (d, [s]) = coalesce(&[2, 3, 4], [&[1, 8, 2]]);
        assert_eq!((d, s), (vec![2, 12], vec![1, 2]));
        let (d, [s]) = coalesce(&[1, 1], [&[5, 7]]);
        assert!(d.is_empty() && s.is_empty());
    }
}
