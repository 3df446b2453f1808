//! Helpers shared by the fused Llama ops (rmsnorm, rope, swiglu, attention, cross_entropy): reading
//! a float tensor as f32 without a copy when it already is f32, narrowing f32 results back to the
//! caller's dtype, shape/dtype checks, a branch-free `exp` the compiler can vectorise (Cephes
//! `expf`; its slice loop also built for AVX2 and picked at run time), and eight-lane sum, max and
//! dot. CPU only: the device `match` stays in each op's `mod.rs`; these run inside its `Cpu` arm.

use crate::{bf16, f16, CpuStorage, DType, Error, Result, Shape, Tensor};
use std::borrow::Cow;
use std::mem::MaybeUninit;

/// The elements of a float CPU tensor as f32, borrowed when it is contiguous f32, widened otherwise.
pub(crate) fn f32_data<'a>(t: &'a Tensor, op: &'static str) -> Result<Cow<'a, [f32]>> {
    match t.cpu_storage(op)? {
        CpuStorage::F32(_) if t.is_contiguous() => Ok(Cow::Borrowed(t.as_slice::<f32>()?)),
        CpuStorage::F32(_) | CpuStorage::BF16(_) | CpuStorage::F16(_) => Ok(Cow::Owned(t.to_vec_f32()?)),
        _ => Err(Error::UnsupportedDType { op, dtype: t.dtype() }),
    }
}

/// A contiguous CPU tensor of `dtype` from f32 values (round-to-nearest-even for bf16/f16).
pub(crate) fn from_f32(v: Vec<f32>, shape: impl Into<Shape>, dtype: DType, op: &'static str) -> Result<Tensor> {
    match dtype {
        DType::F32 => Tensor::from_vec(v, shape),
        DType::BF16 => Tensor::from_vec(v.into_iter().map(bf16::from_f32).collect::<Vec<_>>(), shape),
        DType::F16 => Tensor::from_vec(v.into_iter().map(f16::from_f32).collect::<Vec<_>>(), shape),
        _ => Err(Error::UnsupportedDType { op, dtype }),
    }
}

/// Err unless `t` holds f32, bf16 or f16.
pub(crate) fn check_float(t: &Tensor, op: &'static str) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype: t.dtype() })
    }
}

/// Err unless `a` and `b` have the same dtype.
pub(crate) fn check_same_dtype(a: &Tensor, b: &Tensor, op: &'static str) -> Result<()> {
    if a.dtype() == b.dtype() {
        Ok(())
    } else {
        Err(Error::DTypeMismatch { op, lhs: a.dtype(), rhs: b.dtype() })
    }
}

/// Err unless `a` and `b` have the same shape.
pub(crate) fn check_same_shape(a: &Tensor, b: &Tensor, op: &'static str) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(Error::ShapeMismatch { op, lhs: a.shape().clone(), rhs: b.shape().clone() })
    }
}

/// `e^x` within about 2 ulp for `x` in `[-87, 88]`, 0 below (where the true value is < 2e-38),
/// NaN for NaN. No branches or calls, so loops over it vectorise; `f32::exp` is a libm call and
/// costs more than everything else in softmax-like loops.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // 1.5 * 2^23: adding it rounds to an integer held in the low mantissa bits.
    const MAGIC: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // `clamp` (unlike `max`/`min`) passes a NaN through to the result.
    let xc = x.clamp(-87.0, 88.0);
    let t = xc * LOG2E + MAGIC;
    let n = t - MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    p = p * r * r + r + 1.0;
    // The low 9 bits of `t`'s representation are `n` (two's complement), so this is 2^n.
    let pow2n = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
    if x < -87.0 {
        0.0
    } else {
        p * pow2n
    }
}

/// `sum(a[i] * b[i])` in eight f32 lanes, so the loop vectorises and rounding error grows slowly.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = 0.0;
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `x[i] = exp(x[i] − sub)` over a slice: a plain element loop, which LLVM's loop vectoriser
/// handles (an eight-lane unrolled body with a reduction is left scalar by the SLP vectoriser).
/// Uses 8-wide AVX2 when the CPU has it (the default target only assumes 4-wide SSE2).
#[inline]
pub(crate) fn exp_sub_inplace(x: &mut [f32], sub: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return unsafe { exp_sub_avx2(x, sub) };
    }
    exp_sub_scalar(x, sub)
}

#[inline(always)]
fn exp_sub_scalar(x: &mut [f32], sub: f32) {
    for v in x.iter_mut() {
        *v = exp_f32(*v - sub);
    }
}

/// The same loop compiled for AVX2 (no FMA: Rust never contracts `a·b + c`, so results are
/// bit-identical to the SSE2 build).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_sub_avx2(x: &mut [f32], sub: f32) {
    exp_sub_scalar(x, sub)
}

