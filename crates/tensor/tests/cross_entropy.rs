//! Tests of `ops::cross_entropy`: the fast path against the f64 reference over random shapes,
//! dtypes, logit scales/offsets and ignored rows; the reference backward against finite
//! differences; a Llama-sized vocabulary; non-contiguous logits; and the errors (out-of-range
//! targets, wrong dtypes and shapes).

mod fused_common;

use fused_common::*;
use proptest::prelude::*;
use tensor::ops::cross_entropy::{self, cpu};
use tensor::{DType, Error, Rng, Tensor};

const IGNORE: i32 = -100;

/// Logits with a random scale and offset, and targets of which about a quarter are ignored.
fn case(n: usize, v: usize, seed: u64) -> (Vec<f32>, Vec<i32>) {
    let mut rng = Rng::new(seed);
    let (std, offset) = (0.1 + 8.0 * rng.uniform(), 40.0 * (rng.uniform() - 0.5));
    let logits = randn(&mut rng, n * v, offset, std);
    let targets = (0..n).map(|_| if rng.uniform() < 0.25 { IGNORE } else { rng.below(v) as i32 }).collect();
    (logits, targets)
}

fn check_against_ref(n: usize, v: usize, seed: u64, dtype: DType, grad_scale: f32) {
    let (lv, tv) = case(n, v, seed);
    let (logits, l64) = tensor_of(&lv, &[n, v], dtype);
    let targets = Tensor::from_slice(&tv, [n]).unwrap();
    let (loss, count, lse) = cross_entropy::fwd(&logits, &targets, IGNORE).unwrap();
    let (loss_ref, count_ref, lse_ref) = cpu::ce_fwd_ref(&l64, &tv, v, IGNORE);
    assert_eq!(count, count_ref);
    assert_eq!((loss.dims(), lse.dtype(), lse.dims()), (&[][..], DType::F32, &[n][..]));
    // lse and the loss are computed in f32 from the (rounded) inputs whatever the dtype.
    let max_abs = l64.iter().fold(0.0f64, |a, &x| a.max(x.abs()));
    let lse_tol = Tol { abs: F32.abs * (1.0 + max_abs), rel: F32.rel };
    assert_close("lse", &lse.to_vec::<f32>().unwrap(), &lse_ref, lse_tol);
    let loss_tol = Tol { abs: lse_tol.abs * n as f64, rel: F32.rel };
    assert_close("loss_sum", &[loss.to_scalar().unwrap()], &[loss_ref], loss_tol);

    let dl = cross_entropy::bwd(&logits, &targets, &lse, IGNORE, grad_scale).unwrap();
    assert_eq!((dl.dtype(), dl.dims()), (dtype, &[n, v][..]));
    let dl_ref = cpu::ce_bwd_ref(&l64, &tv, v, IGNORE, grad_scale as f64);
    // exp(x − lse) carries the absolute error of lse as a relative error.
    let t = tol_for(dtype);
    let dl_tol = Tol { abs: (t.abs + lse_tol.abs) * grad_scale as f64, rel: t.rel + lse_tol.abs };
    assert_close("dlogits", &dl.to_vec_f32().unwrap(), &dl_ref, dl_tol);

    // The one-pass forward + backward gives the same loss, count and gradient.
    let (loss2, count2, dl2) = cross_entropy::fwd_grad(&logits, &targets, IGNORE, |c| {
        assert_eq!(c, count_ref);
        grad_scale
    })
    .unwrap();
    assert_eq!(count2, count_ref);
    assert_eq!((dl2.dtype(), dl2.dims()), (dtype, &[n, v][..]));
    assert_close("loss_sum (fwd_grad)", &[loss2.to_scalar().unwrap()], &[loss_ref], loss_tol);
    assert_close("dlogits (fwd_grad)", &dl2.to_vec_f32().unwrap(), &dl_ref, dl_tol);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fast_matches_ref(n in 1usize..9, v in 1usize..300, seed in any::<u64>(), dt in 0usize..3, gs in 0.01f32..2.0) {
        check_against_ref(n, v, seed, FLOATS[dt], gs);
    }

    /// `L = grad_scale · loss_sum`; the reference backward is its gradient.
    #[test]
    fn ref_bwd_matches_finite_differences(n in 1usize..4, v in 1usize..10, seed in any::<u64>()) {
        let (lv, tv) = case(n, v, seed);
        let x = f64s(&lv);
        let gs = 0.37;
        let dx = cpu::ce_bwd_ref(&x, &tv, v, IGNORE, gs);
        let ndx = numeric_grad(|x| gs * cpu::ce_fwd_ref(x, &tv, v, IGNORE).0, &x);
        assert_close64("dlogits", &dx, &ndx, FD);
    }
}

