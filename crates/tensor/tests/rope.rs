//! Tests of `ops::rope`: tables against the reference recipe and known values, the rotation and
//! its backward against the f64 references over random shapes and dtypes, finite differences,
//! the backward undoing the forward, non-contiguous inputs (the `(B, T, H, D)` → `(B, H, T, D)`
//! transpose the model makes), and shape errors.

mod fused_common;

use fused_common::*;
use proptest::prelude::*;
use tensor::ops::rope::{self, cpu};
use tensor::{DType, Error, Rng, Tensor};

/// `(B, H, T, D)` with even D.
fn dims_strategy() -> impl Strategy<Value = [usize; 4]> {
    (1usize..3, 1usize..4, 1usize..10, 1usize..20).prop_map(|(b, h, t, half)| [b, h, t, 2 * half])
}

fn check_against_ref(dims: [usize; 4], pos0: usize, seed: u64, dtype: DType) {
    let [_, _, t, d] = dims;
    let mut rng = Rng::new(seed);
    let n = dims.iter().product();
    let (x, x64) = tensor_of(&randn(&mut rng, n, 0.0, 1.0), &dims, dtype);
    let (cos, sin) = rope::tables(d, 10_000.0, pos0, t).unwrap();
    let (c64, s64) = (f64s(&cos.to_vec::<f32>().unwrap()), f64s(&sin.to_vec::<f32>().unwrap()));
    let tol = tol_for(dtype);
    let y = rope::fwd(&x, &cos, &sin).unwrap();
    assert_eq!((y.dtype(), y.dims()), (dtype, &dims[..]));
    assert_close("y", &y.to_vec_f32().unwrap(), &cpu::rope_fwd_ref(&x64, &c64, &s64, t, d), tol);
    let dx = rope::bwd(&x, &cos, &sin).unwrap();
    assert_close("dx", &dx.to_vec_f32().unwrap(), &cpu::rope_bwd_ref(&x64, &c64, &s64, t, d), tol);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fast_matches_ref(dims in dims_strategy(), pos0 in 0usize..5000, seed in any::<u64>(), dt in 0usize..3) {
        check_against_ref(dims, pos0, seed, FLOATS[dt]);
    }

    #[test]
    fn tables_match_ref(half in 1usize..64, pos0 in 0usize..100_000, t in 0usize..8, theta in prop::sample::select(vec![10_000.0, 500_000.0, 1e6])) {
        let (cos, sin) = rope::tables(2 * half, theta, pos0, t).unwrap();
        prop_assert_eq!(cos.dims(), &[t, half]);
        let (c_ref, s_ref) = cpu::rope_tables_ref(2 * half, theta, pos0, t);
        // The same f32 recipe: equal after rounding the reference's cos/sin to f32.
        prop_assert_eq!(cos.to_vec::<f32>().unwrap(), c_ref.iter().map(|&v| v as f32).collect::<Vec<_>>());
        prop_assert_eq!(sin.to_vec::<f32>().unwrap(), s_ref.iter().map(|&v| v as f32).collect::<Vec<_>>());
    }

    /// RoPE is linear: `L = Σ dy·rope(x)`, and its gradient is the reference backward.
    #[test]
    fn ref_bwd_matches_finite_differences(t in 1usize..4, half in 1usize..5, seed in any::<u64>()) {
        let d = 2 * half;
        let mut rng = Rng::new(seed);
        let (x, dy) = (f64s(&randn(&mut rng, 2 * t * d, 0.0, 1.0)), f64s(&randn(&mut rng, 2 * t * d, 0.0, 1.0)));
        let (c, s) = cpu::rope_tables_ref(d, 10_000.0, 3, t);
        let dx = cpu::rope_bwd_ref(&dy, &c, &s, t, d);
        let ndx = numeric_grad(|x| dot64(&dy, &cpu::rope_fwd_ref(x, &c, &s, t, d)), &x);
        assert_close64("dx", &dx, &ndx, FD);
    }
}

