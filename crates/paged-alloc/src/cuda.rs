//! The CUDA unified-memory backend (feature `cuda`): every page is its own `cuMemAllocManaged`
//! allocation whose preferred location is the host, paged in with `cuMemPrefetchAsync_v2` to the
//! device and out with the same call to the host, all on one stream of the device's primary
//! context.
//!
//! Reference: bitsandbytes' paged optimizers (`cget_managed_ptr` = `cudaMallocManaged`,
//! `cprefetch` = `cudaMemPrefetchAsync`), with the paging decided by the allocator's budget rather
//! than by the driver's page faults. Deliberately not here: the optimizer kernels (the views are
//! CPU-addressable, so the CPU optimizer runs on this backend too, but every CPU touch of a
//! device-resident page migrates it back: correct, and slow), multi-GPU, and oversubscription:
//! the backend never asks for more managed memory than the device has free (`cuMemGetInfo`), as
//! oversubscribed managed memory can stall the whole GPU.
//!
//! The driver library is loaded at run time (cudarc's `dynamic-loading`), and cudarc panics on
//! the first driver call when it is missing, so [`CudaManaged::new`] asks [`driver_present`]
//! first and returns [`Error::Backend`] instead.

use std::sync::Arc;

use cudarc::driver::sys::{
    self, CUdevice_attribute, CUdeviceptr, CUmemAttach_flags, CUmemLocation, CUmemLocationType, CUmem_advise,
};
use cudarc::driver::{result, CudaContext, CudaStream, DriverError};

use crate::backend::{Backend, DeviceKind, Slot, Transfer};
use crate::{Error, Result};

const NAME: &str = "cuda-managed";

/// Device memory left to everything else when the residency capacity is taken from the free
/// memory (the CUDA context, cuBLAS workspaces, the kernels' own buffers).
pub const DEVICE_RESERVE: usize = 512 << 20;

/// True when the CUDA driver library (`libcuda.so.1`) can be loaded. Never panics.
pub fn driver_present() -> bool {
    // SAFETY: only tries `dlopen` on the candidate library names and drops the handle.
    unsafe { sys::is_culib_present() }
}

fn err(op: &'static str, msg: impl std::fmt::Display) -> Error {
    Error::Backend { backend: NAME, op, msg: msg.to_string() }
}

fn drv(op: &'static str) -> impl Fn(DriverError) -> Error {
    move |e| err(op, format!("CUDA driver: {e}"))
}

/// One managed page per slot, on one device; see the module docs.
pub struct CudaManaged {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    ordinal: usize,
    page_size: usize,
    /// Device bytes the allocator may keep resident: free memory at creation less the reserve.
    capacity: usize,
    /// slot -> managed allocation (`None`: destroyed, slot free for reuse).
    pages: Vec<Option<CUdeviceptr>>,
    resident: Vec<bool>,
    free_slots: Vec<Slot>,
    managed_bytes: usize,
}

impl CudaManaged {
    /// A backend of `page_size`-byte pages (a multiple of 4096, the host page) on device
    /// `ordinal`. Errors, without panicking, when there is no driver, no such device, or a device
    /// without concurrent managed access (needed to prefetch while the host works on other pages).
    pub fn new(ordinal: usize, page_size: usize) -> Result<Self> {
        const OP: &str = "new";
        if page_size == 0 || page_size & 4095 != 0 {
            return Err(Error::Config(format!("CUDA page size {page_size} must be a positive multiple of 4096 bytes")));
        }
        if !driver_present() {
            return Err(err(
                OP,
                "no CUDA driver (libcuda.so.1 not found); use the host or simulated backend on this machine",
            ));
        }
        result::init().map_err(drv(OP))?;
        let count = result::device::get_count().map_err(drv(OP))?.max(0) as usize;
        if ordinal >= count {
            return Err(err(OP, format!("device {ordinal} requested, {count} present")));
        }
        let ctx = CudaContext::new(ordinal).map_err(drv(OP))?;
        for (attr, what) in [
            (CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY, "managed memory"),
            (CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS, "concurrent managed access"),
        ] {
            if ctx.attribute(attr).map_err(drv(OP))? != 1 {
                return Err(err(OP, format!("device {ordinal} does not support {what}")));
            }
        }
        let stream = ctx.new_stream().map_err(drv(OP))?;
        let (free, _total) = ctx.mem_get_info().map_err(drv(OP))?;
        let capacity = free.saturating_sub(DEVICE_RESERVE) / page_size * page_size;
        if capacity == 0 {
            return Err(err(
                OP,
                format!("device {ordinal} has {free} B free, less than the {DEVICE_RESERVE} B reserve"),
            ));
        }
        Ok(Self {
            ctx,
            stream,
            ordinal,
            page_size,
            capacity,
            pages: Vec::new(),
            resident: Vec::new(),
            free_slots: Vec::new(),
            managed_bytes: 0,
        })
    }

