//! Binary and `sum_to` tests: fast path against the f64 reference over random broadcast pairs,
//! dtypes and views (both operand orders), plus shape, dtype and integer errors.

use super::cpu::{binary_ref, sum_to_ref};
use super::{binary, BinaryOp};
use crate::ops::testing::{any_float, any_view, assert_close, dim_size, random_view, random_view_in, Tol, View};
use crate::{DType, Error, Shape, Tensor};
use proptest::prelude::*;

const OPS: [BinaryOp; 5] = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum];

/// A full shape and a shape that broadcasts to it: each dim kept or set to 1, leading dims
/// possibly dropped.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec((dim_size(), any::<bool>()), 1..=4).prop_flat_map(|d| {
        let full: Vec<usize> = d.iter().map(|x| x.0).collect();
        let part: Vec<usize> = d.iter().map(|x| if x.1 { 1 } else { x.0 }).collect();
        (Just(full), Just(part), 0..=d.len()).prop_map(|(full, part, drop)| (full, part[drop..].to_vec()))
    })
}

/// Two reduction passes round their partial sums to f32 in between, so near-cancelling sums get
/// an absolute allowance on top of the dtype's.
fn sum_tol(dtype: DType) -> Tol {
    let t = Tol::of(dtype).times(2.0);
    Tol { abs: t.abs.max(1e-4), rel: t.rel }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn fast_matches_ref((full, part) in broadcast_pair(), va in any_view(), vb in any_view(),
                        dtype in any_float(), op in 0usize..5, swap: bool, seed: u64) {
        let op = OPS[op];
        let x = random_view(&full, va, dtype, seed);
        // Divisors kept away from zero so the quotient's tolerance means something.
        let y = if op == BinaryOp::Div { random_view_in(&part, vb, dtype, seed ^ 1, 0.5, 2.0) } else { random_view(&part, vb, dtype, seed ^ 1) };
        let (a, b) = if swap { (y, x) } else { (x, y) };
        assert_close(op.name(), &binary(&a, &b, op).unwrap(), &binary_ref(&a, &b, op).unwrap(), Tol::of(dtype));
    }

    #[test]
    fn sum_to_matches_ref((full, part) in broadcast_pair(), view in any_view(), dtype in any_float(), seed: u64) {
        let x = random_view(&full, view, dtype, seed);
        let shape = Shape::new(part);
        assert_close("sum_to", &x.sum_to(&shape).unwrap(), &sum_to_ref(&x, &shape).unwrap(), sum_tol(dtype));
    }
}

#[test]
fn large_row_and_column_broadcast() {
    let x = random_view(&[67, 5, 131], View::Contiguous, DType::F32, 1);
    let row = random_view(&[131], View::Contiguous, DType::F32, 2);
    let col = random_view(&[67, 5, 1], View::Narrowed, DType::F32, 3);
    let xt = random_view(&[67, 131, 5], View::Transposed, DType::F32, 4).transpose(1, 2).unwrap();
    for (a, b) in [(&x, &row), (&x, &col), (&col, &x), (&x, &xt), (&xt, &xt)] {
        for op in OPS {
            assert_close(op.name(), &binary(a, b, op).unwrap(), &binary_ref(a, b, op).unwrap(), Tol::of(DType::F32));
        }
    }
    for s in [Shape::new([131]), Shape::new([67, 1, 1]), Shape::new([5, 1]), Shape::new([67, 1, 131])] {
        assert_close("sum_to", &x.sum_to(&s).unwrap(), &sum_to_ref(&x, &s).unwrap(), sum_tol(DType::F32));
    }
}

#[test]
fn maximum_propagates_nan() {
    let a = Tensor::from_vec(vec![f32::NAN, 1.0, 3.0], [3]).unwrap();
    let b = Tensor::from_vec(vec![0.0f32, f32::NAN, 2.0], [3]).unwrap();
    let m = a.maximum(&b).unwrap().to_vec::<f32>().unwrap();
    assert!(m[0].is_nan() && m[1].is_nan() && m[2] == 3.0);
}

#[test]
fn errors_name_the_op() {
    let a = Tensor::ones([2, 3], DType::F32);
    let err = a.add(&Tensor::ones([4], DType::F32)).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "add", .. }), "{err}");
    let err = a.mul(&Tensor::ones([3], DType::BF16)).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { op: "mul", lhs: DType::F32, rhs: DType::BF16 }), "{err}");
    let err = Tensor::arange(3).sub(&Tensor::arange(3)).unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { op: "sub", dtype: DType::I32 }), "{err}");
    let err = a.sum_to(&Shape::new([2])).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "sum_to", .. }), "{err}");
    let err = a.sum_to(&Shape::new([1, 2, 3])).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "sum_to", .. }), "{err}");
}