/// HF's values: `inv_freq[0] = 1`, so the first column's angle is the position itself, and
/// the last column at D = 4 uses `1/theta^(1/2)`.
#[test]
fn tables_known_values() {
    let (cos, sin) = rope::tables(4, 10_000.0, 0, 3).unwrap();
    let (cos, sin) = (cos.to_vec::<f32>().unwrap(), sin.to_vec::<f32>().unwrap());
    assert_eq!(&cos[..2], &[1.0, 1.0]);
    assert_eq!(&sin[..2], &[0.0, 0.0]);
    assert_eq!(cos[4], (2.0f64).cos() as f32);
    assert_eq!(sin[5], ((2.0f32 * 0.01f32) as f64).sin() as f32);
}

/// The backward is the inverse rotation, so it undoes the forward.
#[test]
fn bwd_inverts_fwd() {
    let mut rng = Rng::new(3);
    let x = Tensor::from_vec(randn(&mut rng, 2 * 3 * 17 * 64, 0.0, 1.0), [2, 3, 17, 64]).unwrap();
    let (cos, sin) = rope::tables(64, 500_000.0, 1000, 17).unwrap();
    let back = rope::bwd(&rope::fwd(&x, &cos, &sin).unwrap(), &cos, &sin).unwrap();
    assert_close("x", &back.to_vec_f32().unwrap(), &f64s(&x.to_vec::<f32>().unwrap()), F32);
}

#[test]
fn non_contiguous_inputs_match() {
    let mut rng = Rng::new(4);
    // (B, T, H, D) viewed as (B, H, T, D), as the attention block does after the projections.
    let bthd = Tensor::from_vec(randn(&mut rng, 2 * 5 * 3 * 8, 0.0, 1.0), [2, 5, 3, 8]).unwrap();
    let x = bthd.transpose(1, 2).unwrap();
    assert!(!x.is_contiguous());
    let (cos, sin) = rope::tables(8, 10_000.0, 7, 5).unwrap();
    let y = rope::fwd(&x, &cos, &sin).unwrap().to_vec::<f32>().unwrap();
    let y_contig = rope::fwd(&x.contiguous().unwrap(), &cos, &sin).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(y, y_contig);
    let y_tables = rope::fwd(&x, &noncontig(&cos), &noncontig(&sin)).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(y, y_tables);
}

#[test]
fn errors_name_the_op() {
    let x = Tensor::ones([1, 2, 3, 8], DType::F32);
    let (cos, sin) = rope::tables(8, 10_000.0, 0, 3).unwrap();
    assert!(matches!(rope::tables(7, 10_000.0, 0, 3), Err(Error::Invalid { op: "rope::tables", .. })));
    assert!(matches!(rope::tables(8, 0.0, 0, 3), Err(Error::Invalid { op: "rope::tables", .. })));
    let e = rope::fwd(&Tensor::ones([1, 2, 3, 7], DType::F32), &cos, &sin).unwrap_err();
    assert!(matches!(e, Error::Invalid { op: "rope::fwd", .. }) && e.to_string().contains("[1, 2, 3, 7]"), "{e}");
    let (c4, s4) = rope::tables(8, 10_000.0, 0, 4).unwrap();
    assert!(matches!(rope::fwd(&x, &c4, &s4), Err(Error::ShapeMismatch { op: "rope::fwd", .. })));
    assert!(matches!(rope::fwd(&x, &cos, &s4), Err(Error::ShapeMismatch { op: "rope::fwd", .. })));
    assert!(rope::fwd(&Tensor::ones([2, 3, 8], DType::F32), &cos, &sin).is_err());
    assert!(matches!(
        rope::bwd(&Tensor::ones([1, 1, 3, 6], DType::F32), &cos, &sin),
        Err(Error::ShapeMismatch { op: "rope::bwd", .. })
    ));
}

#[test]
fn empty_batch() {
    let x = Tensor::ones([0, 2, 3, 8], DType::F32);
    let (cos, sin) = rope::tables(8, 10_000.0, 0, 3).unwrap();
    assert_eq!(rope::fwd(&x, &cos, &sin).unwrap().dims(), &[0, 2, 3, 8]);
    let (c0, s0) = rope::tables(8, 10_000.0, 0, 0).unwrap();
    assert_eq!(rope::bwd(&Tensor::ones([1, 2, 0, 8], DType::F32), &c0, &s0).unwrap().dims(), &[1, 2, 0, 8]);
}
