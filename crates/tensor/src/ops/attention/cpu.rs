//! CPU attention: FlashAttention-2 on the CPU. Forward: one rayon task per (batch, head, query
//! tile of 64), streaming key tiles of 64 through an online softmax; tile products go through the
//! `gemm` crate (single-threaded inside each task). Backward: one task per (batch, query head)
//! recomputing `P = exp(S − lse)` tile by tile, with per-head dk/dv partials summed over each
//! GQA group afterwards, so no two tasks write the same memory. Plus plain f64 references `*_ref`.
//! Layout: `q`, `out`, `dout`, `dq` are `(B, Hq, T, D)`; `k`, `v`, `dk`, `dv` are `(B, Hkv, S, D)`;
//! `lse` is `(B, Hq, T)`; all row-major. Never materialises more than one (64, 64) score tile
//! per task.
//! Lengths are checked by `mod.rs`; these functions assume them consistent
//! (D > 0, Hq a multiple of Hkv, T <= S).

use super::super::fused::{dot, exp_f32, exp_sub_inplace, lane_max, lane_sum};
use rayon::prelude::*;

/// The sizes of one attention call: `q (B, Hq, T, D)`, `k`, `v (B, Hkv, S, D)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub b: usize,
    pub hq: usize,
    pub hkv: usize,
    pub t: usize,
    pub s: usize,
    pub d: usize,
}

impl Dims {
    /// Query heads per KV head.
    fn group(&self) -> usize {
        self.hq / self.hkv
    }
    /// Number of keys query `t` may see: `0..=S−T+t`.
    fn visible(&self, t: usize) -> usize {
        self.s - self.t + t + 1
    }
    /// Element offset of the KV head used by flattened query head `bh = b·Hq + h`.
    fn kv_offset(&self, bh: usize) -> usize {
        let (b, h) = (bh / self.hq, bh % self.hq);
        (b * self.hkv + h / self.group()) * self.s * self.d
    }
}

/// Query rows per tile.
const BQ: usize = 64;
/// Keys per tile.
const BK: usize = 64;

