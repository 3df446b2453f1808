//! One-kernel entry points on host data: upload, launch, download. The CUDA tests
//! (`tests/cuda_kernels.rs`) compare each with the CPU `*_ref` (the benches in `bench.rs` launch on
//! resident buffers instead).
//! They allocate and copy on every call, which is what a test wants and an op must not do: the
//! ops' CUDA paths (`ops/<op>/cuda.rs`, on `Storage::Cuda`) call the same launches from
//! [`launch`](super::launch) on resident buffers. Shapes follow the CPU functions of the same op
//! (docs/ops.md); callers check them.

use super::device::{CudaDevice, DeviceBuffer};
use crate::{bf16, f16, Result};
use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

mod elementwise;
pub use elementwise::*;
mod fused;
pub use fused::*;
mod optim;
pub use optim::*;
mod nf4;
pub use nf4::*;

/// A float storage type a kernel comes in: its name suffix and its device representation
/// (bf16 and f16 travel as their `u16` bits).
pub trait KernelFloat: Copy + Default + Send + Sync + 'static {
    /// `f32`, `bf16` or `f16`: the kernel name suffix.
    const SUFFIX: &'static str;
    /// The type uploaded to the device.
    type Dev: DeviceRepr + ValidAsZeroBits + Clone + Copy + Default + Unpin;
    fn to_dev(s: &[Self]) -> Vec<Self::Dev>;
    fn from_dev(v: Vec<Self::Dev>) -> Vec<Self>;
}

impl KernelFloat for f32 {
    const SUFFIX: &'static str = "f32";
    type Dev = f32;
    fn to_dev(s: &[Self]) -> Vec<f32> {
        s.to_vec()
    }
    fn from_dev(v: Vec<f32>) -> Vec<Self> {
        v
    }
}
impl KernelFloat for bf16 {
    const SUFFIX: &'static str = "bf16";
    type Dev = u16;
    fn to_dev(s: &[Self]) -> Vec<u16> {
        s.iter().map(|v| v.to_bits()).collect()
    }
    fn from_dev(v: Vec<u16>) -> Vec<Self> {
        v.into_iter().map(bf16::from_bits).collect()
    }
}
impl KernelFloat for f16 {
    const SUFFIX: &'static str = "f16";
    type Dev = u16;
    fn to_dev(s: &[Self]) -> Vec<u16> {
        s.iter().map(|v| v.to_bits()).collect()
    }
    fn from_dev(v: Vec<u16>) -> Vec<Self> {
        v.into_iter().map(f16::from_bits).collect()
    }
}

fn up<E: KernelFloat>(dev: &CudaDevice, x: &[E]) -> Result<DeviceBuffer<E::Dev>> {
    dev.upload(&E::to_dev(x))
}
fn down<E: KernelFloat>(dev: &CudaDevice, b: &DeviceBuffer<E::Dev>, len: usize) -> Result<Vec<E>> {
    let mut v = dev.download(b)?;
    v.truncate(len);
    Ok(E::from_dev(v))
}
fn down_raw<T: DeviceRepr + Clone + Default + Copy>(
    dev: &CudaDevice,
    b: &DeviceBuffer<T>,
    len: usize,
) -> Result<Vec<T>> {
    let mut v = dev.download(b)?;
    v.truncate(len);
    Ok(v)
}
fn k(op: &str, e: &str) -> String {
    format!("{op}_{e}")
}
use super::launch::i32_of;
