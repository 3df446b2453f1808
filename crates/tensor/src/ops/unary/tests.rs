//! Unary tests: every map against its f64 reference over random shapes, dtypes and views
//! (positive inputs for log, sqrt, rsqrt and powf), plus the dtype error.

use super::cpu::unary_ref;
use super::{unary, UnaryOp};
use crate::ops::testing::{any_float, any_view, assert_close, dim_size, random_view, random_view_in, Tol, View};
use crate::{DType, Error, Tensor};
use proptest::prelude::*;

const OPS: [UnaryOp; 11] = [
    UnaryOp::Exp,
    UnaryOp::Log,
    UnaryOp::Sqrt,
    UnaryOp::Rsqrt,
    UnaryOp::Neg,
    UnaryOp::Sqr,
    UnaryOp::Recip,
    UnaryOp::Silu,
    UnaryOp::Affine(-1.5, 0.25),
    UnaryOp::Powf(1.7),
    UnaryOp::Powf(-0.5),
];

fn input(op: UnaryOp, dims: &[usize], view: View, dtype: DType, seed: u64) -> Tensor {
    match op {
        UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Powf(_) | UnaryOp::Recip => {
            random_view_in(dims, view, dtype, seed, 0.1, 8.0)
        }
        _ => random_view(dims, view, dtype, seed),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fast_matches_ref(dims in prop::collection::vec(dim_size(), 0..=3), view in any_view(),
                        dtype in any_float(), op in 0usize..OPS.len(), seed: u64) {
        let op = OPS[op];
        let x = input(op, &dims, view, dtype, seed);
        // f32 libm maps may be an ulp off the f64-rounded value.
        let tol = if dtype == DType::F32 { Tol::of(dtype).times(2.0) } else { Tol::of(dtype) };
        assert_close(op.name(), &unary(&x, op).unwrap(), &unary_ref(&x, op).unwrap(), tol);
    }
}

#[test]
fn large_tensor_every_op() {
    for op in OPS {
        let x = input(op, &[129, 257], View::Transposed, DType::F32, 3);
        assert_close(op.name(), &unary(&x, op).unwrap(), &unary_ref(&x, op).unwrap(), Tol::of(DType::F32).times(2.0));
    }
}

#[test]
fn named_methods_pick_their_op() {
    let x = Tensor::from_vec(vec![0.5f32, 2.0, 4.0], [3]).unwrap();
    assert_eq!(x.sqr().unwrap().to_vec::<f32>().unwrap(), vec![0.25, 4.0, 16.0]);
    assert_eq!(x.scale(2.0).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 4.0, 8.0]);
    assert_eq!(x.recip().unwrap().to_vec::<f32>().unwrap(), vec![2.0, 0.5, 0.25]);
    assert_eq!(x.neg().unwrap().to_vec::<f32>().unwrap(), vec![-0.5, -2.0, -4.0]);
}

#[test]
fn integer_input_is_an_error() {
    let err = Tensor::arange(4).exp().unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { op: "exp", dtype: DType::I32 }), "{err}");
}
