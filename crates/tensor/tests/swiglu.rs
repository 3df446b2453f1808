//! Tests of `ops::swiglu`: the fast path against the f64 reference over random shapes and dtypes
//! (including large |gate| where the sigmoid saturates), the reference backward against finite
//! differences, non-contiguous inputs, and shape/dtype errors.

mod fused_common;

use fused_common::*;
use proptest::prelude::*;
use tensor::ops::swiglu::{self, cpu};
use tensor::{DType, Error, Rng, Tensor};

fn case(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let gate_std = 0.5 + 6.0 * rng.uniform(); // reaches the saturated tails of the sigmoid
    (randn(&mut rng, n, 0.0, gate_std), randn(&mut rng, n, 0.0, 1.0), randn(&mut rng, n, 0.0, 1.0))
}

fn check_against_ref(dims: &[usize], seed: u64, dtype: DType) {
    let n = dims.iter().product();
    let (gv, uv, dyv) = case(n, seed);
    let ((g, g64), (u, u64_), (dy, dy64)) =
        (tensor_of(&gv, dims, dtype), tensor_of(&uv, dims, dtype), tensor_of(&dyv, dims, dtype));
    let tol = tol_for(dtype);
    let y = swiglu::fwd(&g, &u).unwrap();
    assert_eq!((y.dtype(), y.dims()), (dtype, dims));
    assert_close("y", &y.to_vec_f32().unwrap(), &cpu::swiglu_fwd_ref(&g64, &u64_), tol);
    let (dg, du) = swiglu::bwd(&dy, &g, &u).unwrap();
    let (dg_ref, du_ref) = cpu::swiglu_bwd_ref(&dy64, &g64, &u64_);
    assert_close("dgate", &dg.to_vec_f32().unwrap(), &dg_ref, tol);
    assert_close("dup", &du.to_vec_f32().unwrap(), &du_ref, tol);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fast_matches_ref(dims in prop::collection::vec(1usize..40, 1..4), seed in any::<u64>(), dt in 0usize..3) {
        check_against_ref(&dims, seed, FLOATS[dt]);
    }

    /// `L = Σ dy·silu(g)·u`; the reference backward is its gradient.
    #[test]
    fn ref_bwd_matches_finite_differences(n in 1usize..20, seed in any::<u64>()) {
        let (gv, uv, dyv) = case(n, seed);
        let (g, u, dy) = (f64s(&gv), f64s(&uv), f64s(&dyv));
        let (dg, du) = cpu::swiglu_bwd_ref(&dy, &g, &u);
        assert_close64("dgate", &dg, &numeric_grad(|g| dot64(&dy, &cpu::swiglu_fwd_ref(g, &u)), &g), FD);
        assert_close64("dup", &du, &numeric_grad(|u| dot64(&dy, &cpu::swiglu_fwd_ref(&g, u)), &u), FD);
    }
}

/// More than one rayon chunk, and a length that is not a multiple of the vector width.
#[test]
fn large_shape() {
    check_against_ref(&[3, 20_001], 4, DType::F32);
}

#[test]
fn non_contiguous_inputs_match() {
    let dims = [4, 9];
    let (gv, uv, dyv) = case(36, 2);
    let ((g, _), (u, _), (dy, _)) =
        (tensor_of(&gv, &dims, DType::F32), tensor_of(&uv, &dims, DType::F32), tensor_of(&dyv, &dims, DType::F32));
    let y = swiglu::fwd(&g, &u).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(y, swiglu::fwd(&noncontig(&g), &noncontig(&u)).unwrap().to_vec::<f32>().unwrap());
    let (dg, du) = swiglu::bwd(&dy, &g, &u).unwrap();
    let (dg2, du2) = swiglu::bwd(&noncontig(&dy), &noncontig(&g), &noncontig(&u)).unwrap();
    assert_eq!(dg.to_vec::<f32>().unwrap(), dg2.to_vec::<f32>().unwrap());
    assert_eq!(du.to_vec::<f32>().unwrap(), du2.to_vec::<f32>().unwrap());
}

#[test]
fn errors_name_the_op() {
    let a = Tensor::ones([2, 3], DType::F32);
    let e = swiglu::fwd(&a, &Tensor::ones([3, 2], DType::F32)).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "swiglu::fwd", .. }), "{e}");
    let e = swiglu::fwd(&a, &Tensor::ones([2, 3], DType::BF16)).unwrap_err();
    assert!(matches!(e, Error::DTypeMismatch { op: "swiglu::fwd", .. }), "{e}");
    assert!(matches!(swiglu::fwd(&Tensor::arange(3), &Tensor::arange(3)), Err(Error::UnsupportedDType { .. })));
    let e = swiglu::bwd(&Tensor::ones([6], DType::F32), &a, &a).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "swiglu::bwd", .. }), "{e}");
}

#[test]
fn empty_input() {
    let e = Tensor::ones([0, 3], DType::F32);
    assert_eq!(swiglu::fwd(&e, &e).unwrap().dims(), &[0, 3]);
    assert_eq!(swiglu::bwd(&e, &e, &e).unwrap().0.dims(), &[0, 3]);
}
