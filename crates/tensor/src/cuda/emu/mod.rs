//! The CUDA emulator (feature `cuda-emu`): a [`CudaDevice`](super::CudaDevice) whose kernels are
//! the very `kernels/*.cu` sources compiled for the CPU (build.rs, `kernels/emu/cuda_emu.h`), run
//! one fiber per CUDA thread ([`runtime`]), on device buffers that are host allocations, with
//! cuBLAS replaced by a plain strided-batched GEMM. Everything above the kernel launch (the launch
//! shapes, the parameter structs, the resident ops, the NF4 device path, the optimizers, the
//! trainer's CUDA route) is the code a GPU runs, so a machine without one checks all of it but the
//! hardware. Selected by `QLORA_CUDA_EMULATOR=1` in a build with the feature: `cuda:0` is then the
//! emulator (see [`selected`]).
//!
//! Checks a GPU would not make: every launch's parameter struct must have the size the C++ side
//! declares (the `static_assert`s compare with the Rust mirror only through this), the kernel must
//! live in the `.cu` file the launch names, and every buffer carries guard bytes on both sides,
//! verified after each launch for the buffers its parameter struct points into, so a kernel
//! writing out of bounds is an error naming the kernel instead of silent corruption.
//!
//! Not emulated: timing (the kernel benchmarks need a GPU), managed memory (paged-alloc's CUDA
//! backend), streams other than the one in-order queue (launches complete before they return).

mod blas;
mod runtime;

pub(crate) use blas::{gemm, GemmOperand};

use crate::{Error, Result};
use std::alloc::Layout;
use std::collections::BTreeMap;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The environment variable that makes `cuda:0` the emulator.
pub const ENV: &str = "QLORA_CUDA_EMULATOR";