    /// Bytes of managed memory this backend holds.
    pub fn managed_bytes(&self) -> usize {
        self.managed_bytes
    }

    fn bind(&self, op: &'static str) -> Result<()> {
        self.ctx.bind_to_thread().map_err(drv(op))
    }

    fn ptr(&self, op: &'static str, slot: Slot) -> Result<CUdeviceptr> {
        self.pages.get(slot).copied().flatten().ok_or(err(op, format!("no page in slot {slot}")))
    }

    fn device_location(&self) -> CUmemLocation {
        CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE, id: self.ordinal as i32 }
    }

    fn host_location() -> CUmemLocation {
        CUmemLocation { type_: CUmemLocationType::CU_MEM_LOCATION_TYPE_HOST, id: 0 }
    }

    fn prefetch(&self, op: &'static str, ptr: CUdeviceptr, to: CUmemLocation) -> Result<()> {
        // SAFETY: `ptr` is a live managed allocation of exactly `page_size` bytes (from
        // `create_page`, not yet destroyed) and the stream belongs to this context.
        unsafe { result::mem_prefetch_async(ptr, self.page_size, to, self.stream.cu_stream()) }.map_err(drv(op))
    }

    /// Copies between host memory and a managed page on the stream, then waits: the copy is
    /// ordered after queued prefetches and does not migrate the page.
    fn copy(&self, op: &'static str, dst: CUdeviceptr, src: CUdeviceptr, len: usize) -> Result<()> {
        self.bind(op)?;
        // SAFETY: both ranges are `len` bytes inside live allocations (checked by the callers:
        // a managed page and a host slice borrowed for the duration of the call, which waits).
        unsafe {
            sys::cuMemcpyAsync(dst, src, len, self.stream.cu_stream()).result().map_err(drv(op))?;
        }
        self.stream.synchronize().map_err(drv(op))
    }

    fn check_range(&self, op: &'static str, slot: Slot, offset: usize, len: usize) -> Result<CUdeviceptr> {
        let ptr = self.ptr(op, slot)?;
        match offset.checked_add(len) {
            Some(end) if end <= self.page_size => Ok(ptr + offset as u64),
            _ => Err(err(op, format!("{len} bytes at {offset} overrun a {}-byte page", self.page_size))),
        }
    }
}

