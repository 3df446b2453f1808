//! Matmul tests: gemm against the f64 triple loop over random M, K, N (1 and odd sizes), batch
//! dims that broadcast either way, every view of either operand (transposed views go through
//! strides; broadcast rows force the contiguous fallback), all float dtypes; larger products
//! that take the folded, per-batch-task and multi-threaded paths; shape and dtype errors.

use super::cpu::matmul_ref;
use crate::ops::testing::{any_float, any_view, assert_close, random_view, Tol, View};
use crate::{DType, Error, Tensor};
use proptest::prelude::*;

/// The dtype's tolerance plus f32 accumulation error growing with K.
fn tol(dtype: DType, k: usize) -> Tol {
    let t = Tol::of(dtype);
    Tol { abs: t.abs + 2e-6 * k as f32, rel: t.rel.max(2e-5) }
}

fn check(a: &Tensor, b: &Tensor) {
    let k = a.dims()[a.rank() - 1];
    assert_close("matmul", &a.matmul(b).unwrap(), &matmul_ref(a, b).unwrap(), tol(a.dtype(), k));
}

/// Batch dims for a and b that broadcast: each size kept or set to 1 per side, b maybe shorter.
fn batches() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec((1usize..4, any::<bool>(), any::<bool>()), 0..=2).prop_flat_map(|d| {
        let a: Vec<usize> = d.iter().map(|&(s, one, _)| if one { 1 } else { s }).collect();
        let b: Vec<usize> = d.iter().map(|&(s, _, one)| if one { 1 } else { s }).collect();
        (Just(a), Just(b), 0..=d.len()).prop_map(|(a, b, drop)| (a, b[drop..].to_vec()))
    })
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..=9, 1 => Just(1usize), 2 => 10usize..=40]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn gemm_matches_ref((ba, bb) in batches(), m in size(), k in size(), n in size(),
                        va in any_view(), vb in any_view(), dtype in any_float(), seed: u64) {
        let a = random_view(&[ba, vec![m, k]].concat(), va, dtype, seed);
        let b = random_view(&[bb, vec![k, n]].concat(), vb, dtype, seed ^ 9);
        check(&a, &b);
    }

    #[test]
    fn addmm_matches_ref(m in size(), k in size(), n in size(), beta in -2.0f32..2.0,
                         va in any_view(), vb in any_view(), vc in any_view(), dtype in any_float(), seed: u64) {
        let a = random_view(&[m, k], va, dtype, seed);
        let b = random_view(&[k, n], vb, dtype, seed ^ 9);
        let acc = random_view(&[m, n], vc, dtype, seed ^ 77);
        let got = acc.addmm(&a, &b, beta).unwrap();
        prop_assert_eq!(got.dtype(), dtype);
        if dtype == DType::F32 {
            // One rounding of acc + beta·Σ: the product's tolerance grows with |beta|.
            let want = acc.add(&matmul_ref(&a, &b).unwrap().scale(beta).unwrap()).unwrap();
            let t = tol(dtype, k);
            assert_close("addmm", &got, &want, Tol { abs: t.abs * (1.0 + beta.abs()), rel: t.rel });
        } else {
            // Half types round the product first, exactly as the documented fallback.
            let want = acc.add(&a.matmul(&b).unwrap().scale(beta).unwrap()).unwrap();
            prop_assert_eq!(got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
        }
    }
}

#[test]
fn addmm_errors() {
    let t = |d: &[usize]| Tensor::zeros(d.to_vec(), DType::F32);
    assert!(t(&[2, 3]).addmm(&t(&[2, 4]), &t(&[4, 2]), 1.0).is_err()); // acc shape
    assert!(t(&[2, 3]).addmm(&t(&[2, 4]), &t(&[5, 3]), 1.0).is_err()); // inner dims
    assert!(t(&[1, 2, 3]).addmm(&t(&[2, 4]), &t(&[4, 3]), 1.0).is_err()); // rank
    let bf = Tensor::zeros([4, 3], DType::BF16);
    assert!(matches!(t(&[2, 3]).addmm(&t(&[2, 4]), &bf, 1.0), Err(Error::DTypeMismatch { .. })));
}

#[test]
fn larger_products_every_path() {
    // Folded: batched activations times one transposed weight.
    let x = random_view(&[2, 3, 67, 129], View::Contiguous, DType::F32, 1);
    let w = random_view(&[65, 129], View::Contiguous, DType::F32, 2).t().unwrap();
    check(&x, &w);
    // Batch of small products, one per task, with a transposed rhs.
    check(
        &random_view(&[6, 33, 40], View::Narrowed, DType::F32, 3),
        &random_view(&[6, 40, 20], View::Transposed, DType::F32, 4),
    );
    // One large product split by gemm across threads, both operands transposed views.
    check(
        &random_view(&[300, 257], View::Transposed, DType::F32, 5),
        &random_view(&[257, 190], View::Transposed, DType::F32, 6),
    );
    check(
        &random_view(&[64, 100], View::Contiguous, DType::BF16, 7),
        &random_view(&[100, 50], View::Transposed, DType::BF16, 8),
    );
    // Lhs broadcast over the batch while rhs is batched: cannot fold, still correct.
    check(
        &random_view(&[4, 70, 30], View::Broadcast, DType::F32, 9),
        &random_view(&[4, 30, 70], View::Contiguous, DType::F32, 10),
    );
}

