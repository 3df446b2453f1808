//! One CUDA device: its context, one stream that every launch, copy and cuBLAS call goes through
//! (so no cross-stream synchronisation is needed), the PTX modules loaded on first use, and the
//! cuBLAS handle created on the first matmul.

use super::ptx;
use crate::{Error, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

fn derr(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Device(format!("cuda: {what}: {e}"))
}

/// A device buffer of `len` elements of `T`.
pub type DeviceBuffer<T> = CudaSlice<T>;

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
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    major: i32,
    minor: i32,
    name: String,
    modules: Mutex<HashMap<&'static str, Arc<CudaModule>>>,
    /// The cuBLAS handle on `stream`, created on the first matmul.
    blas: Mutex<Option<Arc<CudaBlas>>>,
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

    /// A fresh context on `ordinal` (prefer [`CudaDevice::get`], which shares one per ordinal).
    pub fn new(ordinal: usize) -> Result<Self> {
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
        Ok(Self {
            ordinal,
            ctx,
            stream,
            major,
            minor,
            name,
            modules: Mutex::new(HashMap::new()),
            blas: Mutex::new(None),
        })
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
    /// The cudarc context (for cuBLAS and other libraries).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
    /// The stream every launch and copy of this device goes through.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The cuBLAS handle bound to this device's stream, created on first use. A missing
    /// `libcublas` is `Error::Device` (cudarc would panic on the first call instead).
    pub fn blas(&self) -> Result<Arc<CudaBlas>> {
        let mut slot = self.blas.lock().map_err(|_| Error::Device("cuda: cuBLAS handle poisoned".into()))?;
        if let Some(b) = slot.as_ref() {
            return Ok(b.clone());
        }
        // SAFETY: only tries `dlopen` on the candidate library names.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Device("cuda: libcublas not found (matmul on CUDA needs cuBLAS)".into()));
        }
        let b = Arc::new(CudaBlas::new(self.stream.clone()).map_err(|e| derr("create cuBLAS handle", e))?);
        *slot = Some(b.clone());
        Ok(b)
    }

    /// Device memory now and at its peak (waits for the stream first, so the figures include
    /// everything queued). With the stream-ordered allocator the peak is the pool's high-water mark
    /// of memory handed to tensors (`used_peak`, what PyTorch calls max allocated) and of memory
    /// the pool held (`reserved_peak`, max reserved); `device_used` is the whole device's use as
    /// the driver reports it (other processes, cuBLAS workspaces and modules included).
    pub fn memory(&self) -> Result<MemoryStats> {
        self.synchronize()?;
        let (free, total) = self.ctx.mem_get_info().map_err(|e| derr("memory info", e))?;
        let mut m = MemoryStats {
            device_used: total.saturating_sub(free) as u64,
            device_total: total as u64,
            ..Default::default()
        };
        if self.ctx.has_async_alloc() {
            let pool = mem_pool(&self.ctx)?;
            m.used = get_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?;
            m.used_peak = get_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_HIGH)?;
            m.reserved_peak = get_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH)?;
        }
        Ok(m)
    }

    /// Starts the peak figures of [`memory`](Self::memory) again from what is in use now.
    pub fn reset_peak_memory(&self) -> Result<()> {
        self.synchronize()?;
        if self.ctx.has_async_alloc() {
            let pool = mem_pool(&self.ctx)?;
            set_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_USED_MEM_HIGH, 0)?;
            set_pool_attr(pool, PoolAttr::CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, 0)?;
        }
        Ok(())
    }

    /// Waits for all work on the stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| derr("synchronize", e))
    }

    /// Copies `data` to a new device buffer (an empty slice gets a one-element zero buffer, so
    /// its address is valid).
    pub fn upload<T: DeviceRepr + ValidAsZeroBits>(&self, data: &[T]) -> Result<DeviceBuffer<T>> {
        if data.is_empty() {
            return self.zeros(1);
        }
        self.stream.clone_htod(data).map_err(|e| derr("host to device copy", e))
    }

    /// A zeroed device buffer of `len` elements (at least one, so its pointer is valid).
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<DeviceBuffer<T>> {
        self.stream.alloc_zeros(len.max(1)).map_err(|e| derr("alloc", e))
    }

    /// Copies a device buffer back to the host (waits for the stream).
    pub fn download<T: DeviceRepr + Clone + Default>(&self, buf: &DeviceBuffer<T>) -> Result<Vec<T>> {
        self.stream.clone_dtoh(buf).map_err(|e| derr("device to host copy", e))
    }

    /// The raw device address of `buf`, for a parameter struct. The buffer must outlive every
    /// launch that uses the address; all work is on this device's one stream, so ordering holds.
    pub fn ptr<T>(&self, buf: &DeviceBuffer<T>) -> u64 {
        let (p, _sync) = buf.device_ptr(&self.stream);
        p
    }

    /// The module of `kernels/<stem>.cu`, loaded from the embedded PTX on first use.
    pub fn module(&self, stem: &str) -> Result<Arc<CudaModule>> {
        let mut mods = self.modules.lock().map_err(|_| Error::Device("cuda: module table poisoned".into()))?;
        if let Some(m) = mods.get(stem) {
            return Ok(m.clone());
        }
        let key = ptx::STEMS
            .iter()
            .copied()
            .find(|s| *s == stem)
            .ok_or_else(|| Error::Device(format!("cuda: no kernel file '{stem}'")))?;
        let src = ptx::ptx(key, self.major).ok_or_else(|| Error::Device(format!("cuda: no PTX for '{stem}'")))?;
        let m = self
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
        let f = self.function(stem, name)?;
        let cfg = LaunchConfig { grid_dim: cfg.grid, block_dim: cfg.block, shared_mem_bytes: cfg.shared_bytes };
        let mut b = self.stream.launch_builder(&f);
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
