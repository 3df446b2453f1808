//! CPU RoPE: tables as HF computes them in f32, the rotation (heads in parallel; the backward is
//! the same loop with `sin` negated), and plain f64 references `*_ref`.
//! Layout: `x`, `y` are `(B, H, T, D)` row-major; `cos`, `sin` are `(T, D/2)`.
//! Lengths are checked by `mod.rs`; these functions assume them consistent (D even).

use rayon::prelude::*;

/// `(cos, sin)`, each `(T, D/2)` row-major, following HF's f32 steps: `e = f32(2i) / f32(D)`,
/// `p = theta^e` rounded to f32 (an f64 `pow`, so correctly rounded; torch's f32 `pow` is within
/// an ulp of it), `inv_freq = 1 / p` in f32, `angle = f32(pos) · inv_freq` in f32 (HF's K=1
/// matmul), and cos/sin of that f32 angle rounded to f32.
pub fn rope_tables(d: usize, theta: f64, pos0: usize, t: usize) -> (Vec<f32>, Vec<f32>) {
    let half = d / 2;
    let theta32 = theta as f32 as f64;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| {
            let e = (2 * i) as f32 / d as f32;
            1.0 / theta32.powf(e as f64) as f32
        })
        .collect();
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for p in pos0..pos0 + t {
        for &f in &inv_freq {
            let angle = (p as f32 * f) as f64;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    (cos, sin)
}

/// The rotation of every `(D)` row of `x`; with `inverse` the angle is negated (the backward).
pub fn rope_fwd(x: &[f32], cos: &[f32], sin: &[f32], t: usize, d: usize, inverse: bool) -> Vec<f32> {
    let half = d / 2;
    let sign = if inverse { -1.0f32 } else { 1.0 };
    let mut y = vec![0.0f32; x.len()];
    if t == 0 || d == 0 {
        return y;
    }
    // One (T, D) head per task.
    y.par_chunks_mut(t * d).zip(x.par_chunks(t * d)).for_each(|(yh, xh)| {
        for (pos, (yr, xr)) in yh.chunks_mut(d).zip(xh.chunks(d)).enumerate() {
            let (c, s) = (&cos[pos * half..(pos + 1) * half], &sin[pos * half..(pos + 1) * half]);
            let (x1, x2) = xr.split_at(half);
            let (y1, y2) = yr.split_at_mut(half);
            for i in 0..half {
                let si = sign * s[i];
                y1[i] = x1[i] * c[i] - x2[i] * si;
                y2[i] = x2[i] * c[i] + x1[i] * si;
            }
        }
    });
    y
}

/// Reference tables: the same f32 recipe, element by element (angles widened to f64 for cos/sin).
pub fn rope_tables_ref(d: usize, theta: f64, pos0: usize, t: usize) -> (Vec<f64>, Vec<f64>) {
    let mut cos = Vec::new();
    let mut sin = Vec::new();
    for p in pos0..pos0 + t {
        for i in 0..d / 2 {
            let inv = 1.0f32 / (theta as f32 as f64).powf(((2 * i) as f32 / d as f32) as f64) as f32;
            let angle = (p as f32 * inv) as f64;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// Reference forward in f64 via HF's formula `x·cos + rotate_half(x)·sin` with
/// `rotate_half(x) = cat(−x2, x1)` and `cos`, `sin` repeated over both halves.
pub fn rope_fwd_ref(x: &[f64], cos: &[f64], sin: &[f64], t: usize, d: usize) -> Vec<f64> {
    let half = d / 2;
    let mut y = vec![0.0; x.len()];
    for row in 0..x.len() / d {
        let pos = row % t;
        for j in 0..d {
            let (c, s) = (cos[pos * half + j % half], sin[pos * half + j % half]);
            let rot = if j < half { -x[row * d + j + half] } else { x[row * d + j - half] };
            y[row * d + j] = x[row * d + j] * c + rot * s;
        }
    }
    y
}

/// Reference backward in f64: the transpose of the forward's linear map, written as such
/// (`dx = cos·dy + rotate_halfᵀ(sin·dy)`, `rotate_halfᵀ(z) = cat(z2, −z1)`).
pub fn rope_bwd_ref(dy: &[f64], cos: &[f64], sin: &[f64], t: usize, d: usize) -> Vec<f64> {
    let half = d / 2;
    let mut dx = vec![0.0; dy.len()];
    for row in 0..dy.len() / d {
        let pos = row % t;
        for j in 0..d {
            let k = pos * half + j % half;
            dx[row * d + j] += dy[row * d + j] * cos[k];
            // y[j] depends on x[j + half] (j < half) with coefficient −sin, on x[j − half] with +sin.
            if j < half {
                dx[row * d + j + half] -= dy[row * d + j] * sin[k];
            } else {
                dx[row * d + j - half] += dy[row * d + j] * sin[k];
            }
        }
    }
    dx
}
