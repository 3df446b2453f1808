//! The CUDA backend (feature `cuda`): driver detection that never panics, a [`CudaDevice`] per
//! ordinal (context + one stream + the loaded PTX modules + a cuBLAS handle), [`CudaStorage`] (a
//! tensor's elements in one typed device buffer: `Storage::Cuda`), one launch function per kernel
//! (`launch`, shared by both users below), the ops' device dispatch on resident buffers
//! (`ops/<op>/cuda.rs`, helpers in `resident`), NF4 dequantization and the fused NF4 linear on
//! resident codes ([`nf4_ops`], used by crates/nf4), and `run_*` entry points ([`run`]) that take
//! host slices, launch one kernel and return host vectors, so tests compare every kernel with its
//! CPU `*_ref`.
//!
//! What runs on CUDA (docs/ops.md, "Devices"): `to_device`, `contiguous` and `cat` (a strided copy
//! kernel), binary ops with broadcasting, `sum_to`, unary maps, casts between every dtype, the
//! reductions, softmax, rmsnorm, rope, swiglu and attention forward and backward, `index_select`,
//! embedding and its backward, cross-entropy (`fwd`, `bwd`, `fwd_grad`), dropout masks made on the
//! device (`ops::dropout::mask`, the same bits as the CPU), and `matmul` / `addmm`
//! through cuBLAS (f32, bf16 and f16 with f32 accumulation). Fused kernels exist in f32 and bf16;
//! f16 inputs are widened to f32 on the device and the result narrowed once, as the CPU computes.
//! An op given operands on two devices is `Error::Device` naming both.
//!
//! With the `cuda-emu` feature and `QLORA_CUDA_EMULATOR=1`, `cuda:0` is the emulator ([`emu`]):
//! the same kernels' source compiled for the CPU behind the same device API, so every path above
//! runs (and is tested) on machines without a GPU.
//!
//! Not here: streams beyond one per device, a caching allocator of our own (outputs are fresh
//! stream-ordered allocations, zeroed; the driver's pool reuses the memory), peer-to-peer copies. Ids and targets are range-checked on the host, so
//! `index_select`, `embedding`, `embedding_bwd` and cross-entropy download their (small) i32 ids
//! once per call. Kernels are compiled ahead of time to PTX (`scripts/build-ptx.sh`) and embedded,
//! so building this crate needs no CUDA toolkit, and a machine without a driver gets
//! `Error::Device`, never a panic.

pub mod bench;
mod device;
#[cfg(feature = "cuda-emu")]
pub mod emu;
pub(crate) mod launch;
pub mod nf4_ops;
pub mod optim_ops;
pub mod params;
pub mod ptx;
pub(crate) mod resident;
pub mod run;
mod storage;

pub use device::{CudaDevice, DeviceBuffer, Launch, MemoryStats};
pub use storage::{CudaData, CudaStorage};

use crate::{Device, Error, Result};
use std::sync::Arc;

/// True when the CUDA driver library (`libcuda.so.1`) can be loaded, or the emulator is
/// selected (feature `cuda-emu` and `QLORA_CUDA_EMULATOR=1`: [`emu`]). Never panics: cudarc
/// panics on the first driver call when the library is missing, so every entry point asks this
/// first.
pub fn driver_present() -> bool {
    if emulated() {
        return true;
    }
    // SAFETY: only tries `dlopen` on the candidate library names and drops the handle.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// True when `cuda:0` is the emulator (feature `cuda-emu` and `QLORA_CUDA_EMULATOR=1`).
pub fn emulated() -> bool {
    #[cfg(feature = "cuda-emu")]
    return emu::selected();
    #[cfg(not(feature = "cuda-emu"))]
    false
}

/// Number of CUDA devices (1 on the emulator), or `Error::Device` when there is no driver or it
/// fails to start.
pub fn device_count() -> Result<usize> {
    if emulated() {
        return Ok(1);
    }
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
