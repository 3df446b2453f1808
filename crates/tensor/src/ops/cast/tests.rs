//! Cast tests: the fast path against the f64 rounding model on random values and views, literal
//! round-to-nearest-even ties, and integer conversions.

use super::cpu::cast_ref;
use crate::ops::testing::{any_view, dim_size, random_view};
use crate::{bf16, DType, Tensor};
use proptest::prelude::*;

const FLOATS: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

fn bits_equal(a: &Tensor, b: &Tensor) {
    assert_eq!(a.dims(), b.dims());
    assert_eq!(a.dtype(), b.dtype());
    let (x, y) = (a.to_vec_f32().unwrap(), b.to_vec_f32().unwrap());
    for (i, (p, q)) in x.iter().zip(&y).enumerate() {
        assert!(p.to_bits() == q.to_bits() || (p.is_nan() && q.is_nan()), "element {i}: {p} vs {q}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn float_casts_match_ref(dims in prop::collection::vec(dim_size(), 1..=3), view in any_view(),
                             from in 0usize..3, to in 0usize..3, scale in -20i32..20, seed: u64) {
        // Scale by a power of two so subnormal, large and overflowing values all occur.
        let x = random_view(&dims, view, DType::F32, seed).affine(2f32.powi(scale), 0.0).unwrap();
        let x = x.to_dtype(FLOATS[from]).unwrap();
        bits_equal(&x.to_dtype(FLOATS[to]).unwrap(), &cast_ref(&x, FLOATS[to]).unwrap());
    }

    #[test]
    fn int_casts_match_ref(dims in prop::collection::vec(dim_size(), 1..=3), view in any_view(), seed: u64) {
        let x = random_view(&dims, view, DType::F32, seed).affine(100.0, 50.0).unwrap();
        for dt in [DType::U8, DType::I32] {
            let y = x.to_dtype(dt).unwrap();
            bits_equal(&y, &cast_ref(&x, dt).unwrap());
            bits_equal(&y.to_dtype(DType::F32).unwrap(), &cast_ref(&y, DType::F32).unwrap());
        }
    }
}

#[test]
fn bf16_ties_round_to_even() {
    // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: even mantissa is 1. 1 + 3·2^-8 lies between
    // 1 + 2^-7 (odd) and 1 + 2^-6 (even): rounds up. A hair above a tie rounds away.
    let x = Tensor::from_vec(
        vec![
            1.0f32 + 2f32.powi(-8),
            1.0 + 3.0 * 2f32.powi(-8),
            1.0 + 2f32.powi(-8) + 2f32.powi(-20),
            -1.0 - 2f32.powi(-8),
        ],
        [4],
    )
    .unwrap();
    let want = [1.0f32, 1.0 + 2f32.powi(-6), 1.0 + 2f32.powi(-7), -1.0];
    assert_eq!(x.to_dtype(DType::BF16).unwrap().to_vec::<bf16>().unwrap(), want.map(bf16::from_f32).to_vec());
    assert_eq!(x.to_dtype(DType::BF16).unwrap().to_vec_f32().unwrap(), want.to_vec());
}

#[test]
fn f16_ties_round_to_even() {
    // Same ties at 11 significant bits, plus the overflow edge: 65520 is halfway between the
    // largest f16 (65504) and 65536, and rounds to infinity.
    let x = Tensor::from_vec(vec![1.0f32 + 2f32.powi(-11), 1.0 + 3.0 * 2f32.powi(-11), 65519.0, 65520.0], [4]).unwrap();
    let y = x.to_dtype(DType::F16).unwrap().to_vec_f32().unwrap();
    assert_eq!(y, vec![1.0, 1.0 + 2f32.powi(-9), 65504.0, f32::INFINITY]);
}

#[test]
fn large_cast_uses_every_chunk() {
    let x = random_view(&[300, 257], crate::ops::testing::View::Narrowed, DType::F32, 7);
    for dt in [DType::BF16, DType::F16, DType::I32] {
        bits_equal(&x.to_dtype(dt).unwrap(), &cast_ref(&x, dt).unwrap());
    }
}

#[test]
fn same_dtype_is_a_view() {
    let x = Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap();
    assert!(x.to_dtype(DType::F32).unwrap().same_storage(&x));
}
