//! One CUDA device: its context, one stream that every launch, copy and cuBLAS call goes through
//! (so no cross-stream synchronisation is needed), the PTX modules loaded on first use, and the
//! cuBLAS handle created on the first matmul. With the `cuda-emu` feature a device can instead be
//! the emulator ([`super::emu`]): the same calls, on host memory, with the kernels compiled for
//! the CPU.

use super::ptx;
use crate::{Error, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};

fn derr(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("cuda: {what}: {e}"))
}

/// A device buffer of `len` elements of `T`: driver memory, or host memory on the emulator.
pub enum DeviceBuffer<T> {
    Driver(CudaSlice<T>),
    #[cfg(feature = "cuda-emu")]
    Emulated(super::emu::EmuBuffer<T>),
}

impl<T> DeviceBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Self::Driver(b) => b.len(),
            #[cfg(feature = "cuda-emu")]
            Self::Emulated(b) => b.len(),
        }
    }
    /// True when the buffer holds no elements (never: buffers hold at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a [`CudaDevice`] runs on.
enum Backend {
    Driver(Driver),
    #[cfg(feature = "cuda-emu")]
    Emulated,
}

/// A real device through the driver.
struct Driver {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// The cuBLAS handle on `stream`, created on the first matmul.
    blas: Mutex<Option<Arc<CudaBlas>>>,
}

#[cfg(feature = "cuda-emu")]
fn mismatched() -> Error {
    Error::Device("cuda: a buffer of one backend passed to a device of the other (driver vs emulator)".into())
}

/// Grid, block and dynamic shared memory of one launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Launch {
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    pub shared_bytes: u32,
}

impl Launch {
    /// A 1-D launch of `blocks` blocks of `threads` threads.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        Self { grid: (blocks.max(1), 1, 1), block: (threads, 1, 1), shared_bytes: 0 }
    }
    /// A grid-stride elementwise launch over `n` elements: 256 threads, at most 65535 blocks.
    pub fn elementwise(n: usize) -> Self {
        let blocks = n.div_ceil(256).clamp(1, 65_535) as u32;
        Self::linear(blocks, 256)
    }
    /// One block of `threads` per row, for `rows` rows (grid-stride beyond 65535).
    pub fn rows(rows: usize, threads: u32) -> Self {
        Self::linear(rows.clamp(1, 65_535) as u32, threads)
    }
}

/// A CUDA device with its context, stream and loaded modules.
pub struct CudaDevice {
    ordinal: usize,
    major: i32,
    minor: i32,
    name: String,
    backend: Backend,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice({}: {}, sm_{}{})", self.ordinal, self.name, self.major, self.minor)
    }
}

/// Device memory figures in bytes (see [`CudaDevice::memory`]); the pool figures are 0 where the
/// device has no stream-ordered allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes of live device buffers now.
    pub used: u64,
    /// The most bytes of live device buffers at once since the device was created or the peak reset.
    pub used_peak: u64,
    /// The most bytes the allocator's pool held at once (live buffers and cached free blocks).
    pub reserved_peak: u64,
    /// Bytes in use on the whole device now (`total - free` from the driver).
    pub device_used: u64,
    /// The device's memory.
    pub device_total: u64,
}

type PoolAttr = cudarc::driver::sys::CUmemPool_attribute;

/// The memory pool `cuMemAllocAsync` draws from on `ctx`'s device.
fn mem_pool(ctx: &CudaContext) -> Result<cudarc::driver::sys::CUmemoryPool> {
    ctx.bind_to_thread().map_err(|e| derr("bind context", e))?;
    let mut pool = std::ptr::null_mut();
    // SAFETY: writes one pool handle; the device handle comes from a live context.
    unsafe { cudarc::driver::sys::cuDeviceGetMemPool(&mut pool, ctx.cu_device()) }
        .result()
        .map_err(|e| derr("memory pool", e))?;
    Ok(pool)
}

fn get_pool_attr(pool: cudarc::driver::sys::CUmemoryPool, attr: PoolAttr) -> Result<u64> {
    let mut v: u64 = 0;
    // SAFETY: the size and high-water attributes are 64-bit values (cuuint64_t).
    unsafe { cudarc::driver::sys::cuMemPoolGetAttribute(pool, attr, (&mut v as *mut u64).cast()) }
        .result()
        .map_err(|e| derr("memory pool attribute", e))?;
    Ok(v)
}

