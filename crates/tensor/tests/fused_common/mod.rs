//! Helpers for the fused-op tests (rmsnorm, rope, swiglu, attention, cross_entropy): named
//! tolerances that scale with the value, random non-zero data, dtype rounding, non-contiguous
//! views of the same values, and central finite differences in f64.
#![allow(dead_code)]

use tensor::{DType, Rng, Tensor};

/// `|got − want| <= abs + rel·|want|`.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    pub abs: f64,
    pub rel: f64,
}

/// f32 fast path against the f64 reference (a few ulp per accumulated term).
pub const F32: Tol = Tol { abs: 1e-5, rel: 1e-5 };
/// bf16 outputs: one rounding to 8 mantissa bits on top of the f32 error.
pub const BF16: Tol = Tol { abs: 1e-3, rel: 8e-3 };
/// f16 outputs: one rounding to 11 mantissa bits.
pub const F16: Tol = Tol { abs: 1e-4, rel: 1e-3 };
/// Central differences in f64 with `H` against an analytic f64 gradient.
pub const FD: Tol = Tol { abs: 1e-7, rel: 1e-6 };
/// Step for central differences: error O(H²) ≈ 1e-12, cancellation ≈ 1e-16/H.
pub const H: f64 = 1e-5;

pub fn tol_for(dtype: DType) -> Tol {
    match dtype {
        DType::BF16 => BF16,
        DType::F16 => F16,
        _ => F32,
    }
}

/// Panics naming `what` and the worst element when any element is out of tolerance.
pub fn assert_close(what: &str, got: &[f32], want: &[f64], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err <= tol.abs + tol.rel * w.abs(), "{what}[{i}]: got {g}, want {w} (err {err:e}, tol {tol:?})");
    }
}

/// [`assert_close`] with a per-element allowance `extra[i]` added to the bound: for errors that
/// a test derives from how an input's rounding propagates, element by element.
pub fn assert_close_plus(what: &str, got: &[f32], want: &[f64], tol: Tol, extra: &[f64]) {
    assert_eq!((got.len(), extra.len()), (want.len(), want.len()), "{what}: length");
    for (i, ((&g, &w), &x)) in got.iter().zip(want).zip(extra).enumerate() {
        let err = (g as f64 - w).abs();
        let bound = tol.abs + tol.rel * w.abs() + x;
        assert!(err <= bound, "{what}[{i}]: got {g}, want {w} (err {err:e}, tol {tol:?} + {x:e})");
    }
}

/// Unit roundoff of the dtype (half an ulp at 1): the relative error of one rounding to it.
pub fn unit_roundoff(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 2f64.powi(-8),
        DType::F16 => 2f64.powi(-11),
        _ => 2f64.powi(-24),
    }
}

/// The same for two f64 vectors.
pub fn assert_close64(what: &str, got: &[f64], want: &[f64], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g - w).abs();
        assert!(err <= tol.abs + tol.rel * w.abs(), "{what}[{i}]: got {g}, want {w} (err {err:e}, tol {tol:?})");
    }
}

/// `n` samples of `N(mean, std²)`, none exactly zero.
pub fn randn(rng: &mut Rng, n: usize, mean: f32, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = mean + std * rng.normal();
            if v == 0.0 {
                0.5
            } else {
                v
            }
        })
        .collect()
}

/// A tensor of `dtype` holding `v` (rounded), and the rounded values widened to f64.
pub fn tensor_of(v: &[f32], dims: &[usize], dtype: DType) -> (Tensor, Vec<f64>) {
    let t = match dtype {
        DType::F32 => Tensor::from_slice(v, dims).unwrap(),
        DType::BF16 => {
            Tensor::from_vec(v.iter().map(|&x| tensor::bf16::from_f32(x)).collect::<Vec<_>>(), dims).unwrap()
        }
        DType::F16 => Tensor::from_vec(v.iter().map(|&x| tensor::f16::from_f32(x)).collect::<Vec<_>>(), dims).unwrap(),
        _ => panic!("tensor_of: {dtype:?}"),
    };
    let r = t.to_vec_f32().unwrap().into_iter().map(f64::from).collect();
    (t, r)
}

pub fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// A non-contiguous view with the same shape and values as `t`: each value stored twice along a
/// new last dimension of 2, of which column 0 is kept (every stride doubles).
pub fn noncontig(t: &Tensor) -> Tensor {
    let x = t.to_vec_f32().unwrap();
    let doubled: Vec<f32> = x.iter().flat_map(|&a| [a, a]).collect();
    let mut dims = t.dims().to_vec();
    dims.push(2);
    let (d, _) = tensor_of(&doubled, &dims, t.dtype());
    let v = d.narrow(t.rank(), 0, 1).unwrap().squeeze(t.rank()).unwrap();
    assert!(!v.is_contiguous() || t.elem_count() <= 1, "noncontig: view is contiguous");
    assert_eq!(v.dims(), t.dims());
    v
}

/// `∂f/∂x_i` by central differences for every `i`.
pub fn numeric_grad(f: impl Fn(&[f64]) -> f64, x: &[f64]) -> Vec<f64> {
    let mut xp = x.to_vec();
    (0..x.len())
        .map(|i| {
            let x0 = xp[i];
            xp[i] = x0 + H;
            let fp = f(&xp);
            xp[i] = x0 - H;
            let fm = f(&xp);
            xp[i] = x0;
            (fp - fm) / (2.0 * H)
        })
        .collect()
}

/// `Σ a·b` in f64.
pub fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The dtypes every float op takes.
pub const FLOATS: [DType; 3] = [DType::F32, DType::BF16, DType::F16];