/// True when `QLORA_CUDA_EMULATOR` is set to anything but empty or `0`.
pub fn selected() -> bool {
    std::env::var_os(ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// The fiber order `QLORA_CUDA_EMULATOR` asks for: `lowest` or `highest` (each warp runs as far
/// as it can before the next moves, from the first or the last thread), anything else round
/// robin in thread order. Running the tests under all three finds kernels whose result depends
/// on the order: a missing `__syncthreads` ([`runtime`] docs).
fn order() -> runtime::Order {
    static ORDER: std::sync::OnceLock<runtime::Order> = std::sync::OnceLock::new();
    *ORDER.get_or_init(|| match std::env::var(ENV).as_deref() {
        Ok("lowest") => runtime::Order::Lowest,
        Ok("highest") => runtime::Order::Highest,
        _ => runtime::Order::RoundRobin,
    })
}

/// One kernel of the generated table.
pub(super) struct EmuKernel {
    stem: &'static str,
    name: &'static str,
    call: runtime::KernelFn,
    size: unsafe extern "C" fn() -> u64,
}

include!(concat!(env!("OUT_DIR"), "/emu_kernels.rs"));

/// Runs kernel `name` of `kernels/<stem>.cu` over `grid` x `block` with `params` (a `#[repr(C)]`
/// struct of `size` bytes), then verifies every buffer's guard bytes.
///
/// # Safety
/// `params` points at `size` bytes: the kernel's parameter struct, whose addresses are live
/// emulated buffers holding what the kernel reads and writes with this grid.
pub(super) unsafe fn launch(
    stem: &str,
    name: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    params: *const c_void,
    size: usize,
) -> Result<()> {
    let k = KERNELS
        .iter()
        .find(|k| k.name == name)
        .ok_or_else(|| Error::Device(format!("cuda emulator: no kernel {name} in kernels/*.cu")))?;
    if k.stem != stem {
        return Err(Error::Device(format!(
            "cuda emulator: kernel {name} is in {}.cu, launched from {stem}.cu",
            k.stem
        )));
    }
    // SAFETY: returns a constant.
    let want = unsafe { (k.size)() } as usize;
    if want != size {
        return Err(Error::Device(format!(
            "cuda emulator: {name} takes a {want}-byte parameter struct, the launch passed {size} bytes \
             (params.rs does not mirror kernels/{stem}.cu)"
        )));
    }
    // The 8-byte words of the struct: its addresses are among them (8-byte fields come first).
    // SAFETY: the caller's contract: `size` readable bytes.
    let words: Vec<u64> =
        (0..size / 8).map(|i| unsafe { std::ptr::read_unaligned((params as *const u64).add(i)) }).collect();
    // SAFETY: the caller's contract.
    unsafe { runtime::launch(k.call, params, grid.into(), block.into(), order()) }
        .map_err(|e| Error::Device(format!("cuda emulator: {name}: {e}")))?;
    check_guards(&words).map_err(|e| Error::Device(format!("cuda emulator: after {name}: {e}")))
}

/// Guard bytes on each side of a buffer, and the value they hold.
const GUARD: usize = 256;
const GUARD_BYTE: u8 = 0xA5;

/// Live buffers by address: `(bytes, element type name)`, for the guard check.
static LIVE: Mutex<BTreeMap<usize, (usize, &'static str)>> = Mutex::new(BTreeMap::new());
static USED: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

/// Verifies the guard bytes of every live buffer that one of `words` points into (or one past):
/// the buffers a launch was given. Only those, so a launch never reports another thread's buffer.
fn check_guards(words: &[u64]) -> std::result::Result<(), String> {
    let live = LIVE.lock().map_err(|_| "buffer table poisoned".to_string())?;
    for &w in words {
        let Some((&addr, &(bytes, ty))) = live.range(..=w as usize).next_back() else { continue };
        if w as usize > addr + bytes {
            continue;
        }
        // SAFETY: every entry is a live allocation of GUARD + bytes + GUARD around `addr`; entries
        // are removed (under this lock) before their memory is freed.
        let (before, after) = unsafe {
            (
                std::slice::from_raw_parts((addr - GUARD) as *const u8, GUARD),
                std::slice::from_raw_parts((addr + bytes) as *const u8, GUARD),
            )
        };
        if let Some(i) = after.iter().rposition(|&b| b != GUARD_BYTE) {
            return Err(format!("a kernel wrote up to {} bytes past the end of a {bytes}-byte buffer of {ty}", i + 1));
        }
        if let Some(i) = before.iter().position(|&b| b != GUARD_BYTE) {
            return Err(format!(
                "a kernel wrote up to {} bytes before the start of a {bytes}-byte buffer of {ty}",
                GUARD - i
            ));
        }
    }
    Ok(())
}

/// Bytes of live emulated buffers now and at the peak since the last reset.
pub(super) fn memory() -> (u64, u64) {
    (USED.load(Ordering::Relaxed), PEAK.load(Ordering::Relaxed))
}
pub(super) fn reset_peak() {
    PEAK.store(USED.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// A buffer of `len` elements of `T` in host memory, 256-byte aligned like `cudaMalloc`, zeroed,
/// with guard bytes on both sides.
pub struct EmuBuffer<T> {
    ptr: NonNull<u8>,
    len: usize,
    _t: PhantomData<T>,
}

// SAFETY: the buffer owns its memory; device semantics (no references handed out, copies through
// the device) make sharing it between threads as safe as a CudaSlice.
unsafe impl<T: Send> Send for EmuBuffer<T> {}
unsafe impl<T: Sync> Sync for EmuBuffer<T> {}

impl<T: Copy> EmuBuffer<T> {
    fn layout(len: usize) -> Result<Layout> {
        let bytes = len.checked_mul(size_of::<T>()).and_then(|b| b.checked_add(2 * GUARD));
        bytes
            .and_then(|b| Layout::from_size_align(b, GUARD).ok())
            .ok_or_else(|| Error::Device(format!("cuda emulator: cannot allocate {len} elements")))
    }

    /// `len` zeroed elements (at least one).
    pub(super) fn zeros(len: usize) -> Result<Self> {
        let len = len.max(1);
        let layout = Self::layout(len)?;
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let raw = NonNull::new(raw)
            .ok_or_else(|| Error::Device(format!("cuda emulator: out of memory allocating {} bytes", layout.size())))?;
        let bytes = len * size_of::<T>();
        // SAFETY: both guards lie inside the allocation.
        unsafe {
            std::ptr::write_bytes(raw.as_ptr(), GUARD_BYTE, GUARD);
            std::ptr::write_bytes(raw.as_ptr().add(GUARD + bytes), GUARD_BYTE, GUARD);
        }
        // SAFETY: GUARD < size.
        let ptr = unsafe { NonNull::new_unchecked(raw.as_ptr().add(GUARD)) };
        LIVE.lock()
            .map_err(|_| Error::Device("cuda emulator: buffer table poisoned".into()))?
            .insert(ptr.as_ptr() as usize, (bytes, std::any::type_name::<T>()));
        let used = USED.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        PEAK.fetch_max(used, Ordering::Relaxed);
        Ok(Self { ptr, len, _t: PhantomData })
    }

    /// A buffer holding `data` (an empty slice gets one zero element).
    pub(super) fn upload(data: &[T]) -> Result<Self> {
        let b = Self::zeros(data.len())?;
        // SAFETY: the buffer holds at least data.len() elements; the regions do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), b.ptr.as_ptr().cast::<T>(), data.len()) };
        Ok(b)
    }

    /// Elements `range` (checked).
    pub(super) fn read(&self, range: Range<usize>) -> Result<Vec<T>> {
        if range.start > range.end || range.end > self.len {
            return Err(Error::Device(format!("cuda emulator: read {range:?} of {} elements", self.len)));
        }
        // SAFETY: the range lies inside the buffer; elements are plain data (Copy).
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().cast::<T>().add(range.start), range.len()) }.to_vec())
    }

    /// Copies `src[range]` to the start of `self` (checked).
    pub(super) fn copy_from(&mut self, src: &Self, range: Range<usize>) -> Result<()> {
        if range.start > range.end || range.end > src.len || range.len() > self.len {
            return Err(Error::Device(format!("cuda emulator: copy {range:?} of {} into {}", src.len, self.len)));
        }
        // SAFETY: both regions lie inside their buffers; `ptr::copy` allows overlap.
        unsafe {
            std::ptr::copy(src.ptr.as_ptr().cast::<T>().add(range.start), self.ptr.as_ptr().cast::<T>(), range.len())
        };
        Ok(())
    }
}

impl<T> EmuBuffer<T> {
    /// The address kernels use.
    pub(super) fn addr(&self) -> u64 {
        self.ptr.as_ptr() as u64
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true: a buffer holds at least one element.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl<T> Drop for EmuBuffer<T> {
    fn drop(&mut self) {
        let bytes = self.len * size_of::<T>();
        if let Ok(mut live) = LIVE.lock() {
            live.remove(&(self.ptr.as_ptr() as usize));
        }
        USED.fetch_sub(bytes as u64, Ordering::Relaxed);
        if let Ok(layout) = Layout::from_size_align(bytes + 2 * GUARD, GUARD) {
            // SAFETY: allocated in `zeros` with this layout, GUARD bytes before `ptr`.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr().sub(GUARD), layout) };
        }
    }
}