fn set_pool_attr(pool: cudarc::driver::sys::CUmemoryPool, attr: PoolAttr, mut v: u64) -> Result<()> {
    // SAFETY: the release threshold and the resettable high-water marks are 64-bit values.
    unsafe { cudarc::driver::sys::cuMemPoolSetAttribute(pool, attr, (&mut v as *mut u64).cast()) }
        .result()
        .map_err(|e| derr("memory pool attribute", e))
}

static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();

impl CudaDevice {
    /// The shared device for `ordinal`, created on first use.
    pub fn get(ordinal: usize) -> Result<Arc<Self>> {
        let map = DEVICES.get_or_init(|| Mutex::new(HashMap::new()));
        let mut map = map.lock().map_err(|_| Error::Device("cuda: device table poisoned".into()))?;
        if let Some(d) = map.get(&ordinal) {
            return Ok(d.clone());
        }
        let d = Arc::new(Self::new(ordinal)?);
        map.insert(ordinal, d.clone());
        Ok(d)
    }

    /// A fresh context on `ordinal` (prefer [`CudaDevice::get`], which shares one per ordinal);
    /// the emulator when it is selected ([`super::emu::selected`]).
    pub fn new(ordinal: usize) -> Result<Self> {
        #[cfg(feature = "cuda-emu")]
        if super::emu::selected() {
            if ordinal != 0 {
                return Err(Error::Device(format!("cuda: device {ordinal} requested, the emulator is device 0")));
            }
            return Ok(Self::emulator());
        }
        let count = super::device_count()?;
        if ordinal >= count {
            return Err(Error::Device(format!("cuda: device {ordinal} requested, {count} present")));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| derr("create context", e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| derr("compute capability", e))?;
        let name = ctx.name().map_err(|e| derr("device name", e))?;
        let stream = ctx.default_stream();
        if ctx.has_async_alloc() {
            // Keep freed memory in the stream-ordered pool instead of handing it back to the
            // driver at every synchronisation (the default threshold is 0): a training step frees
            // and reallocates the same activation sizes every step, as PyTorch's caching
            // allocator assumes. Best effort: a failure only costs speed.
            let _ = mem_pool(&ctx)
                .and_then(|pool| set_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, u64::MAX));
        }
        let driver = Driver { ctx, stream, modules: Mutex::new(HashMap::new()), blas: Mutex::new(None) };
        Ok(Self { ordinal, major, minor, name, backend: Backend::Driver(driver) })
    }

    /// The emulator as device 0: the kernels run on the CPU (an sm_90 device by its PTX choice).
    #[cfg(feature = "cuda-emu")]
    pub fn emulator() -> Self {
        Self {
            ordinal: 0,
            major: 9,
            minor: 0,
            name: "CUDA emulator (kernels on the CPU)".into(),
            backend: Backend::Emulated,
        }
    }

    /// True when this device is the emulator.
    pub fn is_emulated(&self) -> bool {
        !matches!(self.backend, Backend::Driver(_))
    }

    fn driver(&self, what: &str) -> Result<&Driver> {
        let _ = what;
        match &self.backend {
            Backend::Driver(d) => Ok(d),
            #[cfg(feature = "cuda-emu")]
            Backend::Emulated => Err(Error::Device(format!("cuda: {what} needs a real GPU (this is the emulator)"))),
        }
    }

