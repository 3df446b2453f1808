//! Reduction tests: every op over every dim against the one-element-at-a-time reference, over
//! random shapes, dtypes and views; long rows that take the parallel path; ties and NaN for
//! `argmax`; `sum_all` accuracy; dim errors.

use super::cpu::reduce_ref;
use super::{reduce, ReduceOp};
use crate::ops::testing::{any_float, any_view, assert_close, dim_size, random_view, Tol, View};
use crate::{DType, Error, Tensor};
use proptest::prelude::*;

const OPS: [ReduceOp; 4] = [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::ArgMax];

fn check(x: &Tensor, dim: usize, keepdim: bool, op: ReduceOp) {
    let got = reduce(x, dim, keepdim, op).unwrap();
    let want = reduce_ref(x, dim, keepdim, op).unwrap();
    if op == ReduceOp::ArgMax {
        assert_eq!(
            got.to_vec::<i32>().unwrap(),
            want.to_vec::<i32>().unwrap(),
            "argmax over dim {dim} of {:?}",
            x.dims()
        );
    } else {
        assert_close(op.name(), &got, &want, Tol::of(x.dtype()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn fast_matches_ref(dims in prop::collection::vec(dim_size(), 1..=4), view in any_view(), dtype in any_float(),
                        dim in 0usize..4, keepdim: bool, op in 0usize..4, seed: u64) {
        let x = random_view(&dims, view, dtype, seed);
        check(&x, dim % dims.len(), keepdim, OPS[op]);
    }
}

#[test]
fn long_rows_and_wide_columns() {
    let x = random_view(&[3, 70_001], View::Narrowed, DType::F32, 5);
    let y = random_view(&[37, 1300], View::Transposed, DType::BF16, 6);
    for op in OPS {
        check(&x, 1, false, op);
        check(&x, 0, true, op);
        check(&y, 0, false, op);
        check(&y, 1, true, op);
    }
}

#[test]
fn sum_all_is_accurate() {
    // 1e6 copies of 0.1 plus one 1e7: a naive f32 running sum drifts by whole units.
    let mut v = vec![0.1f32; 1_000_000];
    v[0] = 1e7;
    let s = Tensor::from_vec(v, [1000, 1000]).unwrap().sum_all().unwrap();
    assert_eq!(s.dims(), &[] as &[usize]);
    let want = 1e7f64 + 999_999.0 * 0.1f32 as f64;
    assert!((s.to_scalar().unwrap() as f64 - want).abs() <= 1.0, "{}", s.to_scalar().unwrap());
}

#[test]
fn argmax_first_tie_and_nan() {
    let x = Tensor::from_vec(vec![1.0f32, 3.0, 3.0, 2.0, 5.0, f32::NAN, 7.0, f32::NAN], [2, 4]).unwrap();
    assert_eq!(x.argmax(1).unwrap().to_vec::<i32>().unwrap(), vec![1, 1]);
    assert!(x.max(1, false).unwrap().to_vec::<f32>().unwrap()[1].is_nan());
}

#[test]
fn errors() {
    let x = Tensor::ones([2, 3], DType::F32);
    assert!(matches!(x.sum(2, false).unwrap_err(), Error::DimOutOfRange { op: "sum", dim: 2, .. }));
    assert!(matches!(Tensor::arange(3).max(0, false).unwrap_err(), Error::UnsupportedDType { op: "max", .. }));
    assert!(matches!(Tensor::ones([2, 0], DType::F32).argmax(1).unwrap_err(), Error::Invalid { op: "argmax", .. }));
    assert_eq!(Tensor::ones([2, 0], DType::F32).sum(1, false).unwrap().to_vec::<f32>().unwrap(), vec![0.0, 0.0]);
}
