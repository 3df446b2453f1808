//! Page-granular allocator for optimizer state that pages between device and host memory.
//!
//! Reference: bitsandbytes' paged optimizers (`cget_managed_ptr`, `cprefetch`: CUDA unified
//! memory with `cudaMemPrefetchAsync`), re-done here with the paging policy in Rust so it can be
//! tested on any machine. Deliberately not here: the optimizer math (crates/trainer/src/optim)
//! and any dirty-page tracking (a page-out always copies the page back).
//!
//! # Model
//! A [`PagedAllocator`] hands out [`PagedBuffer`] handles made of fixed-size pages (default
//! [`DEFAULT_PAGE_SIZE`] = 2 MiB; tests use 4 KiB). It keeps the page table, a *residency budget*
//! (bytes allowed on the device) and evicts the least-recently-used page when bringing a page in
//! would exceed it. Every page has a host copy; a resident page's device copy is authoritative.
//!
//! * [`PagedAllocator::with_pages_mut`] is the compute access: it faults in every page the request
//!   names (synchronously; counted as *faults*), pins them while the closure runs and hands out
//!   `&mut` views of the device copies. A request that needs more distinct pages than the budget
//!   holds is **rejected** with [`Error::AccessExceedsBudget`].
//! * [`PagedAllocator::with_pages_mut_prefetching`] is the same access plus the pages the caller
//!   will touch next, brought in **while** the closure runs (below).
//! * [`PagedAllocator::with_device_slice_mut`] walks a range of any size **page by page**, so a
//!   range larger than the budget is processed in page-sized pieces and never exceeds it.
//! * [`PagedAllocator::prefetch_to_device`] brings pages in ahead of use (a later access that finds
//!   them counts as a *fault avoided*); it is advisory and stops rather than evict other pages that
//!   were prefetched and not yet used. [`PagedAllocator::evict_to_host`] pages out explicitly.
//! * [`PagedAllocator::read_bytes`]/[`PagedAllocator::write_bytes`] copy from/to wherever a page
//!   lives without moving it (checkpoints, initialisation).
//!
//! # Overlapping the page-in of the next unit with the update of this one
//! A paged optimizer step walks its state in units (a page of m with its page of v) in the order
//! of the parameters, and calls `with_pages_mut_prefetching(unit k, unit k+1, update)`. The
//! allocator, on the calling thread: faults in and pins unit k (normally already resident: it was
//! the previous call's prefetch), then plans unit k+1's page-ins in the page table, evicting only
//! pages that are neither pinned, nor wanted by k+1, nor prefetched and unused, and hands both to
//! [`Backend::access_overlapped`]. The backend runs the update on the pinned pages and the copies
//! at the same time: [`SimulatedDevice`] splits its device arena into disjoint `&mut` frames (no
//! `unsafe`), gives the pinned ones to the update and the others to a copy job, and runs the two
//! with `rayon::join`; CUDA queues `cuMemPrefetchAsync` on its stream and returns, so the DMA
//! engine copies while the update runs. Prefetches that do not fit beside the pinned pages (a
//! budget of one unit) are made after the update instead. Nothing else changes: the update sees
//! the same bytes in the same order, so paged and unpaged optimizers stay bit-identical, and the
//! counters say what happened (`prefetches_overlapped`, `faults_avoided`).
//! [`PagedAllocator::set_overlap`]`(false)` moves the same pages after each update, to measure the
//! difference.
//!
//! # Backends
//! [`Backend`] holds memory primitives only (create/destroy a page, page in, page out, view device
//! pages, read/write in place, synchronise, run an access beside page moves); all policy lives in
//! the allocator. Three backends ship: [`HostBackend`] (host memory is the device: everything
//! resident, zero traffic), [`SimulatedDevice`] (a device arena of a fixed number of page frames
//! plus a host arena; page-in and page-out really copy bytes, so the policy is tested on any
//! machine) and, with the `cuda` feature, `cuda::CudaManaged` (CUDA unified memory):
//! `create_page` is one `cuMemAllocManaged` page `cuMemAdvise_v2`d to prefer the host, refused
//! when the backend's managed memory would pass what the device has free (`cuMemGetInfo`);
//! `page_in` is `cuMemPrefetchAsync_v2(ptr, page, device, stream)` (a `Transfer::Fault` is
//! followed by a stream synchronise, a `Transfer::Prefetch` is not); `page_out` prefetches to the
//! host; `device_pages_mut` returns the managed pointers as slices (host-addressable; kernels take
//! `as_mut_ptr()`); `read`/`write` are `cuMemcpyAsync` on the stream plus a synchronise (no
//! migration); `synchronize` is `cuStreamSynchronize`. Ordering a page-out after the kernel that
//! used the page is the stream's job (same stream), which is why the trait has no fences. Without
//! a driver, `CudaManaged::new` is an error, never a panic.
//!
//! # Example
//! ```
//! use paged_alloc::PagedAllocator;
//! // 4 KiB pages, a device that holds two of them, a buffer of five.
//! let mut alloc = PagedAllocator::simulated(4096, 2 * 4096)?;
//! let buf = alloc.alloc(5 * 4096)?;
//! alloc.with_device_slice_mut(buf, 0..5 * 1024, |first, s| {
//!     s.iter_mut().enumerate().for_each(|(i, x)| *x = (first + i) as f32)
//! })?;
//! assert!(alloc.resident_bytes() <= 2 * 4096);
//! let mut back = [0.0f32; 2];
//! alloc.read_f32(buf, 4999, &mut back)?;
//! assert_eq!(back, [4999.0, 5000.0]);
//! assert_eq!(alloc.stats().faults, 5);
//! alloc.free(buf)?;
//! assert!(alloc.free(buf).is_err()); // double free is an error, not UB
//! # Ok::<(), paged_alloc::Error>(())
//! ```

