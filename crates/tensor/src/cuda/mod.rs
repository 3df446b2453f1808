//! The CUDA backend's primitives (feature `cuda`): driver detection that never panics, a
//! [`CudaDevice`] per ordinal (context + one stream + the loaded PTX modules), device buffers
//! with host copies, a generic launch of a kernel with its `#[repr(C)]` parameter struct
//! ([`params`]), and `run_*` entry points ([`run`]) that take host slices, launch one kernel and
//! return host vectors, so tests compare every kernel with its CPU `*_ref`.
//!
//! Not here yet: the `Storage::Cuda` variant and the ops' device dispatch (they come when the ops
//! settle), cuBLAS matmul (the benches call cudarc's cuBLAS directly), streams beyond one per
//! device. Kernels are compiled ahead of time to PTX (`scripts/build-ptx.sh`) and embedded, so
//! building this crate needs no CUDA toolkit, and a machine without a driver gets
//! `Error::Device`, never a panic.

pub mod bench;
mod device;
pub mod params;
pub mod ptx;
pub mod run;

pub use device::{CudaDevice, DeviceBuffer, Launch};

use crate::{Device, Error, Result};
use std::sync::Arc;

/// True when the CUDA driver library (`libcuda.so.1`) can be loaded. Never panics: cudarc panics
/// on the first driver call when the library is missing, so every entry point asks this first.
pub fn driver_present() -> bool {
    // SAFETY: only tries `dlopen` on the candidate library names and drops the handle.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Number of CUDA devices, or `Error::Device` when there is no driver or it fails to start.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(no_driver());
    }
    let n =
        cudarc::driver::CudaContext::device_count().map_err(|e| Error::Device(format!("cuda: device count: {e}")))?;
    Ok(n.max(0) as usize)
}

/// The [`CudaDevice`] for `device` (`Device::Cuda(n)`), created on first use and shared after.
/// A CPU device, a missing driver or a missing ordinal is `Error::Device`.
pub fn select(device: Device) -> Result<Arc<CudaDevice>> {
    match device {
        Device::Cuda(ordinal) => CudaDevice::get(ordinal),
        Device::Cpu => Err(Error::Device("cuda::select: the CPU is not a CUDA device".into())),
    }
}

pub(crate) fn no_driver() -> Error {
    Error::Device(
        "cuda: no CUDA driver (libcuda.so.1 not found); build and run on a machine with an NVIDIA driver".into(),
    )
}
