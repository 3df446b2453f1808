//! Tests of `ops::rmsnorm`: the fast path against the f64 reference over random shapes and dtypes,
//! the reference backward against finite differences of the reference forward, non-contiguous
//! inputs, and the errors for bad shapes and dtypes.

mod fused_common;

use fused_common::*;
use proptest::prelude::*;
use tensor::ops::rmsnorm::{self, cpu};
use tensor::{DType, Error, Rng, Tensor};

const EPS: f32 = 1e-5;

/// `(.., C)` dims: rank 1 to 3 with `C` last.
fn dims_strategy() -> impl Strategy<Value = Vec<usize>> {
    (prop::collection::vec(1usize..6, 0..3), 1usize..80).prop_map(|(mut lead, c)| {
        lead.push(c);
        lead
    })
}

/// Random x (scale varies per case), w around 1 and dy.
fn case(dims: &[usize], seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let n: usize = dims.iter().product();
    let c = dims[dims.len() - 1];
    let scale = 0.1 + 3.0 * rng.uniform();
    (randn(&mut rng, n, 0.0, scale), randn(&mut rng, c, 1.0, 0.5), randn(&mut rng, n, 0.0, 1.0))
}

fn check_against_ref(dims: &[usize], seed: u64, dtype: DType) {
    let (xv, wv, dyv) = case(dims, seed);
    let c = dims[dims.len() - 1];
    let (x, x64) = tensor_of(&xv, dims, dtype);
    let (w, w64) = tensor_of(&wv, &[c], dtype);
    let (dy, dy64) = tensor_of(&dyv, dims, dtype);
    let (y, rstd) = rmsnorm::fwd(&x, &w, EPS).unwrap();
    assert_eq!((y.dtype(), y.dims()), (dtype, dims));
    assert_eq!((rstd.dtype(), rstd.dims()), (DType::F32, &dims[..dims.len() - 1]));
    let (y_ref, rstd_ref) = cpu::rmsnorm_fwd_ref(&x64, &w64, c, EPS as f64);
    let tol = tol_for(dtype);
    assert_close("y", &y.to_vec_f32().unwrap(), &y_ref, tol);
    assert_close("rstd", &rstd.to_vec_f32().unwrap(), &rstd_ref, F32);

    let (dx, dw) = rmsnorm::bwd(&dy, &x, &w, &rstd).unwrap();
    assert_eq!((dx.dtype(), dx.dims(), dw.dtype(), dw.dims()), (dtype, dims, dtype, &[c][..]));
    let (dx_ref, dw_ref) = cpu::rmsnorm_bwd_ref(&dy64, &x64, &w64, &rstd_ref, c);
    // Gradients are sums of terms of both signs: scale the absolute tolerance by the row size.
    let rows = (xv.len() / c) as f64;
    let dx_tol = Tol { abs: tol.abs * 4.0, rel: tol.rel };
    let dw_tol = Tol { abs: tol.abs * 4.0 * rows.sqrt(), rel: tol.rel * 2.0 };
    assert_close("dx", &dx.to_vec_f32().unwrap(), &dx_ref, dx_tol);
    assert_close("dw", &dw.to_vec_f32().unwrap(), &dw_ref, dw_tol);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fast_matches_ref_f32(dims in dims_strategy(), seed in any::<u64>()) {
        check_against_ref(&dims, seed, DType::F32);
    }

    #[test]
    fn fast_matches_ref_half(dims in dims_strategy(), seed in any::<u64>(), bf in any::<bool>()) {
        check_against_ref(&dims, seed, if bf { DType::BF16 } else { DType::F16 });
    }

    /// The reference backward is the derivative of the reference forward: `L = Σ dy·y`.
    #[test]
    fn ref_bwd_matches_finite_differences(rows in 1usize..4, c in 1usize..12, seed in any::<u64>()) {
        let dims = [rows, c];
        let (xv, wv, dyv) = case(&dims, seed);
        let (x, w, dy) = (f64s(&xv), f64s(&wv), f64s(&dyv));
        // A larger eps keeps y smooth on the scale of H when C is 1 and |x| is small.
        let eps = 0.05;
        let (_, rstd) = cpu::rmsnorm_fwd_ref(&x, &w, c, eps);
        let (dx, dw) = cpu::rmsnorm_bwd_ref(&dy, &x, &w, &rstd, c);
        let ndx = numeric_grad(|x| dot64(&dy, &cpu::rmsnorm_fwd_ref(x, &w, c, eps).0), &x);
        let ndw = numeric_grad(|w| dot64(&dy, &cpu::rmsnorm_fwd_ref(&x, w, c, eps).0), &w);
        assert_close64("dx", &dx, &ndx, FD);
        assert_close64("dw", &dw, &ndw, FD);
    }
}

