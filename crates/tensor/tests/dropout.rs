//! Tests of `ops::dropout::mask` on the CPU: the fast path equals the scalar `mask_ref` bit for
//! bit in every dtype (random shapes, keeps and seeds, keeps on and next to the 2^-24 grid, more
//! than one rayon chunk), the integer threshold is the float rule `u < keep`, the mask is the
//! `Rng` stream the model drew before, the kept fraction is binomial, seeds give different masks,
//! keep = 1 gives ones, and bad arguments are errors naming the op. The CUDA twin (same bits on
//! the device) is `dropout_masks` in `cuda_ops.rs`.

use proptest::prelude::*;
use tensor::ops::dropout::{self, cpu};
use tensor::{bf16, f16, DType, Device, Error, Rng, Tensor};

const FLOATS: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// The elements' bits in `dtype`'s width.
fn bits(t: &Tensor) -> Vec<u32> {
    match t.dtype() {
        DType::F32 => t.to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect(),
        DType::BF16 => t.to_vec::<bf16>().unwrap().into_iter().map(|v| v.to_bits() as u32).collect(),
        DType::F16 => t.to_vec::<f16>().unwrap().into_iter().map(|v| v.to_bits() as u32).collect(),
        d => panic!("not a mask dtype: {d:?}"),
    }
}

/// `mask_ref` rounded once to `dtype`, as bits.
fn ref_bits(n: usize, keep: f32, seed: u64, dtype: DType) -> Vec<u32> {
    let r = cpu::mask_ref(n, keep, seed);
    match dtype {
        DType::F32 => r.into_iter().map(f32::to_bits).collect(),
        DType::BF16 => r.into_iter().map(|v| bf16::from_f32(v).to_bits() as u32).collect(),
        DType::F16 => r.into_iter().map(|v| f16::from_f32(v).to_bits() as u32).collect(),
        d => panic!("not a mask dtype: {d:?}"),
    }
}

#[track_caller]
fn check_against_ref(dims: &[usize], keep: f32, seed: u64, dtype: DType) {
    let m = dropout::mask(dims.to_vec(), keep, seed, dtype, Device::Cpu).unwrap();
    assert_eq!((m.dims(), m.dtype(), m.device()), (dims, dtype, Device::Cpu));
    let n = dims.iter().product();
    let (got, want) = (bits(&m), ref_bits(n, keep, seed, dtype));
    if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
        panic!("{dims:?} keep {keep} seed {seed} {dtype:?}: element {i}: {:#x} vs reference {:#x}", got[i], want[i]);
    }
}

/// Keeps worth trying: anywhere in (0, 1], exactly on the 2^-24 grid, one f32 ulp either side.
fn keep_strategy() -> impl Strategy<Value = f32> {
    prop_oneof![
        (1u32..=1 << 24).prop_map(|k| k as f32 / (1u32 << 24) as f32),
        (1u32..1 << 24).prop_map(|k| f32::from_bits((k as f32 / (1u32 << 24) as f32).to_bits() + 1).min(1.0)),
        (2u32..=1 << 24).prop_map(|k| f32::from_bits((k as f32 / (1u32 << 24) as f32).to_bits() - 1)),
        (1u32..=1000).prop_map(|k| k as f32 / 1000.0),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fast_matches_ref(dims in prop::collection::vec(1usize..40, 0..4), keep in keep_strategy(), seed in any::<u64>(), dt in 0usize..3) {
        check_against_ref(&dims, keep, seed, FLOATS[dt]);
    }

    /// The fast path's chunks start at any index: a window of the mask is the same window of the
    /// reference.
    #[test]
    fn any_window_matches_ref(first in 0u64..1 << 40, len in 1usize..3000, keep in keep_strategy(), seed in any::<u64>()) {
        let (t, v) = dropout::params(keep, DType::F32).unwrap();
        let mut out = vec![f32::NAN; len];
        cpu::mask_into(&mut out, first, seed, t, v, 0.0);
        for (j, &o) in out.iter().enumerate() {
            let u = (cpu::bits(seed, first + j as u64) >> 40) as f32 / (1u32 << 24) as f32;
            prop_assert_eq!(o.to_bits(), if u < keep { v } else { 0.0 }.to_bits(), "index {}", first + j as u64);
        }
    }

    /// Keep set to one element's own draw `u` (the boundary: `u < keep` is false, so it is
    /// dropped) and one f32 ulp above it (kept): the cases an off-by-one threshold gets wrong,
    /// which random keeps hit once in 2^24 draws.
    #[test]
    fn boundary_draws(dims in prop::collection::vec(1usize..30, 1..3), pick in any::<prop::sample::Index>(), seed in any::<u64>(), dt in 0usize..3) {
        let n: usize = dims.iter().product();
        let i = pick.index(n);
        let u = (cpu::bits(seed, i as u64) >> 40) as u32;
        prop_assume!(u > 0);
        let on = u as f32 / (1u32 << 24) as f32;
        for (keep, kept) in [(on, false), (f32::from_bits(on.to_bits() + 1), true)] {
            check_against_ref(&dims, keep, seed, FLOATS[dt]);
            let m = dropout::mask(dims.clone(), keep, seed, DType::F32, Device::Cpu).unwrap().to_vec::<f32>().unwrap();
            prop_assert_eq!(m[i] != 0.0, kept, "element {} with draw {} at keep {}", i, u, keep);
        }
    }

    /// `ceil(keep·2^24)` splits the 24-bit draws exactly where `u < keep` does.
    #[test]
    fn threshold_is_the_float_rule(keep in keep_strategy()) {
        let t = cpu::threshold(keep);
        prop_assert!((1..=1 << 24).contains(&t));
        let u = |x: u32| x as f32 / (1u32 << 24) as f32;
        prop_assert!(u(t - 1) < keep, "draw {} must be kept at keep {}", t - 1, keep);
        if t < 1 << 24 {
            prop_assert!(u(t) >= keep, "draw {} must be dropped at keep {}", t, keep);
        }
    }
}

/// More than one rayon chunk, a length that is not a multiple of a chunk, every dtype.
#[test]
fn large_shape() {
    for (dt, keep) in FLOATS.into_iter().zip([0.9, 0.5, 0.1]) {
        check_against_ref(&[3, 70_001], keep, 0xDEAD_BEEF, dt);
    }
}

/// The mask is what `proj` in crates/llama drew one element at a time before: the `Rng` stream.
#[test]
fn equals_the_sequential_rng_stream() {
    for (seed, keep) in [(0u64, 0.9f32), (42, 0.5), (u64::MAX, 0.1), (0x1234_5678_9ABC_DEF0, 0.999)] {
        let mut rng = Rng::new(seed);
        let old: Vec<f32> = (0..5000).map(|_| if rng.uniform() < keep { 1.0 / keep } else { 0.0 }).collect();
        let m = dropout::mask([50, 100], keep, seed, DType::F32, Device::Cpu).unwrap();
        assert_eq!(m.to_vec::<f32>().unwrap(), old, "seed {seed} keep {keep}");
    }
}

/// The kept count of n independent draws is Binomial(n, keep): within 6 standard deviations.
#[test]
fn kept_fraction_is_binomial() {
    let n = 1 << 22;
    for (i, keep) in [0.9f32, 0.5, 0.1, 0.01, 0.999].into_iter().enumerate() {
        let m = dropout::mask([n], keep, 1000 + i as u64, DType::F32, Device::Cpu).unwrap().to_vec::<f32>().unwrap();
        let kept = m.iter().filter(|&&v| v != 0.0).count() as f64;
        let (mean, sd) = (n as f64 * keep as f64, (n as f64 * keep as f64 * (1.0 - keep as f64)).sqrt());
        assert!((kept - mean).abs() <= 6.0 * sd, "keep {keep}: {kept} kept of {n}, expected {mean} ± {sd}");
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.0 / keep));
    }
}

