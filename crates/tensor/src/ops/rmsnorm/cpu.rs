//! CPU RMSNorm: the fast path (rows in parallel with rayon, eight-lane sums) and the plain f64
//! scalar references `*_ref` that tests compare it with and differentiate by finite differences.
//! Layout: `x`, `y`, `dy`, `dx` are `(R, C)` row-major; `w`, `dw` are `(C,)`; `rstd` is `(R,)`.
//! Lengths are checked by `mod.rs`; these functions assume them consistent (C > 0).

use super::super::fused::dot;
use rayon::prelude::*;

/// Rows per rayon task: enough work (about 16K elements) to amortise the task overhead.
fn rows_per_task(c: usize) -> usize {
    (16 * 1024 / c.max(1)).max(1)
}

/// Forward: `(y, rstd)` with `y = x * rstd * w`, `rstd = 1/sqrt(mean(x²) + eps)`.
pub fn rmsnorm_fwd(x: &[f32], w: &[f32], c: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let rows = x.len() / c;
    let mut y = vec![0.0f32; x.len()];
    let mut rstd = vec![0.0f32; rows];
    y.par_chunks_mut(c).zip(rstd.par_iter_mut()).zip(x.par_chunks(c)).with_min_len(rows_per_task(c)).for_each(
        |((yr, r), xr)| {
            let rs = 1.0 / (dot(xr, xr) / c as f32 + eps).sqrt();
            *r = rs;
            // HF's order: normalise, then scale by the weight.
            for ((y, &x), &w) in yr.iter_mut().zip(xr).zip(w) {
                *y = (x * rs) * w;
            }
        },
    );
    (y, rstd)
}

/// Backward: `(dx, dw)`. With `x̂ = x·rstd` and `g = dy·w`,
/// `dx = rstd·(g − x̂·mean(g·x̂))` and `dw = Σ_rows dy·x̂`.
pub fn rmsnorm_bwd(dy: &[f32], x: &[f32], w: &[f32], rstd: &[f32], c: usize) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0f32; x.len()];
    let block = rows_per_task(c);
    // Each task keeps its own partial dw over a block of rows.
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(c * block)
        .zip(x.par_chunks(c * block))
        .zip(dy.par_chunks(c * block))
        .zip(rstd.par_chunks(block))
        .map(|(((dxb, xb), dyb), rb)| {
            let mut dw = vec![0.0f32; c];
            let mut g = vec![0.0f32; c];
            for (((dxr, xr), dyr), &rs) in dxb.chunks_mut(c).zip(xb.chunks(c)).zip(dyb.chunks(c)).zip(rb) {
                for ((g, &d), &w) in g.iter_mut().zip(dyr).zip(w) {
                    *g = d * w;
                }
                let m = dot(&g, xr) * rs / c as f32;
                let k = rs * rs * m;
                for (((dx, &g), &x), (dw, &d)) in dxr.iter_mut().zip(&g).zip(xr).zip(dw.iter_mut().zip(dyr)) {
                    *dx = rs * g - k * x;
                    *dw += d * x * rs;
                }
            }
            dw
        })
        .collect::<Vec<_>>();
    // Summed in block order (not rayon's adaptive reduce tree) so dw does not depend on the
    // thread count or on scheduling.
    let mut dw = vec![0.0f32; c];
    for p in &partials {
        dw.iter_mut().zip(p).for_each(|(a, b)| *a += b);
    }
    (dx, dw)
}

/// Reference forward in f64, one element at a time: `(y, rstd)`.
pub fn rmsnorm_fwd_ref(x: &[f64], w: &[f64], c: usize, eps: f64) -> (Vec<f64>, Vec<f64>) {
    let mut y = Vec::with_capacity(x.len());
    let mut rstd = Vec::new();
    for row in x.chunks(c) {
        let mut ss = 0.0;
        for &v in row {
            ss += v * v;
        }
        let rs = 1.0 / (ss / c as f64 + eps).sqrt();
        rstd.push(rs);
        for j in 0..c {
            y.push(row[j] * rs * w[j]);
        }
    }
    (y, rstd)
}

/// Reference backward in f64 from the chain rule written out directly:
/// `∂rstd/∂x_i = −rstd³·x_i/C`, so `dx_i = rstd·dy_i·w_i − rstd³·x_i/C · Σ_j dy_j·w_j·x_j`.
pub fn rmsnorm_bwd_ref(dy: &[f64], x: &[f64], w: &[f64], rstd: &[f64], c: usize) -> (Vec<f64>, Vec<f64>) {
    let mut dx = Vec::with_capacity(x.len());
    let mut dw = vec![0.0; c];
    for (r, (xr, dyr)) in x.chunks(c).zip(dy.chunks(c)).enumerate() {
        let rs = rstd[r];
        let mut s = 0.0;
        for j in 0..c {
            s += dyr[j] * w[j] * xr[j];
            dw[j] += dyr[j] * xr[j] * rs;
        }
        for i in 0..c {
            dx.push(rs * dyr[i] * w[i] - rs * rs * rs * xr[i] / c as f64 * s);
        }
    }
    (dx, dw)
}