/// Many rows (several rayon tasks, so several partial dw) and a Llama-sized C.
#[test]
fn large_shapes() {
    check_against_ref(&[300, 100], 1, DType::F32);
    check_against_ref(&[3, 4096], 2, DType::F32);
    check_against_ref(&[1, 1], 3, DType::F32);
}

#[test]
fn non_contiguous_inputs_match() {
    let dims = [3, 5, 7];
    let (xv, wv, dyv) = case(&dims, 9);
    let (x, _) = tensor_of(&xv, &dims, DType::F32);
    let (w, _) = tensor_of(&wv, &[7], DType::F32);
    let (dy, _) = tensor_of(&dyv, &dims, DType::F32);
    let (y, rstd) = rmsnorm::fwd(&x, &w, EPS).unwrap();
    let (y2, rstd2) = rmsnorm::fwd(&noncontig(&x), &noncontig(&w), EPS).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), y2.to_vec::<f32>().unwrap());
    assert_eq!(rstd.to_vec::<f32>().unwrap(), rstd2.to_vec::<f32>().unwrap());
    let (dx, dw) = rmsnorm::bwd(&dy, &x, &w, &rstd).unwrap();
    let (dx2, dw2) = rmsnorm::bwd(&noncontig(&dy), &noncontig(&x), &noncontig(&w), &noncontig(&rstd)).unwrap();
    assert_eq!(dx.to_vec::<f32>().unwrap(), dx2.to_vec::<f32>().unwrap());
    assert_eq!(dw.to_vec::<f32>().unwrap(), dw2.to_vec::<f32>().unwrap());
}

/// A weight kept in f32 with bf16 activations (QLoRA keeps norms in f32): outputs follow each input.
#[test]
fn mixed_weight_dtype() {
    let (xv, wv, dyv) = case(&[4, 6], 5);
    let (x, _) = tensor_of(&xv, &[4, 6], DType::BF16);
    let (w, _) = tensor_of(&wv, &[6], DType::F32);
    let (dy, _) = tensor_of(&dyv, &[4, 6], DType::BF16);
    let (y, rstd) = rmsnorm::fwd(&x, &w, EPS).unwrap();
    let (dx, dw) = rmsnorm::bwd(&dy, &x, &w, &rstd).unwrap();
    assert_eq!((y.dtype(), dx.dtype(), dw.dtype()), (DType::BF16, DType::BF16, DType::F32));
}

#[test]
fn errors_name_the_op() {
    let x = Tensor::ones([2, 4], DType::F32);
    let w = Tensor::ones([4], DType::F32);
    let bad_w = Tensor::ones([5], DType::F32);
    let e = rmsnorm::fwd(&x, &bad_w, EPS).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "rmsnorm::fwd", .. }), "{e}");
    assert!(e.to_string().contains("[2, 4]") && e.to_string().contains("[5]"), "{e}");
    assert!(rmsnorm::fwd(&Tensor::scalar(1.0), &w, EPS).is_err());
    assert!(rmsnorm::fwd(&Tensor::ones([2, 0], DType::F32), &Tensor::ones([0], DType::F32), EPS).is_err());
    assert!(matches!(rmsnorm::fwd(&Tensor::arange(4), &w, EPS), Err(Error::UnsupportedDType { .. })));
    let (_, rstd) = rmsnorm::fwd(&x, &w, EPS).unwrap();
    let e = rmsnorm::bwd(&Tensor::ones([2, 3], DType::F32), &x, &w, &rstd).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "rmsnorm::bwd", .. }), "{e}");
    let e = rmsnorm::bwd(&x, &x, &w, &Tensor::ones([3], DType::F32)).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "rmsnorm::bwd", .. }), "{e}");
}

#[test]
fn empty_batch() {
    let (x, w) = (Tensor::ones([0, 4], DType::F32), Tensor::ones([4], DType::F32));
    let (y, rstd) = rmsnorm::fwd(&x, &w, EPS).unwrap();
    assert_eq!((y.dims(), rstd.dims()), (&[0, 4][..], &[0][..]));
    let (dx, dw) = rmsnorm::bwd(&x, &x, &w, &rstd).unwrap();
    assert_eq!((dx.dims(), dw.to_vec::<f32>().unwrap()), (&[0, 4][..], vec![0.0; 4]));
}

/// dw sums per-block partials in a fixed order: the same bits with 1 thread as with many.
#[test]
fn deterministic_across_thread_counts() {
    let (xv, wv, dyv) = case(&[700, 64], 13);
    let (x, w) = (Tensor::from_vec(xv, [700, 64]).unwrap(), Tensor::from_vec(wv, [64]).unwrap());
    let dy = Tensor::from_vec(dyv, [700, 64]).unwrap();
    let run = || {
        let (_, rstd) = rmsnorm::fwd(&x, &w, EPS).unwrap();
        rmsnorm::bwd(&dy, &x, &w, &rstd).unwrap().1.to_vec::<f32>().unwrap()
    };
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(run);
    assert_eq!(one, three);
}
