//! Cat tests: fast path against the reference for 1-4 inputs of random widths along every dim,
//! mixed views and dtypes (i32 included), plus the error cases.

use super::cpu::cat_ref;
use crate::ops::testing::{any_view, dim_size, random_view, View};
use crate::{DType, Error, Tensor};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn fast_matches_ref(dims in prop::collection::vec(dim_size(), 1..=4), dim in 0usize..4,
                        widths in prop::collection::vec((0usize..6, any_view()), 1..=4),
                        dtype in prop_oneof![Just(DType::F32), Just(DType::BF16), Just(DType::I32)], seed: u64) {
        let dim = dim % dims.len();
        let parts: Vec<Tensor> = widths.iter().enumerate().map(|(i, &(w, view))| {
            let mut d = dims.clone();
            d[dim] = w;
            random_view(&d, view, DType::F32, seed + i as u64).affine(10.0, 0.0).unwrap().to_dtype(dtype).unwrap()
        }).collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        let got = Tensor::cat(&refs, dim).unwrap();
        let want = cat_ref(&refs, dim).unwrap();
        prop_assert_eq!(got.dims(), want.dims());
        prop_assert_eq!(got.dtype(), dtype);
        prop_assert_eq!(got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
    }
}

#[test]
fn large_cat() {
    let a = random_view(&[300, 7, 40], View::Narrowed, DType::F32, 1);
    let b = random_view(&[300, 7, 9], View::Transposed, DType::F32, 2);
    let (got, want) = (Tensor::cat(&[&a, &b, &a], 2).unwrap(), cat_ref(&[&a, &b, &a], 2).unwrap());
    assert_eq!(got.to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
}

#[test]
fn errors() {
    let a = Tensor::ones([2, 3], DType::F32);
    assert!(matches!(Tensor::cat(&[], 0).unwrap_err(), Error::Invalid { op: "cat", .. }));
    assert!(matches!(
        Tensor::cat(&[&a, &Tensor::ones([3, 3], DType::F32)], 1).unwrap_err(),
        Error::ShapeMismatch { op: "cat", .. }
    ));
    assert!(matches!(
        Tensor::cat(&[&a, &Tensor::ones([2], DType::F32)], 0).unwrap_err(),
        Error::ShapeMismatch { op: "cat", .. }
    ));
    assert!(matches!(
        Tensor::cat(&[&a, &a.to_dtype(DType::BF16).unwrap()], 0).unwrap_err(),
        Error::DTypeMismatch { op: "cat", .. }
    ));
    assert!(matches!(Tensor::cat(&[&a], 2).unwrap_err(), Error::DimOutOfRange { op: "cat", dim: 2, .. }));
}