/// Different seeds (adjacent, and the layer/projection mixing the model uses) give different
/// masks, disagreeing on about 2·keep·(1 − keep) of the elements; the same seed gives the same.
#[test]
fn masks_differ_between_seeds() {
    let (n, keep) = (1 << 16, 0.5f32);
    let get = |seed| dropout::mask([n], keep, seed, DType::F32, Device::Cpu).unwrap().to_vec::<f32>().unwrap();
    let base = get(7);
    assert_eq!(base, get(7));
    for other in [8u64, 7 ^ 0x9E37_79B9_7F4A_7C15, 7 ^ 2u64.wrapping_mul(0xD1B5_4A32_D192_ED03), 1 << 63] {
        let m = get(other);
        let differ = base.iter().zip(&m).filter(|(a, b)| a != b).count() as f64 / n as f64;
        assert!((differ - 0.5).abs() < 0.02, "seed {other}: {differ} of the elements differ from seed 7");
    }
}

#[test]
fn keep_one_gives_ones() {
    for dt in FLOATS {
        let m = dropout::mask([5, 77], 1.0, 3, dt, Device::Cpu).unwrap();
        assert_eq!(m.dtype(), dt);
        assert!(m.to_vec_f32().unwrap().iter().all(|&v| v == 1.0), "{dt:?}");
    }
}

/// The kept value is `1/keep` computed in f32 and rounded once to the dtype.
#[test]
fn kept_value_is_rounded_once() {
    let keep = 0.7f32;
    for dt in FLOATS {
        let m = dropout::mask([4096], keep, 5, dt, Device::Cpu).unwrap();
        let want = Tensor::full(1.0 / keep, [1], dt).to_vec_f32().unwrap()[0];
        let v = m.to_vec_f32().unwrap();
        assert!(v.contains(&0.0) && v.iter().all(|&x| x == 0.0 || x == want), "{dt:?}");
    }
}

#[test]
fn bad_arguments_are_errors_naming_the_op() {
    for keep in [0.0f32, -0.1, 1.000_001, f32::NAN, f32::INFINITY, -0.0] {
        let e = dropout::mask([4], keep, 0, DType::F32, Device::Cpu).unwrap_err();
        assert!(matches!(e, Error::Invalid { op: "dropout::mask", .. }), "keep {keep}: {e}");
    }
    // 1/keep beyond f16's range (65504) is an error, not a mask of infinities; f32 takes it.
    let e = dropout::mask([4], 1e-5, 0, DType::F16, Device::Cpu).unwrap_err();
    assert!(matches!(e, Error::Invalid { op: "dropout::mask", .. }), "{e}");
    assert!(dropout::mask([4], 1e-5, 0, DType::F32, Device::Cpu).is_ok());
    for dt in [DType::I32, DType::U8] {
        let e = dropout::mask([4], 0.5, 0, dt, Device::Cpu).unwrap_err();
        assert!(matches!(e, Error::UnsupportedDType { op: "dropout::mask", .. }), "{e}");
    }
}

#[test]
fn empty_and_scalar_shapes() {
    let e = dropout::mask([0, 3], 0.5, 1, DType::BF16, Device::Cpu).unwrap();
    assert_eq!((e.dims(), e.elem_count()), (&[0, 3][..], 0));
    let s = dropout::mask(Vec::<usize>::new(), 0.5, 1, DType::F32, Device::Cpu).unwrap();
    assert_eq!(s.to_vec::<f32>().unwrap(), cpu::mask_ref(1, 0.5, 1));
}