impl Backend for CudaManaged {
    fn name(&self) -> &'static str {
        NAME
    }
    fn page_size(&self) -> usize {
        self.page_size
    }
    fn kind(&self) -> DeviceKind {
        DeviceKind::Discrete { capacity_bytes: self.capacity }
    }

    /// Allocates one managed page, advises its preferred location to the host and zero-fills it
    /// from the host (so it is populated there). Refuses to take the backend's managed memory
    /// past what the device could hold: its free memory now plus the pages of ours resident.
    fn create_page(&mut self) -> Result<Slot> {
        const OP: &str = "create_page";
        self.bind(OP)?;
        let (free, _) = result::mem_get_info().map_err(drv(OP))?;
        let ours = self.resident.iter().filter(|&&r| r).count() * self.page_size;
        let limit = free.saturating_add(ours);
        if self.managed_bytes + self.page_size > limit {
            return Err(err(
                OP,
                format!(
                    "a page more ({} B) would take managed memory to {} B, above the {limit} B the device has free; \
                     the state must fit in device memory even when paged (oversubscribed managed memory can stall the GPU)",
                    self.page_size,
                    self.managed_bytes + self.page_size
                ),
            ));
        }
        // SAFETY: a fresh allocation; its bytes are written below before anyone reads them.
        let ptr = unsafe { result::malloc_managed(self.page_size, CUmemAttach_flags::CU_MEM_ATTACH_GLOBAL) }
            .map_err(drv(OP))?;
        let advise = CUmem_advise::CU_MEM_ADVISE_SET_PREFERRED_LOCATION;
        // SAFETY: `ptr` is the managed allocation of `page_size` bytes made above.
        let prepared = unsafe { result::mem_advise(ptr, self.page_size, advise, Self::host_location()) }
            .map_err(drv(OP))
            .map(|()| {
                // SAFETY: managed memory is host-addressable on a device with concurrent managed
                // access (checked in `new`); the range is exactly this page.
                unsafe { std::ptr::write_bytes(ptr as usize as *mut u8, 0, self.page_size) };
            });
        if let Err(e) = prepared {
            // SAFETY: freeing the allocation made above, which nothing else references.
            let _ = unsafe { result::free_sync(ptr) };
            return Err(e);
        }
        self.managed_bytes += self.page_size;
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None => {
                self.pages.push(None);
                self.resident.push(false);
                self.pages.len() - 1
            }
        };
        self.pages[slot] = Some(ptr);
        self.resident[slot] = false;
        Ok(slot)
    }

    fn destroy_page(&mut self, slot: Slot) -> Result<()> {
        const OP: &str = "destroy_page";
        let ptr = self.ptr(OP, slot)?;
        self.bind(OP)?;
        // Queued prefetches of this page must finish before it is freed.
        self.stream.synchronize().map_err(drv(OP))?;
        // SAFETY: `ptr` came from `malloc_managed` and is freed once: the slot is cleared below.
        unsafe { result::free_sync(ptr) }.map_err(drv(OP))?;
        self.pages[slot] = None;
        self.resident[slot] = false;
        self.free_slots.push(slot);
        self.managed_bytes -= self.page_size;
        Ok(())
    }

    /// `cuMemPrefetchAsync_v2` to the device; a fault waits for it, a prefetch does not.
    fn page_in(&mut self, slot: Slot, how: Transfer) -> Result<()> {
        const OP: &str = "page_in";
        let ptr = self.ptr(OP, slot)?;
        self.bind(OP)?;
        self.prefetch(OP, ptr, self.device_location())?;
        self.resident[slot] = true;
        if how == Transfer::Fault {
            self.stream.synchronize().map_err(drv(OP))?;
        }
        Ok(())
    }

    /// `cuMemPrefetchAsync_v2` to the host, queued behind everything on the stream. Also when
    /// `keep` is false: managed memory has no cheaper way to give the device copy up.
    fn page_out(&mut self, slot: Slot, _keep: bool) -> Result<()> {
        const OP: &str = "page_out";
        let ptr = self.ptr(OP, slot)?;
        self.bind(OP)?;
        self.prefetch(OP, ptr, Self::host_location())?;
        self.resident[slot] = false;
        Ok(())
    }

    /// The managed pages as host-addressable slices (kernels take `as_mut_ptr()`). Does not wait
    /// for the stream: the allocator synchronises after faulting the pinned pages in, and the
    /// prefetches of an overlapped access, queued just before, must keep running meanwhile.
    fn device_pages_mut(&mut self, slots: &[Slot]) -> Result<Vec<&mut [u8]>> {
        const OP: &str = "device_pages_mut";
        let mut ptrs = Vec::with_capacity(slots.len());
        for &s in slots {
            let p = self.ptr(OP, s)?;
            if ptrs.contains(&p) {
                return Err(err(OP, format!("slot {s} requested twice")));
            }
            ptrs.push(p);
        }
        let ps = self.page_size;
        // SAFETY: each pointer is a distinct live managed allocation of `ps` bytes (distinct
        // allocations never overlap), host-addressable on this device, and borrowed for as long
        // as `&mut self`, so no page can be destroyed while a view lives.
        Ok(ptrs.into_iter().map(|p| unsafe { std::slice::from_raw_parts_mut(p as usize as *mut u8, ps) }).collect())
    }

    fn read(&self, slot: Slot, offset: usize, dst: &mut [u8]) -> Result<()> {
        const OP: &str = "read";
        let src = self.check_range(OP, slot, offset, dst.len())?;
        if dst.is_empty() {
            return Ok(());
        }
        self.copy(OP, dst.as_mut_ptr() as usize as CUdeviceptr, src, dst.len())
    }

    fn write(&mut self, slot: Slot, offset: usize, src: &[u8]) -> Result<()> {
        const OP: &str = "write";
        let dst = self.check_range(OP, slot, offset, src.len())?;
        if src.is_empty() {
            return Ok(());
        }
        self.copy(OP, dst, src.as_ptr() as usize as CUdeviceptr, src.len())
    }

    fn synchronize(&mut self) -> Result<()> {
        self.bind("synchronize")?;
        self.stream.synchronize().map_err(drv("synchronize"))
    }
}

impl Drop for CudaManaged {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_err() || self.stream.synchronize().is_err() {
            return; // a broken context: freeing would fail too
        }
        for ptr in self.pages.iter().flatten() {
            // SAFETY: each live page is freed once, after the stream has drained.
            let _ = unsafe { result::free_sync(*ptr) };
        }
    }
}