#[test]
fn transposed_rhs_is_not_copied() {
    // A (K, N) view of an (N, K) weight: same storage, strides (1, K), accepted as column-major.
    let w = random_view(&[5, 7], View::Contiguous, DType::F32, 1);
    let wt = w.t().unwrap();
    assert!(!wt.is_contiguous() && wt.same_storage(&w));
    check(&random_view(&[3, 7], View::Contiguous, DType::F32, 2), &wt);
}

#[test]
fn zero_k_gives_zeros() {
    let y = Tensor::zeros([3, 0], DType::F32).matmul(&Tensor::zeros([0, 2], DType::F32)).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), vec![0.0; 6]);
}

#[test]
fn errors() {
    let a = Tensor::ones([2, 3], DType::F32);
    let err = a.matmul(&Tensor::ones([2, 3], DType::F32)).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "matmul", .. }), "{err}");
    let err = Tensor::ones([2, 2, 3], DType::F32).matmul(&Tensor::ones([3, 3, 4], DType::F32)).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { op: "matmul", .. }), "{err}");
    let err = a.matmul(&Tensor::ones([3], DType::F32)).unwrap_err();
    assert!(matches!(err, Error::Invalid { op: "matmul", .. }), "{err}");
    let err = a.matmul(&Tensor::ones([3, 2], DType::BF16)).unwrap_err();
    assert!(matches!(err, Error::DTypeMismatch { op: "matmul", .. }), "{err}");
    let err = Tensor::ones([2, 3], DType::I32).matmul(&Tensor::ones([3, 2], DType::I32)).unwrap_err();
    assert!(matches!(err, Error::UnsupportedDType { op: "matmul", .. }), "{err}");
}

/// LoRA-shaped products (one dim ≤ 16, the others up to a few hundred, tails past the 16- and
/// 64-lane blocks, sizes that split across threads), every view of either operand, plain and
/// accumulated: the skinny kernels (or gemm where they decline) against the f64 reference.
fn skinny_dims() -> impl Strategy<Value = [usize; 3]> {
    let small = 1usize..=16;
    let big = prop_oneof![1usize..=40, 60usize..=300];
    (small, big.clone(), big, 0usize..3).prop_map(|(s, x, y, which)| match which {
        0 => [x, s, y],
        1 => [x, y, s],
        _ => [s, x, y],
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn skinny_products_match_ref([m, k, n] in skinny_dims(), va in any_view(), vb in any_view(),
                                 vc in any_view(), beta in -2.0f32..2.0, seed: u64) {
        let a = random_view(&[m, k], va, DType::F32, seed);
        let b = random_view(&[k, n], vb, DType::F32, seed ^ 5);
        check(&a, &b);
        let acc = random_view(&[m, n], vc, DType::F32, seed ^ 11);
        let want = acc.add(&matmul_ref(&a, &b).unwrap().scale(beta).unwrap()).unwrap();
        let t = tol(DType::F32, k);
        assert_close("addmm", &acc.addmm(&a, &b, beta).unwrap(), &want, Tol { abs: t.abs * (1.0 + beta.abs()), rel: t.rel });
    }
}

/// The LoRA layouts do take the skinny kernels on an AVX-512 CPU (and are declined elsewhere).
#[test]
fn lora_layouts_take_the_skinny_kernels() {
    use super::skinny::{try_run, Mat};
    let avx512 = cfg!(target_arch = "x86_64") && {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    };
    let data = vec![1f32; 300 * 300];
    let rm = |cols: usize| Mat { ptr: data.as_ptr(), rs: cols, cs: 1 };
    let cm = |rows: usize| Mat { ptr: data.as_ptr(), rs: 1, cs: rows };
    // (lhs, rhs, [m, k, n]) for x·Aᵀ, u·Bᵀ, g·B, gu·A, guᵀ·x, gᵀ·u at N=256, in 200, out 300, r 8.
    let cases = [
        (rm(200), cm(200), [256, 200, 8]),
        (rm(8), cm(8), [256, 8, 300]),
        (rm(300), rm(8), [256, 300, 8]),
        (rm(8), rm(200), [256, 8, 200]),
        (cm(8), rm(200), [8, 256, 200]),
        (cm(300), rm(8), [300, 256, 8]),
    ];
    for (i, (a, b, [m, k, n])) in cases.into_iter().enumerate() {
        let mut dst = vec![0f32; m * n];
        // SAFETY: every case addresses at most 300×300 elements of `data`.
        let took = unsafe { try_run(&mut dst, a, b, [m, k, n], None, true) };
        assert_eq!(took, avx512, "case {i}");
        if took {
            assert!(dst.iter().all(|&v| v == k as f32), "case {i}: ones·ones must give K");
        }
    }
}

/// K past the dot kernel's 512-element chunks (the partial sums of later chunks accumulate).
#[test]
fn skinny_long_k() {
    for (i, [m, k, n]) in [[37, 1100, 8], [5, 1025, 3], [256, 1376, 16]].into_iter().enumerate() {
        for (va, vb) in [
            (View::Contiguous, View::Transposed),
            (View::Contiguous, View::Contiguous),
            (View::Transposed, View::Narrowed),
        ] {
            let seed = 100 + i as u64;
            let (a, b) = (random_view(&[m, k], va, DType::F32, seed), random_view(&[k, n], vb, DType::F32, seed ^ 3));
            check(&a, &b);
            let acc = random_view(&[m, n], View::Contiguous, DType::F32, seed ^ 7);
            let want = acc.add(&matmul_ref(&a, &b).unwrap().scale(0.5).unwrap()).unwrap();
            let t = tol(DType::F32, k);
            assert_close("addmm", &acc.addmm(&a, &b, 0.5).unwrap(), &want, Tol { abs: t.abs * 1.5, rel: t.rel });
        }
    }
}