    /// The ordinal.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        (self.major, self.minor)
    }
    /// The cudarc context (for cuBLAS and other libraries); the emulator has none.
    pub fn context(&self) -> Result<&Arc<CudaContext>> {
        Ok(&self.driver("a CUDA context")?.ctx)
    }
    /// The stream every launch and copy of this device goes through; the emulator has none
    /// (its launches and copies complete before they return).
    pub fn stream(&self) -> Result<&Arc<CudaStream>> {
        Ok(&self.driver("a CUDA stream")?.stream)
    }

    /// The cuBLAS handle bound to this device's stream, created on first use. A missing
    /// `libcublas` is `Error::Device` (cudarc would panic on the first call instead).
    pub fn blas(&self) -> Result<Arc<CudaBlas>> {
        let d = self.driver("cuBLAS")?;
        let mut slot = d.blas.lock().map_err(|_| Error::Device("cuda: cuBLAS handle poisoned".into()))?;
        if let Some(b) = slot.as_ref() {
            return Ok(b.clone());
        }
        // SAFETY: only tries `dlopen` on the candidate library names.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Device("cuda: libcublas not found (matmul on CUDA needs cuBLAS)".into()));
        }
        let b = Arc::new(CudaBlas::new(d.stream.clone()).map_err(|e| derr("create cuBLAS handle", e))?);
        *slot = Some(b.clone());
        Ok(b)
    }

    /// Device memory now and at its peak (waits for the stream first, so the figures include
    /// everything queued). With the stream-ordered allocator the peak is the pool's high-water mark
    /// of memory handed to tensors (`used_peak`, what PyTorch calls max allocated) and of memory
    /// the pool held (`reserved_peak`, max reserved); `device_used` is the whole device's use as
    /// the driver reports it (other processes, cuBLAS workspaces and modules included).
    /// On the emulator: its live buffers now and at the peak (every emulated device shares them).
    pub fn memory(&self) -> Result<MemoryStats> {
        self.synchronize()?;
        #[cfg(feature = "cuda-emu")]
        if self.is_emulated() {
            let (used, peak) = super::emu::memory();
            return Ok(MemoryStats { used, used_peak: peak, reserved_peak: peak, device_used: used, device_total: 0 });
        }
        let d = self.driver("memory figures")?;
        let (free, total) = d.ctx.mem_get_info().map_err(|e| derr("memory info", e))?;
        let mut m = MemoryStats {
            device_used: total.saturating_sub(free) as u64,
            device_total: total as u64,
            ..Default::default()
        };
        if d.ctx.has_async_alloc() {
            let pool = mem_pool(&d.ctx)?;
            m.used = get_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
            m.used_peak = get_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?;
            m.reserved_peak = get_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?;
        }
        Ok(m)
    }

    /// Starts the peak figures of [`memory`](Self::memory) again from what is in use now.
    pub fn reset_peak_memory(&self) -> Result<()> {
        self.synchronize()?;
        #[cfg(feature = "cuda-emu")]
        if self.is_emulated() {
            super::emu::reset_peak();
            return Ok(());
        }
        let d = self.driver("memory figures")?;
        if d.ctx.has_async_alloc() {
            let pool = mem_pool(&d.ctx)?;
            set_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_HIGH, 0)?;
            set_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, 0)?;
        }
        Ok(())
    }

    /// Waits for all work on the stream (nothing to wait for on the emulator).
    pub fn synchronize(&self) -> Result<()> {
        match &self.backend {
            Backend::Driver(d) => d.stream.synchronize().map_err(|e| derr("synchronize", e)),
            #[cfg(feature = "cuda-emu")]
            Backend::Emulated => Ok(()),
        }
    }

    /// Copies `data` to a new device buffer (an empty slice gets a one-element zero buffer, so
    /// its address is valid).
    pub fn upload<T: DeviceRepr + ValidAsZeroBits + Copy>(&self, data: &[T]) -> Result<DeviceBuffer<T>> {
        if data.is_empty() {
            return self.zeros(1);
        }
        match &self.backend {
            Backend::Driver(d) => {
                d.stream.clone_htod(data).map(DeviceBuffer::Driver).map_err(|e| derr("host to device copy", e))
            }
            #[cfg(feature = "cuda-emu")]
            Backend::Emulated => super::emu::EmuBuffer::upload(data).map(DeviceBuffer::Emulated),
        }
    }

    /// A zeroed device buffer of `len` elements (at least one, so its pointer is valid).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits + Copy>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        match &self.backend {
            Backend::Driver(d) => {
                d.stream.alloc_zeros(len.max(1)).map(DeviceBuffer::Driver).map_err(|e| derr("alloc", e))
            }
            #[cfg(feature = "cuda-emu")]
            Backend::Emulated => super::emu::EmuBuffer::zeros(len).map(DeviceBuffer::Emulated),
        }
    }

    /// Copies a device buffer back to the host (waits for the stream).
    pub fn download<T: DeviceRepr + Clone + Default + Copy>(&self, buf: &DeviceBuffer<T>) -> Result<Vec<T>> {
        self.download_range(buf, 0..buf.len())
    }

    /// Copies elements `range` of a device buffer back to the host (waits for the stream).
    pub fn download_range<T: DeviceRepr + Clone + Default + Copy>(
        &self,
        buf: &DeviceBuffer<T>,
        range: Range<usize>,
    ) -> Result<Vec<T>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        match (&self.backend, buf) {
            (Backend::Driver(d), DeviceBuffer::Driver(b)) => {
                let view = b.try_slice(range.clone()).ok_or_else(|| derr("download", "range out of bounds"))?;
                d.stream.clone_dtoh(&view).map_err(|e| derr("device to host copy", e))
            }
            #[cfg(feature = "cuda-emu")]
            (Backend::Emulated, DeviceBuffer::Emulated(b)) => b.read(range),
            #[cfg(feature = "cuda-emu")]
            _ => Err(mismatched()),
        }
    }

    /// Copies `src[range]` to the start of `dst` on the device.
    pub fn copy_range<T: DeviceRepr + Copy>(
        &self,
        src: &DeviceBuffer<T>,
        range: Range<usize>,
        dst: &mut DeviceBuffer<T>,
    ) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        match (&self.backend, src, dst) {
            (Backend::Driver(d), DeviceBuffer::Driver(s), DeviceBuffer::Driver(t)) => {
                let view = s.try_slice(range.clone()).ok_or_else(|| derr("copy", "range out of bounds"))?;
                let mut out = t.try_slice_mut(0..range.len()).ok_or_else(|| derr("copy", "destination too short"))?;
                d.stream.memcpy_dtod(&view, &mut out).map_err(|e| derr("device to device copy", e))
            }
            #[cfg(feature = "cuda-emu")]
            (Backend::Emulated, DeviceBuffer::Emulated(s), DeviceBuffer::Emulated(t)) => t.copy_from(s, range),
            #[cfg(feature = "cuda-emu")]
            _ => Err(mismatched()),
        }
    }

    /// The raw device address of `buf`, for a parameter struct. The buffer must outlive every
    /// launch that uses the address; all work is on this device's one stream, so ordering holds.
    pub fn ptr<T>(&self, buf: &DeviceBuffer<T>) -> u64 {
        match (buf, &self.backend) {
            (DeviceBuffer::Driver(b), Backend::Driver(d)) => {
                let (p, _sync) = b.device_ptr(&d.stream);
                p
            }
            #[cfg(feature = "cuda-emu")]
            (DeviceBuffer::Emulated(b), _) => b.addr(),
            #[cfg(feature = "cuda-emu")]
            (DeviceBuffer::Driver(_), Backend::Emulated) => 0,
        }
    }

    /// The module of `kernels/<stem>.cu`, loaded from the embedded PTX on first use.
    pub fn module(&self, stem: &str) -> Result<Arc<CudaModule>> {
        let d = self.driver("a PTX module")?;
        let mut mods = d.modules.lock().map_err(|_| Error::Device("cuda: module table poisoned".into()))?;
        if let Some(m) = mods.get(stem) {
            return Ok(m.clone());
        }
        let key = ptx::STEMS
            .iter()
            .copied()
            .find(|s| *s == stem)
            .ok_or_else(|| Error::Device(format!("cuda: no kernel file '{stem}'")))?;
        let src = ptx::ptx(key, self.major).ok_or_else(|| Error::Device(format!("cuda: no PTX for '{stem}'")))?;
        let m = d
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(src))
            .map_err(|e| derr(&format!("load PTX of {stem}.cu (driver too old for PTX ISA 9.0?)"), e))?;
        mods.insert(key, m.clone());
        Ok(m)
    }

    /// The kernel `name` from `kernels/<stem>.cu`.
    pub fn function(&self, stem: &str, name: &str) -> Result<CudaFunction> {
        self.module(stem)?.load_function(name).map_err(|e| derr(&format!("kernel {name} in {stem}.cu"), e))
    }

    /// Launches `kernels/<stem>.cu: name(params)` with the one by-value parameter struct.
    pub fn launch<P: DeviceRepr>(&self, stem: &str, name: &str, cfg: Launch, params: &P) -> Result<()> {
        #[cfg(feature = "cuda-emu")]
        if self.is_emulated() {
            if cfg.shared_bytes != 0 {
                return Err(Error::Device(format!("cuda emulator: {name}: dynamic shared memory is not emulated")));
            }
            // SAFETY: as below: `params` is the kernel's parameter struct (its size is checked
            // against the C++ declaration), its addresses live emulated buffers.
            return unsafe {
                super::emu::launch(stem, name, cfg.grid, cfg.block, (params as *const P).cast(), size_of::<P>())
            };
        }
        let d = self.driver("a kernel launch")?;
        let f = self.function(stem, name)?;
        let cfg = LaunchConfig { grid_dim: cfg.grid, block_dim: cfg.block, shared_mem_bytes: cfg.shared_bytes };
        let mut b = d.stream.launch_builder(&f);
        b.arg(params);
        // SAFETY: every kernel in kernels/ takes exactly one parameter, its `<Op>Params` struct,
        // whose layout `params.rs` mirrors with size checks on both sides; the pointers inside are
        // live buffers of this device (the callers in `run/` keep them alive until they download;
        // the ops hold their tensors until the launch is queued, and buffers are freed
        // stream-ordered, after every earlier launch on this one stream).
        unsafe { b.launch(cfg) }.map_err(|e| derr(&format!("launch {name}"), e))?;
        Ok(())
    }
}
