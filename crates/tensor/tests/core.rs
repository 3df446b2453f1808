//! The tensor core: construction, strided views and the contiguous copy, against plain index math.

use proptest::prelude::*;
use tensor::{ops::copy, DType, Error, Layout, Rng, Shape, Tensor};

/// Element (i0, i1, ...) of a row-major tensor of `dims` holding 0, 1, 2, ...
fn flat_index(idx: &[usize], dims: &[usize]) -> usize {
    idx.iter().zip(dims).fold(0, |acc, (&i, &d)| acc * d + i)
}

fn dims_strategy() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..6, 1..5)
}

proptest! {
    #[test]
    fn transpose_matches_index_math(dims in dims_strategy(), a in 0usize..4, b in 0usize..4) {
        let rank = dims.len();
        let (a, b) = (a % rank, b % rank);
        let n: usize = dims.iter().product();
        let t = Tensor::from_vec((0..n).map(|v| v as f32).collect::<Vec<_>>(), dims.clone()).unwrap();
        let tt = t.transpose(a, b).unwrap();
        let got = tt.to_vec::<f32>().unwrap();
        let mut tdims = dims.clone();
        tdims.swap(a, b);
        // Walk the transposed index space and map back to the source index.
        let mut idx = vec![0usize; rank];
        for g in got {
            let mut src = idx.clone();
            src.swap(a, b);
            prop_assert_eq!(g, flat_index(&src, &dims) as f32);
            for d in (0..rank).rev() {
                idx[d] += 1;
                if idx[d] < tdims[d] { break; }
                idx[d] = 0;
            }
        }
    }

    #[test]
    fn narrow_then_copy_matches_ref(dims in dims_strategy(), dim in 0usize..4, start in 0usize..5, len in 1usize..5) {
        let rank = dims.len();
        let dim = dim % rank;
        let start = start % dims[dim];
        let len = len.min(dims[dim] - start);
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|v| v as f32 * 0.5 - 3.0).collect();
        let t = Tensor::from_vec(data.clone(), dims.clone()).unwrap();
        let v = t.narrow(dim, start, len).unwrap().transpose(0, rank - 1).unwrap();
        prop_assert_eq!(copy::strided_copy(&data, v.layout()), copy::strided_copy_ref(&data, v.layout()));
        prop_assert_eq!(v.contiguous().unwrap().to_vec::<f32>().unwrap(), copy::strided_copy_ref(&data, v.layout()));
    }

    #[test]
    fn broadcast_view_repeats(rows in 1usize..6, cols in 1usize..6) {
        let row: Vec<f32> = (0..cols).map(|c| c as f32 + 1.0).collect();
        let t = Tensor::from_vec(row.clone(), [1, cols]).unwrap();
        let b = t.broadcast_as([rows, cols]).unwrap();
        if rows > 1 {
            prop_assert_eq!(b.layout().strides()[0], 0, "a stretched dim is a stride-0 view");
        }
        let got = b.to_vec::<f32>().unwrap();
        for r in 0..rows {
            prop_assert_eq!(&got[r * cols..(r + 1) * cols], &row[..]);
        }
    }

    #[test]
    fn reshape_round_trips(dims in dims_strategy()) {
        let n: usize = dims.iter().product();
        let t = Tensor::from_vec((0..n).map(|v| v as f32).collect::<Vec<_>>(), dims.clone()).unwrap();
        let flat = t.reshape(n).unwrap();
        prop_assert!(flat.same_storage(&t), "reshape of a contiguous tensor must be a view");
        let back = flat.reshape(dims.clone()).unwrap();
        prop_assert_eq!(back.to_vec::<f32>().unwrap(), t.to_vec::<f32>().unwrap());
    }
}

