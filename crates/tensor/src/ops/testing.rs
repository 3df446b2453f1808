//! Helpers for the op folders' property tests (compiled only for tests): named tolerances that
//! scale with the value (`abs + rel·|ref|`, per dtype, after llm.c's `validate_result`), and random
//! tensors in the layouts every op must accept: contiguous, transposed, narrowed and broadcast.
//! Values are drawn from the crate's seeded [`Rng`], never all zeros.

use crate::{DType, Rng, Tensor};
use proptest::prelude::*;

/// Allowed error `abs + rel·|want|`.
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub abs: f32,
    pub rel: f32,
}

/// f32 results that differ only by evaluation order or a libm ulp.
pub const F32_TOL: Tol = Tol { abs: 1e-6, rel: 1e-5 };
/// bf16 keeps 8 significant bits: two ulps of 2^-8.
pub const BF16_TOL: Tol = Tol { abs: 1e-3, rel: 8e-3 };
/// f16 keeps 11 significant bits: two ulps of 2^-11.
pub const F16_TOL: Tol = Tol { abs: 1e-4, rel: 1e-3 };

impl Tol {
    /// The tolerance for results stored in `dtype`.
    pub fn of(dtype: DType) -> Tol {
        match dtype {
            DType::BF16 => BF16_TOL,
            DType::F16 => F16_TOL,
            _ => F32_TOL,
        }
    }
    /// Widen by `k` (for results accumulated over many terms).
    pub fn times(self, k: f32) -> Tol {
        Tol { abs: self.abs * k, rel: self.rel * k }
    }
}

/// Panic (proptest shrinks on panics) unless `got` and `want` have equal shape and dtype and every
/// element is within `tol`. NaN must meet NaN and infinities must match exactly.
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: Tol) {
    assert_eq!(got.dims(), want.dims(), "{what}: shapes differ");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtypes differ");
    let (g, w) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
    for (i, (&g, &w)) in g.iter().zip(&w).enumerate() {
        let ok = if w.is_nan() || g.is_nan() || w.is_infinite() {
            g.is_nan() == w.is_nan() && (w.is_nan() || g == w)
        } else {
            (g - w).abs() <= tol.abs + tol.rel * w.abs()
        };
        assert!(ok, "{what}: element {i} of {:?} is {g}, reference {w} (tol {tol:?})", got.dims());
    }
}

/// How a test operand is laid out in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Contiguous,
    /// Last two dims stored swapped and viewed through `t()`.
    Transposed,
    /// A window of a larger tensor (offset and row gaps).
    Narrowed,
    /// Dim 0 stored with size 1 and stretched with stride 0.
    Broadcast,
}

/// Any of the four layouts.
pub fn any_view() -> impl Strategy<Value = View> {
    prop_oneof![Just(View::Contiguous), Just(View::Transposed), Just(View::Narrowed), Just(View::Broadcast)]
}

/// Any float dtype, f32 most often.
pub fn any_float() -> impl Strategy<Value = DType> {
    prop_oneof![4 => Just(DType::F32), 1 => Just(DType::BF16), 1 => Just(DType::F16)]
}

/// Dimension sizes that hit the edge cases: 1, small odd sizes, and sizes past a SIMD width.
pub fn dim_size() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..=9, 1 => Just(1usize), 1 => 15usize..=41]
}

/// Standard-normal values in `dims` laid out as `view`, converted to `dtype`.
pub fn random_view(dims: &[usize], view: View, dtype: DType, seed: u64) -> Tensor {
    build(dims, view, dtype, &mut |shape: &[usize], rng: &mut Rng| Tensor::randn(shape.to_vec(), 1.0, rng), seed)
}

/// Values uniform in `[lo, hi)` in `dims` laid out as `view`, converted to `dtype`.
pub fn random_view_in(dims: &[usize], view: View, dtype: DType, seed: u64, lo: f32, hi: f32) -> Tensor {
    build(
        dims,
        view,
        dtype,
        &mut |shape: &[usize], rng: &mut Rng| Tensor::rand_uniform(shape.to_vec(), lo, hi, rng),
        seed,
    )
}

fn build(
    dims: &[usize],
    view: View,
    dtype: DType,
    fill: &mut dyn FnMut(&[usize], &mut Rng) -> Tensor,
    seed: u64,
) -> Tensor {
    let mut rng = Rng::new(seed);
    let cast = |t: Tensor| t.to_dtype(dtype).unwrap();
    let r = dims.len();
    match view {
        View::Transposed if r >= 2 => {
            let mut stored = dims.to_vec();
            stored.swap(r - 2, r - 1);
            cast(fill(&stored, &mut rng)).t().unwrap()
        }
        View::Narrowed if r == 1 => cast(fill(&[dims[0] + 3], &mut rng)).narrow(0, 2, dims[0]).unwrap(),
        View::Narrowed if r >= 2 => {
            let mut stored = dims.to_vec();
            stored[0] += 1;
            stored[r - 1] += 3;
            let t = cast(fill(&stored, &mut rng));
            t.narrow(0, 1, dims[0]).unwrap().narrow(r - 1, 2, dims[r - 1]).unwrap()
        }
        View::Broadcast if r >= 1 => {
            let mut stored = dims.to_vec();
            stored[0] = 1;
            cast(fill(&stored, &mut rng)).broadcast_as(dims.to_vec()).unwrap()
        }
        _ => cast(fill(dims, &mut rng)),
    }
}