/// SmolLM's vocabulary size, several rows (several rayon tasks).
#[test]
fn llama_sized_vocab() {
    check_against_ref(5, 49_152, 11, DType::F32, 0.2);
    check_against_ref(2, 49_152, 12, DType::BF16, 1.0);
}

/// Shifting every logit of a row by a constant changes nothing (max subtraction keeps it stable).
#[test]
fn stable_for_large_logits() {
    let (lv, tv) = case(3, 50, 5);
    let targets = Tensor::from_slice(&tv, [3]).unwrap();
    let base = cross_entropy::fwd(&Tensor::from_slice(&lv, [3, 50]).unwrap(), &targets, IGNORE).unwrap();
    let shifted: Vec<f32> = lv.iter().map(|&x| x + 5.0e4).collect();
    let shifted = cross_entropy::fwd(&Tensor::from_vec(shifted, [3, 50]).unwrap(), &targets, IGNORE).unwrap();
    let (a, b) = (base.0.to_scalar().unwrap() as f64, shifted.0.to_scalar().unwrap() as f64);
    assert!(b.is_finite() && (a - b).abs() < 0.05 + 1e-3 * a.abs(), "{a} vs {b}");
}

#[test]
fn all_ignored_gives_zero() {
    let logits = Tensor::from_vec(randn(&mut Rng::new(1), 12, 0.0, 1.0), [3, 4]).unwrap();
    let targets = Tensor::from_slice(&[IGNORE; 3], [3]).unwrap();
    let (loss, count, lse) = cross_entropy::fwd(&logits, &targets, IGNORE).unwrap();
    assert_eq!((loss.to_scalar().unwrap(), count), (0.0, 0));
    let dl = cross_entropy::bwd(&logits, &targets, &lse, IGNORE, 1.0).unwrap();
    assert!(dl.to_vec::<f32>().unwrap().iter().all(|&x| x == 0.0));
}

#[test]
fn non_contiguous_inputs_match() {
    let (lv, tv) = case(4, 33, 8);
    let logits = Tensor::from_slice(&lv, [4, 33]).unwrap();
    let targets = Tensor::from_slice(&tv, [4]).unwrap();
    // Targets as every other element of a longer vector.
    let spaced: Vec<i32> = tv.iter().flat_map(|&t| [t, 7]).collect();
    let targets_nc = Tensor::from_vec(spaced, [4, 2]).unwrap().narrow(1, 0, 1).unwrap().squeeze(1).unwrap();
    assert!(!targets_nc.is_contiguous());
    let a = cross_entropy::fwd(&logits, &targets, IGNORE).unwrap();
    let b = cross_entropy::fwd(&noncontig(&logits), &targets_nc, IGNORE).unwrap();
    assert_eq!(a.0.to_scalar().unwrap(), b.0.to_scalar().unwrap());
    assert_eq!(a.2.to_vec::<f32>().unwrap(), b.2.to_vec::<f32>().unwrap());
    let da = cross_entropy::bwd(&logits, &targets, &a.2, IGNORE, 0.5).unwrap();
    let db = cross_entropy::bwd(&noncontig(&logits), &targets_nc, &noncontig(&a.2), IGNORE, 0.5).unwrap();
    assert_eq!(da.to_vec::<f32>().unwrap(), db.to_vec::<f32>().unwrap());
}