/// `dst (m, n) = [dst +] alpha · A (m, k) · B (k, n)`, where `A[i, p] = a[i·a_rs + p·a_cs]`,
/// `B[p, j] = b[p·b_rs + j·b_cs]` and `dst[i, j] = dst[i·dst_rs + j]`.
#[allow(clippy::too_many_arguments)]
fn matmul_tile(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    (a, a_rs, a_cs): (&[f32], usize, usize),
    (b, b_rs, b_cs): (&[f32], usize, usize),
    alpha: f32,
) {
    if m == 0 || n == 0 || k == 0 {
        return; // callers never ask for an empty product
    }
    // The bounds `gemm` relies on; a failure here is a bug in this file, not bad input.
    assert!(
        (m - 1) * dst_rs + n <= dst.len()
            && (m - 1) * a_rs + (k - 1) * a_cs < a.len()
            && (k - 1) * b_rs + (n - 1) * b_cs < b.len(),
        "attention: tile product out of bounds"
    );
    // SAFETY: the assertion above keeps every element gemm touches inside the three slices, and
    // `dst` is borrowed mutably so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Forward: `(out, lse)`.
pub fn attention_fwd(q: &[f32], k: &[f32], v: &[f32], dims: Dims, scale: f32) -> (Vec<f32>, Vec<f32>) {
    let Dims { b, hq, t, s, d, .. } = dims;
    let mut out = vec![0.0f32; b * hq * t * d];
    let mut lse = vec![0.0f32; b * hq * t];
    if out.is_empty() {
        return (out, lse);
    }
    out.par_chunks_mut(t * d).zip(lse.par_chunks_mut(t)).enumerate().for_each(|(bh, (out_h, lse_h))| {
        let kv = dims.kv_offset(bh);
        let q_h = &q[bh * t * d..(bh + 1) * t * d]; // (T, D)
        let (k_h, v_h) = (&k[kv..kv + s * d], &v[kv..kv + s * d]); // (S, D)
        out_h
            .par_chunks_mut(BQ * d)
            .zip(lse_h.par_chunks_mut(BQ))
            .enumerate()
            .for_each(|(tile, (o, l))| fwd_tile(q_h, k_h, v_h, tile * BQ, o, l, dims, scale));
    });
    (out, lse)
}

/// One query tile: rows `t0..t0+bq` of one head; `o` is `(bq, D)` and starts at zero.
#[allow(clippy::too_many_arguments)]
fn fwd_tile(q_h: &[f32], k_h: &[f32], v_h: &[f32], t0: usize, o: &mut [f32], lse: &mut [f32], dims: Dims, scale: f32) {
    let (d, bq) = (dims.d, lse.len());
    let q_t = &q_h[t0 * d..(t0 + bq) * d];
    let mut sc = vec![0.0f32; bq * BK]; // (bq, BK) scores, then probabilities
    let mut m = vec![f32::NEG_INFINITY; bq]; // running max
    let mut l = vec![0.0f32; bq]; // running Σ exp(s − m)
    let kend = dims.visible(t0 + bq - 1);
    for j0 in (0..kend).step_by(BK) {
        let bk = BK.min(kend - j0);
        matmul_tile((bq, bk, d), &mut sc, BK, false, (q_t, d, 1), (&k_h[j0 * d..], 1, d), scale);
        for r in 0..bq {
            let row = &mut sc[r * BK..r * BK + bk];
            // Key 0 is visible to every query, so each row's max is finite after the first tile.
            let valid = dims.visible(t0 + r).saturating_sub(j0).min(bk);
            let mx = lane_max(&row[..valid]);
            let m_new = if mx > m[r] { mx } else { m[r] };
            exp_sub_inplace(&mut row[..valid], m_new);
            row[valid..].fill(0.0);
            if valid == 0 {
                continue;
            }
            let corr = exp_f32(m[r] - m_new);
            l[r] = l[r] * corr + lane_sum(&row[..valid]);
            m[r] = m_new;
            if corr != 1.0 {
                o[r * d..(r + 1) * d].iter_mut().for_each(|x| *x *= corr);
            }
        }
        matmul_tile((bq, d, bk), o, d, true, (&sc, BK, 1), (&v_h[j0 * d..], d, 1), 1.0);
    }
    for r in 0..bq {
        let inv = 1.0 / l[r];
        o[r * d..(r + 1) * d].iter_mut().for_each(|x| *x *= inv);
        lse[r] = m[r] + l[r].ln();
    }
}

/// Backward: `(dq, dk, dv)`.
#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    dims: Dims,
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims { b, hq, hkv, t, s, d } = dims;
    let g = dims.group();
    let mut dq = vec![0.0f32; b * hq * t * d];
    // Per query head dk/dv (B, Hq, S, D); with g == 1 these are the results themselves.
    let mut dk_h = vec![0.0f32; b * hq * s * d];
    let mut dv_h = vec![0.0f32; b * hq * s * d];
    if t == 0 || dq.is_empty() {
        return (dq, vec![0.0; b * hkv * s * d], vec![0.0; b * hkv * s * d]);
    }
    dq.par_chunks_mut(t * d).zip(dk_h.par_chunks_mut(s * d).zip(dv_h.par_chunks_mut(s * d))).enumerate().for_each(
        |(bh, (dq_h, (dk_h, dv_h)))| {
            let kv = dims.kv_offset(bh);
            let rows = bh * t * d..(bh + 1) * t * d;
            let head = Head {
                dout: &dout[rows.clone()],
                q: &q[rows.clone()],
                out: &out[rows],
                lse: &lse[bh * t..(bh + 1) * t],
                k: &k[kv..kv + s * d],
                v: &v[kv..kv + s * d],
            };
            bwd_head(&head, dq_h, dk_h, dv_h, dims, scale)
        },
    );
    if g == 1 {
        return (dq, dk_h, dv_h);
    }
    let mut dk = vec![0.0f32; b * hkv * s * d];
    let mut dv = vec![0.0f32; b * hkv * s * d];
    // Sum each group's heads in a fixed order so results do not depend on the thread count.
    dk.par_chunks_mut(s * d).zip(dv.par_chunks_mut(s * d)).enumerate().for_each(|(bkv, (dk, dv))| {
        let first = (bkv / hkv) * hq + (bkv % hkv) * g;
        for h in first..first + g {
            let part = h * s * d..(h + 1) * s * d;
            dk.iter_mut().zip(&dk_h[part.clone()]).for_each(|(a, b)| *a += b);
            dv.iter_mut().zip(&dv_h[part]).for_each(|(a, b)| *a += b);
        }
    });
    (dq, dk, dv)
}

/// One query head's inputs: `dout`, `q`, `out` `(T, D)`, `lse` `(T,)`, and its KV head's `k`,
/// `v` `(S, D)`.
struct Head<'a> {
    dout: &'a [f32],
    q: &'a [f32],
    out: &'a [f32],
    lse: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

