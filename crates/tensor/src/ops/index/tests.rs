//! Index tests: `index_select` and `embedding` against the narrow-and-cat reference over random
//! shapes, dims, ids (repeats included) and views; `embedding_bwd` against the serial scatter-add;
//! out-of-range ids, wrong id dtype and shape errors.

use super::cpu::{embedding_bwd_ref, index_select_ref};
use super::{embedding, embedding_bwd};
use crate::ops::testing::{any_float, any_view, assert_close, dim_size, random_view, Tol, View};
use crate::{DType, Error, Rng, Tensor};
use proptest::prelude::*;

fn ids(n: usize, size: usize, seed: u64) -> Vec<i32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.below(size) as i32).collect()
}

fn id_tensor(v: &[i32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), [v.len()]).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn index_select_matches_ref(dims in prop::collection::vec(dim_size(), 1..=4), dim in 0usize..4, n in 0usize..12,
                                view in any_view(), dtype in any_float(), seed: u64) {
        let dim = dim % dims.len();
        let x = random_view(&dims, view, dtype, seed);
        let id = ids(n, dims[dim], seed);
        let got = x.index_select(&id_tensor(&id), dim).unwrap();
        assert_close("index_select", &got, &index_select_ref(&x, &id, dim).unwrap(), Tol { abs: 0.0, rel: 0.0 });
    }

    #[test]
    fn embedding_fwd_bwd_match_ref(v in 1usize..40, c in dim_size(), n in 1usize..50, view in any_view(),
                                   dtype in any_float(), seed: u64) {
        let table = random_view(&[v, c], view, dtype, seed);
        let id = ids(n, v, seed ^ 3);
        let y = embedding(&table, &id_tensor(&id)).unwrap();
        assert_close("embedding", &y, &index_select_ref(&table, &id, 0).unwrap(), Tol { abs: 0.0, rel: 0.0 });
        let dy = random_view(&[n, c], view, dtype, seed ^ 5);
        let dw = embedding_bwd(&dy, &id_tensor(&id), v).unwrap();
        assert_close("embedding_bwd", &dw, &embedding_bwd_ref(&dy, &id, v).unwrap(), Tol::of(dtype));
    }
}

#[test]
fn large_embedding_bwd_is_exact() {
    let (v, c, n) = (1000, 96, 4000);
    let dy = random_view(&[n, c], View::Contiguous, DType::F32, 9);
    let id = ids(n, v / 10, 11); // many repeats per row
    let got = embedding_bwd(&dy, &id_tensor(&id), v).unwrap();
    assert_eq!(got.to_vec::<f32>().unwrap(), embedding_bwd_ref(&dy, &id, v).unwrap().to_vec::<f32>().unwrap());
    let table = random_view(&[v, c], View::Narrowed, DType::BF16, 12);
    let y = embedding(&table, &id_tensor(&id)).unwrap();
    assert_eq!(y.to_vec_f32().unwrap(), index_select_ref(&table, &id, 0).unwrap().to_vec_f32().unwrap());
}

#[test]
fn errors() {
    let table = Tensor::ones([5, 3], DType::F32);
    let err = embedding(&table, &id_tensor(&[0, 5])).unwrap_err();
    assert!(matches!(err, Error::IndexOutOfRange { op: "embedding", index: 5, size: 5 }), "{err}");
    let err = table.index_select(&id_tensor(&[-100]), 1).unwrap_err();
    assert!(matches!(err, Error::IndexOutOfRange { op: "index_select", index: -100, size: 3 }), "{err}");
    let err = embedding_bwd(&Tensor::ones([2, 3], DType::F32), &id_tensor(&[1, 9]), 4).unwrap_err();
    assert!(matches!(err, Error::IndexOutOfRange { op: "embedding_bwd", index: 9, size: 4 }), "{err}");
    let err = embedding_bwd(&Tensor::ones([3, 3], DType::F32), &id_tensor(&[1, 2]), 4).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "embedding_bwd", .. }), "{err}");
    let err = embedding(&table, &Tensor::ones([2], DType::F32)).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { op: "embedding", .. }), "{err}");
    let err = embedding(&Tensor::ones([5], DType::F32), &id_tensor(&[0])).unwrap_err();
    assert!(matches!(err, Error::Invalid { op: "embedding", .. }), "{err}");
    let err = table.index_select(&id_tensor(&[0]), 2).unwrap_err();
    assert!(matches!(err, Error::DimOutOfRange { op: "index_select", .. }), "{err}");
}
