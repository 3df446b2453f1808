//! Softmax tests: forward and backward against the f64 references over random shapes, dtypes,
//! views and logit scales (up to ±1e4, where an unstable softmax overflows), rows of 32000, and
//! `exp_fast` against libm over its whole range; plus shape, dtype and rank errors.

use super::cpu::{exp_fast, softmax_last_bwd_ref, softmax_last_ref};
use super::softmax_last_bwd;
use crate::ops::testing::{any_float, any_view, assert_close, dim_size, random_view, Tol, View};
use crate::{DType, Error, Tensor};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn fwd_bwd_match_ref(dims in prop::collection::vec(dim_size(), 1..=3), view in any_view(), dtype in any_float(),
                         scale in prop_oneof![Just(1.0f32), Just(30.0), Just(1e4)], seed: u64) {
        let x = random_view(&dims, view, DType::F32, seed).scale(scale).unwrap().to_dtype(dtype).unwrap();
        let y = x.softmax_last().unwrap();
        assert_close("softmax_last", &y, &softmax_last_ref(&x).unwrap(), Tol::of(dtype).times(2.0));
        let dy = random_view(&dims, view, dtype, seed ^ 7);
        let dx = softmax_last_bwd(&y, &dy).unwrap();
        assert_close("softmax_last_bwd", &dx, &softmax_last_bwd_ref(&y, &dy).unwrap(), Tol::of(dtype).times(2.0));
    }

    #[test]
    fn exp_fast_matches_libm(x in -87.0f32..88.3) {
        let (got, want) = (exp_fast(x), (x as f64).exp());
        prop_assert!(((got as f64 - want) / want).abs() < 3e-7, "exp({x}) = {got}, libm {want}");
    }
}

#[test]
fn vocab_sized_rows() {
    let x = random_view(&[6, 32000], View::Narrowed, DType::F32, 3).scale(5.0).unwrap();
    let y = x.softmax_last().unwrap();
    assert_close("softmax_last", &y, &softmax_last_ref(&x).unwrap(), Tol::of(DType::F32).times(2.0));
    let dy = random_view(&[6, 32000], View::Transposed, DType::F32, 4);
    let dx = softmax_last_bwd(&y, &dy).unwrap();
    assert_close("softmax_last_bwd", &dx, &softmax_last_bwd_ref(&y, &dy).unwrap(), Tol::of(DType::F32).times(2.0));
}

#[test]
fn exp_fast_edges() {
    assert_eq!(exp_fast(0.0), 1.0);
    assert_eq!(exp_fast(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp_fast(-1000.0), 0.0);
    assert!(exp_fast(f32::NAN).is_nan());
}

#[test]
fn errors() {
    let y = Tensor::ones([2, 3], DType::F32);
    let err = softmax_last_bwd(&y, &Tensor::ones([3, 2], DType::F32)).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "softmax_last_bwd", .. }), "{err}");
    let err = softmax_last_bwd(&y, &Tensor::ones([2, 3], DType::BF16)).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { op: "softmax_last_bwd", .. }), "{err}");
    assert!(matches!(Tensor::scalar(1.0).softmax_last().unwrap_err(), Error::Invalid { op: "softmax_last", .. }));
    assert!(matches!(
        Tensor::arange(3).softmax_last().unwrap_err(),
        Error::UnsupportedDType { op: "softmax_last", .. }
    ));
}
