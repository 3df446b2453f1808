//! CPU cross-entropy: rows in parallel, each row's max and `Σ exp(x − max)` in eight f32 lanes
//! with the vectorisable `exp` from `ops::fused`, and plain f64 references `*_ref`.
//! Layout: `logits`, `dlogits` are `(N, V)` row-major; `targets`, `lse` are `(N,)`.
//! Targets and lengths are checked by the caller (`mod.rs`): each target is `ignore` or in
//! `0..V`, and V > 0.

use super::super::fused::{exp_sub_inplace, exp_sub_sum_into, lane_max, lane_sum};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows per rayon task for small vocabularies.
fn rows_per_task(v: usize) -> usize {
    (16 * 1024 / v.max(1)).max(1)
}

/// Stable logsumexp of one row: `max + ln Σ exp(x − max)`, the exponentials computed a block at
/// a time into a stack buffer so the exp loop vectorises apart from the sum.
fn row_lse(x: &[f32]) -> f32 {
    let m = lane_max(x);
    if m == f32::NEG_INFINITY {
        return m; // every logit is −inf (or the row is empty): exp(x − m) would be NaN.
    }
    let mut buf = [0.0f32; 512];
    let mut s = 0.0f32;
    for block in x.chunks(buf.len()) {
        let b = &mut buf[..block.len()];
        b.copy_from_slice(block);
        exp_sub_inplace(b, m);
        s += lane_sum(b);
    }
    m + s.ln()
}

/// Forward: `(loss_sum, count, lse)`; the sum is over rows whose target is not `ignore`, in f64
/// and in row order so it does not depend on the thread count.
pub fn ce_fwd(logits: &[f32], targets: &[i32], v: usize, ignore: i32) -> (f64, usize, Vec<f32>) {
    let n = targets.len();
    let mut lse = vec![0.0f32; n];
    let mut loss = vec![0.0f64; n];
    lse.par_iter_mut()
        .zip(loss.par_iter_mut())
        .zip(logits.par_chunks(v).zip(targets.par_iter()))
        .with_min_len(rows_per_task(v))
        .for_each(|((l, loss), (x, &t))| {
            *l = row_lse(x);
            if t != ignore {
                *loss = *l as f64 - x[t as usize] as f64;
            }
        });
    let count = targets.iter().filter(|&&t| t != ignore).count();
    (loss.iter().sum(), count, lse)
}

/// Backward: `dlogits = grad_scale · (exp(x − lse) − onehot(t))`, zero rows where `t == ignore`.
pub fn ce_bwd(logits: &[f32], targets: &[i32], lse: &[f32], v: usize, ignore: i32, grad_scale: f32) -> Vec<f32> {
    let mut dx = vec![0.0f32; logits.len()];
    dx.par_chunks_mut(v)
        .zip(logits.par_chunks(v))
        .zip(targets.par_iter().zip(lse.par_iter()))
        .with_min_len(rows_per_task(v))
        .for_each(|((d, x), (&t, &l))| {
            if t == ignore {
                return; // already zero
            }
            d.copy_from_slice(x);
            exp_sub_inplace(d, l);
            d.iter_mut().for_each(|d| *d *= grad_scale);
            d[t as usize] -= grad_scale;
        });
    dx
}

/// Forward and backward in one pass over each row: `(loss_sum, count, dlogits)` with
/// `dlogits = grad_scale · (exp(x − max)/Σ − onehot(t))` — the exponentials are computed once,
/// into the gradient row, and normalised there; zero rows where `t == ignore`. `logits` must be
/// `targets.len()·v` long with `v > 0` (else NaN loss and gradient).
pub fn ce_fwd_grad(logits: &[f32], targets: &[i32], v: usize, ignore: i32, grad_scale: f32) -> (f64, usize, Vec<f32>) {
    let n = targets.len();
    let len = logits.len();
    if v == 0 || len != n * v {
        // Lengths that do not match (`mod.rs` checks them first): NaN rather than a partial row.
        return (f64::NAN, 0, vec![f32::NAN; len]);
    }
    // dx is written in full below, row by row, so it starts uninitialised (zeroing 32 MB of
    // gradient for the 32000-wide head cost ~3 ms a step).
    let mut dx: Vec<f32> = Vec::with_capacity(len);
    let mut loss = vec![0.0f64; n];
    dx.spare_capacity_mut()[..len]
        .par_chunks_mut(v)
        .zip(loss.par_iter_mut())
        .zip(logits.par_chunks(v).zip(targets.par_iter()))
        .with_min_len(rows_per_task(v))
        .for_each(|((d, loss), (x, &t))| {
            if t == ignore {
                d.fill(MaybeUninit::new(0.0)); // zero gradient, no loss
                return;
            }
            let m = lane_max(x);
            if m == f32::NEG_INFINITY {
                // Every logit −inf: NaN loss and gradient, as `ce_fwd`/`ce_bwd` give.
                *loss = f64::NAN;
                d.fill(MaybeUninit::new(f32::NAN));
                return;
            }
            let sum = exp_sub_sum_into(x, m, d);
            // SAFETY: `exp_sub_sum_into` wrote all `x.len() == d.len()` elements.
            let d = unsafe { &mut *(d as *mut [MaybeUninit<f32>] as *mut [f32]) };
            *loss = (m + sum.ln()) as f64 - x[t as usize] as f64;
            let k = grad_scale / sum;
            d.iter_mut().for_each(|d| *d *= k);
            d[t as usize] -= grad_scale;
        });
    // SAFETY: every row of the first `len` elements was written above (chunks of `v` cover
    // `len = n·v` exactly, one per target).
    unsafe { dx.set_len(len) };
    let count = targets.iter().filter(|&&t| t != ignore).count();
    (loss.iter().sum(), count, dx)
}

/// Reference forward in f64: `(loss_sum, count, lse)`.
pub fn ce_fwd_ref(logits: &[f64], targets: &[i32], v: usize, ignore: i32) -> (f64, usize, Vec<f64>) {
    let (mut loss, mut count, mut lse) = (0.0, 0, Vec::new());
    for (i, &t) in targets.iter().enumerate() {
        let row = &logits[i * v..(i + 1) * v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let l = m + row.iter().map(|&x| (x - m).exp()).sum::<f64>().ln();
        lse.push(l);
        if t != ignore {
            loss += l - row[t as usize];
            count += 1;
        }
    }
    (loss, count, lse)
}

/// Reference backward in f64, recomputing the softmax from the logits (not from `lse`).
pub fn ce_bwd_ref(logits: &[f64], targets: &[i32], v: usize, ignore: i32, grad_scale: f64) -> Vec<f64> {
    let mut dx = vec![0.0; logits.len()];
    for (i, &t) in targets.iter().enumerate() {
        if t == ignore {
            continue;
        }
        let row = &logits[i * v..(i + 1) * v];
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = row.iter().map(|&x| (x - m).exp()).sum();
        for j in 0..v {
            let onehot = if j == t as usize { 1.0 } else { 0.0 };
            dx[i * v + j] = grad_scale * ((row[j] - m).exp() / z - onehot);
        }
    }
    dx
}