#[test]
fn errors_name_the_op() {
    let logits = Tensor::ones([2, 5], DType::F32);
    let t = |v: &[i32]| Tensor::from_slice(v, [v.len()]).unwrap();
    let e = cross_entropy::fwd(&logits, &t(&[1, 5]), IGNORE).unwrap_err();
    assert!(matches!(e, Error::IndexOutOfRange { op: "cross_entropy::fwd", index: 5, size: 5 }), "{e}");
    let e = cross_entropy::fwd(&logits, &t(&[-1, 0]), IGNORE).unwrap_err();
    assert!(matches!(e, Error::IndexOutOfRange { index: -1, .. }), "{e}");
    let e = cross_entropy::fwd(&logits, &t(&[0, 1, 2]), IGNORE).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "cross_entropy::fwd", .. }), "{e}");
    let e = cross_entropy::fwd(&logits, &Tensor::ones([2], DType::F32), IGNORE).unwrap_err();
    assert!(matches!(e, Error::DTypeMismatch { .. }), "{e}");
    assert!(cross_entropy::fwd(&Tensor::ones([10], DType::F32), &t(&[0]), IGNORE).is_err());
    let (_, _, lse) = cross_entropy::fwd(&logits, &t(&[0, IGNORE]), IGNORE).unwrap();
    let e = cross_entropy::bwd(&logits, &t(&[0, 9]), &lse, IGNORE, 1.0).unwrap_err();
    assert!(matches!(e, Error::IndexOutOfRange { op: "cross_entropy::bwd", .. }), "{e}");
    let e = cross_entropy::bwd(&logits, &t(&[0, 1]), &Tensor::ones([3], DType::F32), IGNORE, 1.0).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "cross_entropy::bwd", .. }), "{e}");
}

#[test]
fn empty_batch() {
    let logits = Tensor::ones([0, 7], DType::F32);
    let targets = Tensor::from_vec(Vec::<i32>::new(), [0]).unwrap();
    let (loss, count, lse) = cross_entropy::fwd(&logits, &targets, IGNORE).unwrap();
    assert_eq!((loss.to_scalar().unwrap(), count, lse.dims()), (0.0, 0, &[0][..]));
    assert_eq!(cross_entropy::bwd(&logits, &targets, &lse, IGNORE, 1.0).unwrap().dims(), &[0, 7]);
}

/// `fwd_grad`'s special rows, each written in full: an ignored row is all zeros (a row of huge
/// logits included, so nothing of it leaks), a row of −inf logits gives NaN loss and gradient as
/// `fwd`/`bwd` do, and a normal row beside them is unaffected. Mismatched lengths give NaN.
#[test]
fn fwd_grad_special_rows_are_written_in_full() {
    let v = 37;
    let mut x = vec![0.5f32; 3 * v];
    x[..v].fill(1e30);
    x[v..2 * v].fill(f32::NEG_INFINITY);
    let (loss, count, dx) = cpu::ce_fwd_grad(&x, &[IGNORE, 3, 5], v, IGNORE, 1.0);
    assert!(dx[..v].iter().all(|&d| d == 0.0), "ignored row");
    assert!(dx[v..2 * v].iter().all(|d| d.is_nan()) && loss.is_nan(), "all −inf row");
    let uniform = 1.0 / v as f32;
    for (j, &d) in dx[2 * v..].iter().enumerate() {
        let want = if j == 5 { uniform - 1.0 } else { uniform };
        assert!((d - want).abs() <= 1e-6, "normal row [{j}]: {d} vs {want}");
    }
    assert_eq!(count, 2);
    let (bad_loss, bad_count, bad_dx) = cpu::ce_fwd_grad(&x[..100], &[3, 5], v, IGNORE, 1.0);
    assert!(bad_loss.is_nan() && bad_count == 0 && bad_dx.iter().all(|d| d.is_nan()));
}
