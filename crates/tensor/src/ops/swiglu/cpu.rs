//! CPU SwiGLU: the fast path (chunks in parallel, the vectorisable `exp` from `ops::fused`) and
//! the plain f64 references `*_ref`. All slices have the same length.
//! Lengths are checked by `mod.rs`; these functions assume them consistent.

use super::super::fused::exp_f32;
use rayon::prelude::*;

/// Elements per rayon task.
const CHUNK: usize = 16 * 1024;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `silu(g) * u = g·σ(g)·u`.
pub fn swiglu_fwd(g: &[f32], u: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0f32; g.len()];
    y.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)).zip(u.par_chunks(CHUNK)).for_each(|((y, g), u)| {
        for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
            *y = g * sigmoid(g) * u;
        }
    });
    y
}

/// `(dg, du)`: `dg = dy·u·σ(g)·(1 + g·(1 − σ(g)))`, `du = dy·g·σ(g)`.
pub fn swiglu_bwd(dy: &[f32], g: &[f32], u: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dg = vec![0.0f32; g.len()];
    let mut du = vec![0.0f32; g.len()];
    dg.par_chunks_mut(CHUNK)
        .zip(du.par_chunks_mut(CHUNK))
        .zip(dy.par_chunks(CHUNK))
        .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
        .for_each(|(((dg, du), dy), (g, u))| {
            for ((dg, du), ((&d, &g), &u)) in dg.iter_mut().zip(du.iter_mut()).zip(dy.iter().zip(g).zip(u)) {
                let s = sigmoid(g);
                *dg = d * u * s * (1.0 + g * (1.0 - s));
                *du = d * g * s;
            }
        });
    (dg, du)
}

/// Reference forward in f64.
pub fn swiglu_fwd_ref(g: &[f64], u: &[f64]) -> Vec<f64> {
    g.iter().zip(u).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect()
}

/// Reference backward in f64, from `d silu(g)/dg = σ(g) + g·σ(g)·(1 − σ(g))`.
pub fn swiglu_bwd_ref(dy: &[f64], g: &[f64], u: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut dg = Vec::with_capacity(g.len());
    let mut du = Vec::with_capacity(g.len());
    for i in 0..g.len() {
        let s = 1.0 / (1.0 + (-g[i]).exp());
        dg.push(dy[i] * u[i] * (s + g[i] * s * (1.0 - s)));
        du.push(dy[i] * g[i] * s);
    }
    (dg, du)
}