/// One query head: writes `dq_h (T, D)` and this head's contributions `dk_h`, `dv_h (S, D)`.
fn bwd_head(hd: &Head, dq_h: &mut [f32], dk_h: &mut [f32], dv_h: &mut [f32], dims: Dims, scale: f32) {
    let (t, d) = (dims.t, dims.d);
    // delta_t = Σ_j P_tj·dP_tj = dout_t · out_t (FlashAttention-2), so no full row of P is needed.
    let delta: Vec<f32> = (0..t).map(|i| dot(&hd.dout[i * d..(i + 1) * d], &hd.out[i * d..(i + 1) * d])).collect();
    let mut p = vec![0.0f32; BQ * BK]; // (bq, BK)
    let mut ds = vec![0.0f32; BQ * BK]; // (bq, BK): dP, then dS
    for t0 in (0..t).step_by(BQ) {
        let bq = BQ.min(t - t0);
        let (q_t, do_t) = (&hd.q[t0 * d..(t0 + bq) * d], &hd.dout[t0 * d..(t0 + bq) * d]);
        let dq_t = &mut dq_h[t0 * d..(t0 + bq) * d];
        let kend = dims.visible(t0 + bq - 1);
        for j0 in (0..kend).step_by(BK) {
            let bk = BK.min(kend - j0);
            let (k_j, v_j) = (&hd.k[j0 * d..], &hd.v[j0 * d..]);
            matmul_tile((bq, bk, d), &mut p, BK, false, (q_t, d, 1), (k_j, 1, d), scale);
            for r in 0..bq {
                let valid = dims.visible(t0 + r).saturating_sub(j0).min(bk);
                let (row, lr) = (&mut p[r * BK..r * BK + bk], hd.lse[t0 + r]);
                exp_sub_inplace(&mut row[..valid], lr);
                row[valid..].fill(0.0);
            }
            // dV (bk, D) += Pᵀ · dO
            matmul_tile((bk, d, bq), &mut dv_h[j0 * d..], d, true, (&p, 1, BK), (do_t, d, 1), 1.0);
            // dP (bq, bk) = dO · Vᵀ
            matmul_tile((bq, bk, d), &mut ds, BK, false, (do_t, d, 1), (v_j, 1, d), 1.0);
            for r in 0..bq {
                let dl = delta[t0 + r];
                for (x, &pv) in ds[r * BK..r * BK + bk].iter_mut().zip(&p[r * BK..r * BK + bk]) {
                    *x = pv * (*x - dl);
                }
            }
            // dQ (bq, D) += scale · dS · K;  dK (bk, D) += scale · dSᵀ · Q
            matmul_tile((bq, d, bk), dq_t, d, true, (&ds, BK, 1), (k_j, d, 1), scale);
            matmul_tile((bk, d, bq), &mut dk_h[j0 * d..], d, true, (&ds, 1, BK), (q_t, d, 1), scale);
        }
    }
}

/// Reference forward in f64: full softmax per query row, `(out, lse)`.
pub fn attention_fwd_ref(q: &[f64], k: &[f64], v: &[f64], dims: Dims, scale: f64) -> (Vec<f64>, Vec<f64>) {
    let Dims { b, hq, t, d, .. } = dims;
    let mut out = vec![0.0; b * hq * t * d];
    let mut lse = vec![0.0; b * hq * t];
    for bh in 0..b * hq {
        let kv = dims.kv_offset(bh);
        for i in 0..t {
            let qr = &q[(bh * t + i) * d..(bh * t + i + 1) * d];
            let n = dims.visible(i);
            let sc: Vec<f64> = (0..n).map(|j| scale * (0..d).map(|c| qr[c] * k[kv + j * d + c]).sum::<f64>()).collect();
            let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = sc.iter().map(|&x| (x - m).exp()).sum();
            lse[bh * t + i] = m + z.ln();
            for j in 0..n {
                let p = (sc[j] - m).exp() / z;
                for c in 0..d {
                    out[(bh * t + i) * d + c] += p * v[kv + j * d + c];
                }
            }
        }
    }
    (out, lse)
}

/// Reference backward in f64 from the softmax Jacobian (`dS = P∘(dP − Σ P·dP)`), recomputing
/// `P` from `q` and `k` rather than using `lse` or `out`.
pub fn attention_bwd_ref(
    dout: &[f64],
    q: &[f64],
    k: &[f64],
    v: &[f64],
    dims: Dims,
    scale: f64,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let Dims { b, hq, hkv, t, s, d } = dims;
    let mut dq = vec![0.0; b * hq * t * d];
    let mut dk = vec![0.0; b * hkv * s * d];
    let mut dv = vec![0.0; b * hkv * s * d];
    for bh in 0..b * hq {
        let kv = dims.kv_offset(bh);
        for i in 0..t {
            let row = (bh * t + i) * d;
            let n = dims.visible(i);
            let sc: Vec<f64> =
                (0..n).map(|j| scale * (0..d).map(|c| q[row + c] * k[kv + j * d + c]).sum::<f64>()).collect();
            let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = sc.iter().map(|&x| (x - m).exp()).sum();
            let p: Vec<f64> = sc.iter().map(|&x| (x - m).exp() / z).collect();
            let dp: Vec<f64> = (0..n).map(|j| (0..d).map(|c| dout[row + c] * v[kv + j * d + c]).sum::<f64>()).collect();
            let pdp: f64 = (0..n).map(|j| p[j] * dp[j]).sum();
            for j in 0..n {
                let ds = p[j] * (dp[j] - pdp);
                for c in 0..d {
                    dv[kv + j * d + c] += p[j] * dout[row + c];
                    dq[row + c] += scale * ds * k[kv + j * d + c];
                    dk[kv + j * d + c] += scale * ds * q[row + c];
                }
            }
        }
    }
    (dq, dk, dv)
}