/// `out[i] = exp(x[i] − sub)` for `i < x.len()` (`out` at least as long, possibly uninitialised:
/// exactly its first `x.len()` elements are written), returning `Σ out` summed
/// in sixteen f32 lanes: one pass where a copy, [`exp_sub_inplace`] and [`lane_sum`] take three.
/// Each element is the same [`exp_f32`] on every path; the lanes let the loop vectorise (16-wide
/// with AVX-512F, 8-wide with AVX2).
#[inline]
pub(crate) fn exp_sub_sum_into(x: &[f32], sub: f32, out: &mut [MaybeUninit<f32>]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { exp_sub_sum_avx512(x, sub, out) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { exp_sub_sum_avx2(x, sub, out) };
        }
    }
    exp_sub_sum_scalar(x, sub, out)
}

#[inline(always)]
fn exp_sub_sum_scalar(x: &[f32], sub: f32, out: &mut [MaybeUninit<f32>]) -> f32 {
    let out = &mut out[..x.len()];
    let mut acc = [0.0f32; 16];
    let (xc, oc) = (x.chunks_exact(16), out.chunks_exact_mut(16));
    let (xr, mut rest) = (xc.remainder(), 0.0f32);
    for (xs, os) in xc.zip(oc) {
        for i in 0..16 {
            let e = exp_f32(xs[i] - sub);
            os[i].write(e);
            acc[i] += e;
        }
    }
    let tail = x.len() - xr.len();
    for (o, &v) in out[tail..].iter_mut().zip(xr) {
        let e = exp_f32(v - sub);
        o.write(e);
        rest += e;
    }
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] += acc[i + w];
        }
    }
    rest + acc[0]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_sub_sum_avx512(x: &[f32], sub: f32, out: &mut [MaybeUninit<f32>]) -> f32 {
    exp_sub_sum_scalar(x, sub, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn exp_sub_sum_avx2(x: &[f32], sub: f32, out: &mut [MaybeUninit<f32>]) -> f32 {
    exp_sub_sum_scalar(x, sub, out)
}

/// `Σ x` in eight f32 lanes.
#[inline]
pub(crate) fn lane_sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().sum();
    for ch in chunks {
        for i in 0..8 {
            acc[i] += ch[i];
        }
    }
    rest + ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `max x` in eight lanes (−inf for an empty slice; NaNs are skipped).
#[inline]
pub(crate) fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let mut m = f32::NEG_INFINITY;
    for &v in chunks.remainder() {
        m = if v > m { v } else { m };
    }
    for ch in chunks {
        for i in 0..8 {
            acc[i] = if ch[i] > acc[i] { ch[i] } else { acc[i] };
        }
    }
    acc.iter().fold(m, |a, &v| if v > a { v } else { a })
}

#[cfg(test)]
mod tests {
    use super::{exp_f32, exp_sub_sum_into};
    use crate::Rng;
    use std::mem::MaybeUninit;

    /// Every length around the 16-lane blocks: the elements are exactly `exp_f32(x − sub)` (on
    /// whichever SIMD path the CPU takes) and the sum matches an f64 sum to f32 accumulation error;
    /// `out` past `x.len()` is untouched; a NaN input gives a NaN element and sum.
    #[test]
    fn exp_sub_sum_into_is_exp_and_its_sum() {
        let mut rng = Rng::new(3);
        for n in (0..50).chain([255, 256, 257, 32000]) {
            let x: Vec<f32> = (0..n).map(|_| 4.0 * rng.normal()).collect();
            let sub = x.iter().cloned().fold(0.0f32, f32::max);
            let mut out = vec![MaybeUninit::new(-1.0f32); n + 3];
            let sum = exp_sub_sum_into(&x, sub, &mut out);
            // SAFETY: every element was initialised by `vec!` (and the first n overwritten).
            let out: Vec<f32> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
            for (i, &v) in x.iter().enumerate() {
                assert_eq!(out[i].to_bits(), exp_f32(v - sub).to_bits(), "n {n} element {i}");
            }
            assert_eq!(&out[n..], &[-1.0; 3], "n {n}: wrote past x.len()");
            let want: f64 = out[..n].iter().map(|&v| v as f64).sum();
            // Recursive summation's bound: each lane adds ~n/16 terms, then 4 pairwise levels and
            // the tail, each addition off by at most one rounding (u = 2^-24) of a partial sum ≤ Σ.
            let bound = (n / 16 + 5 + 16) as f64 * 2f64.powi(-24) * want;
            assert!((sum as f64 - want).abs() <= bound, "n {n}: sum {sum} vs {want} (bound {bound:e})");
        }
        let mut out = [MaybeUninit::new(0.0f32); 20];
        let x: Vec<f32> = (0..20).map(|i| if i == 17 { f32::NAN } else { 0.0 }).collect();
        assert!(exp_sub_sum_into(&x, 0.0, &mut out).is_nan());
        // SAFETY: initialised above.
        let (o17, o0) = unsafe { (out[17].assume_init(), out[0].assume_init()) };
        assert!(o17.is_nan() && o0 == 1.0);
    }

    #[test]
    fn exp_matches_std() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp_f32(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(f32::NAN).is_nan());
    }
}
