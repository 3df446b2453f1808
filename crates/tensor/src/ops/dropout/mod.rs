//! `dropout`: an inverted-dropout mask made on the device that will use it, so LoRA dropout needs
//! no host random numbers and no upload. Reference: PyTorch `nn.Dropout` (kept elements scaled
//! by `1/keep`); the random stream is SplitMix64, the generator of [`crate::Rng`].
//!
//! The rule, identical on every device (CPU here, `kernels/dropout.cu` on CUDA), with wrapping
//! u64 arithmetic and `GAMMA = 0x9E3779B97F4A7C15`:
//!
//! ```text
//! z = seed + (i + 1)·GAMMA                       // element i of the flat (row-major) mask
//! z = (z ^ (z >> 30))·0xBF58476D1CE4E5B9
//! z = (z ^ (z >> 27))·0x94D049BB133111EB
//! z =  z ^ (z >> 31)                              // SplitMix64 output i for this seed
//! kept(i) = (z >> 40) < ceil(keep · 2^24)         // i.e. u < keep for u = (z >> 40)·2^-24
//! mask[i] = kept(i) ? (1/keep computed in f32, rounded once to dtype) : 0
//! ```
//!
//! So the decision for element `i` is a pure function of `(seed, i)`, and `mask(n, keep, seed)`
//! equals drawing `Rng::new(seed).uniform() < keep` `n` times in order. Deliberately not here:
//! applying the mask (multiply by it) or a fused dropout-and-matmul; a mask is a fresh tensor.

pub mod cpu;
#[cfg(feature = "cuda")]
mod cuda;

use crate::{bf16, f16, DType, Device, Error, Result, Shape, Tensor};

const OP: &str = "dropout::mask";

/// Checks `keep` and returns the kernel's integer threshold `ceil(keep·2^24)` and the kept
/// value `1/keep` (f32). Errors for `keep` outside `(0, 1]` (NaN included) and for a `1/keep`
/// that is not finite in `dtype` (a keep probability below about 1.5e-5 in f16).
pub fn params(keep: f32, dtype: DType) -> Result<(u32, f32)> {
    if !(keep > 0.0 && keep <= 1.0) {
        return Err(Error::invalid(OP, format!("keep probability {keep} is not in (0, 1]")));
    }
    let value = 1.0 / keep;
    let finite = match dtype {
        DType::F32 => value.is_finite(),
        DType::BF16 => bf16::from_f32(value).is_finite(),
        DType::F16 => f16::from_f32(value).is_finite(),
        _ => return Err(Error::UnsupportedDType { op: OP, dtype }),
    };
    if !finite {
        return Err(Error::invalid(OP, format!("keep probability {keep}: 1/keep overflows {dtype:?}")));
    }
    Ok((cpu::threshold(keep), value))
}

/// An inverted-dropout mask of `shape` on `device`: `1/keep` (rounded once to `dtype`) where
/// element `i` (row-major) is kept, 0 where it is dropped, by the rule in the module docs.
/// `keep` in `(0, 1]` (1 gives all ones); dtypes f32, bf16, f16. The same arguments give the
/// same bits on the CPU and on CUDA.
pub fn mask(shape: impl Into<Shape>, keep: f32, seed: u64, dtype: DType, device: Device) -> Result<Tensor> {
    let shape = shape.into();
    let n = shape.try_elem_count(OP)?;
    let (threshold, value) = params(keep, dtype)?;
    match device {
        Device::Cpu => {
            fn fill<T: Copy + Default + Send + Sync>(n: usize, seed: u64, t: u32, one: T) -> Vec<T> {
                let mut v = vec![T::default(); n];
                cpu::mask_into(&mut v, 0, seed, t, one, T::default());
                v
            }
            match dtype {
                DType::F32 => Tensor::from_vec(fill(n, seed, threshold, value), shape),
                DType::BF16 => Tensor::from_vec(fill(n, seed, threshold, bf16::from_f32(value)), shape),
                DType::F16 => Tensor::from_vec(fill(n, seed, threshold, f16::from_f32(value)), shape),
                _ => Err(Error::UnsupportedDType { op: OP, dtype }),
            }
        }
        #[cfg(feature = "cuda")]
        Device::Cuda(_) => cuda::mask(shape, n, (threshold, value), seed, dtype, device, OP),
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => {
            Err(Error::Device(format!("{OP}: {device:?} needs the tensor crate built with feature `cuda`")))
        }
    }
}