#[test]
fn broadcast_shapes_follow_numpy() {
    let s = |v: &[usize]| Shape::from(v);
    assert_eq!(Shape::broadcast("t", &s(&[3, 1, 5]), &s(&[4, 5])).unwrap(), s(&[3, 4, 5]));
    assert_eq!(Shape::broadcast("t", &s(&[1]), &s(&[2, 3])).unwrap(), s(&[2, 3]));
    let err = Shape::broadcast("add", &s(&[2, 3]), &s(&[4, 3])).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "add", .. }));
    assert!(err.to_string().contains("[2, 3]") && err.to_string().contains("[4, 3]"), "{err}");
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let t = Tensor::zeros([2, 3], DType::F32);
    assert!(matches!(Tensor::from_vec(vec![1.0f32; 5], [2, 3]), Err(Error::ElementCount { .. })));
    assert!(matches!(t.transpose(0, 2), Err(Error::DimOutOfRange { op: "transpose", .. })));
    assert!(t.narrow(1, 2, 2).is_err());
    assert!(t.narrow(1, usize::MAX, 2).is_err(), "overflowing ranges are refused");
    assert!(t.reshape([4, 2]).is_err());
    assert!(t.broadcast_as([3, 3]).is_err());
    assert!(t.squeeze(0).is_err());
    assert!(t.as_slice::<half::bf16>().is_err(), "dtype mismatch is an error");
    assert!(t.t().unwrap().as_slice::<f32>().is_err(), "non-contiguous slice access is an error");
    let storage = t.storage().clone();
    assert!(Tensor::from_storage(storage, Layout::contiguous([3, 3])).is_err(), "layout past the storage");
}

#[test]
fn squeeze_unsqueeze_and_scalars() {
    let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]).unwrap();
    let u = t.unsqueeze(0).unwrap();
    assert_eq!(u.dims(), &[1, 3]);
    assert_eq!(u.squeeze(0).unwrap().dims(), &[3]);
    assert_eq!(t.unsqueeze(1).unwrap().to_vec::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
    assert_eq!(Tensor::scalar(2.5).to_scalar().unwrap(), 2.5);
    assert!(t.to_scalar().is_err());
    let h = Tensor::full(1.5, [2], DType::BF16);
    assert_eq!(h.to_vec_f32().unwrap(), vec![1.5, 1.5]);
}

#[test]
fn rng_is_deterministic_and_resumable() {
    let mut a = Rng::new(42);
    let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
    let mut b = Rng::new(42);
    assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
    let mut c = Rng::new(a.state());
    assert_eq!(a.next_u64(), c.next_u64(), "the state alone resumes the stream");
    // Moments of the normal generator over many samples.
    let mut r = Rng::new(7);
    let n = 200_000;
    let xs: Vec<f64> = (0..n).map(|_| r.normal() as f64).collect();
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!((var - 1.0).abs() < 0.02, "var {var}");
    let mut v: Vec<usize> = (0..50).collect();
    r.shuffle(&mut v);
    let mut sorted = v.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    assert_ne!(v, sorted);
}

#[test]
fn huge_shapes_with_a_zero_dim_or_an_overflowing_count_are_errors_not_overflows() {
    const HUGE: usize = 1 << 40;
    // Zero elements, however large the other dims: constructs, reshapes and narrows.
    let t = Tensor::from_vec(Vec::<f32>::new(), vec![HUGE, HUGE, 0]).unwrap();
    assert_eq!(t.elem_count(), 0);
    let r = t.reshape(vec![0, HUGE, HUGE]).unwrap();
    assert_eq!(r.dims(), [0, HUGE, HUGE]);
    assert_eq!(r.narrow(1, HUGE - 1, 1).unwrap().elem_count(), 0);
    assert!(r.to_vec::<f32>().unwrap().is_empty());
    assert_eq!(r.unsqueeze(1).unwrap().dims(), [0, 1, HUGE, HUGE]);
    // A count past usize is an error naming the op, not a wrapped product.
    let e = Tensor::from_vec(vec![0f32; 3], vec![HUGE, HUGE, 3]).unwrap_err().to_string();
    assert!(e.contains("from_vec") && e.contains("more elements than fit"), "{e}");
    let e = Tensor::from_vec(vec![0f32; 4], vec![4]).unwrap().reshape(vec![HUGE, HUGE, 4]).unwrap_err().to_string();
    assert!(e.contains("reshape"), "{e}");
    // A layout whose last index overflows is refused, not wrapped around into the storage.
    let storage = Tensor::from_vec(vec![0f32; 4], vec![4]).unwrap().storage().clone();
    let huge_stride = Layout::contiguous(vec![2, HUGE, HUGE]);
    assert!(Tensor::from_storage(storage, huge_stride).is_err());
}