mod allocator;
mod backend;
#[cfg(feature = "cuda")]
pub mod cuda;

pub use allocator::{PageViewMut, PagedAllocator, PagedBuffer, Stats};
pub use backend::{AccessFn, Backend, DeviceKind, HostBackend, Move, SimulatedDevice, Slot, Transfer};

/// Default page size: 2 MiB, the CUDA large-page / unified-memory migration granule.
pub const DEFAULT_PAGE_SIZE: usize = 2 << 20;

/// Errors name the operation and the buffer; nothing in this crate panics on bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("paged-alloc {op}: buffer #{id} was already freed (double free or use after free)")]
    AlreadyFreed { op: &'static str, id: u64 },
    #[error("paged-alloc {op}: unknown buffer handle #{id}")]
    UnknownBuffer { op: &'static str, id: u64 },
    #[error("paged-alloc {op}: handle of allocator {handle} passed to allocator {this}")]
    ForeignHandle { op: &'static str, handle: u32, this: u32 },
    #[error("paged-alloc {op}: range {start}..{end} out of bounds for buffer #{id} of {len} bytes")]
    OutOfRange { op: &'static str, id: u64, start: usize, end: usize, len: usize },
    #[error("paged-alloc {op}: range {start}..{end} of buffer #{id} crosses a page boundary (page size {page_size})")]
    CrossesPage { op: &'static str, id: u64, start: usize, end: usize, page_size: usize },
    #[error("paged-alloc {op}: empty range at {start} in buffer #{id}")]
    EmptyRange { op: &'static str, id: u64, start: usize },
    #[error("paged-alloc {op}: the access needs {needed} resident pages but the device budget holds {budget}; split it (with_device_slice_mut walks page by page)")]
    AccessExceedsBudget { op: &'static str, needed: usize, budget: usize },
    #[error("paged-alloc {op}: two requests of one access touch the same page (page {page})")]
    AliasedPages { op: &'static str, page: usize },
    #[error(
        "paged-alloc {op}: a {what} view needs a {align}-byte aligned range of whole elements, got {start}..{end}"
    )]
    Misaligned { op: &'static str, what: &'static str, align: usize, start: usize, end: usize },
    #[error("paged-alloc config: {0}")]
    Config(String),
    #[error("paged-alloc backend {backend}, {op}: {msg}")]
    Backend { backend: &'static str, op: &'static str, msg: String },
}

pub type Result<T> = std::result::Result<T, Error>;
