//! The page table, allocation and reuse of pages, the residency budget with LRU eviction,
//! prefetch and explicit eviction. The access API is in `allocator/access.rs`.
//!
//! Reference: bitsandbytes' `GlobalPageManager` (prefetch all paged tensors before a step) and the
//! CUDA driver's LRU eviction of managed memory under oversubscription. Deliberately not here:
//! dirty tracking (page-out always copies back) and asynchrony (backends decide; see `Transfer`).

use std::collections::{BTreeSet, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::backend::{Backend, DeviceKind, HostBackend, Move, SimulatedDevice, Slot, Transfer};
use crate::{Error, Result};

mod access;
pub use access::PageViewMut;

static NEXT_INSTANCE: AtomicU32 = AtomicU32::new(1);

/// A handle to a buffer of whole pages. `Copy`: the allocator owns the memory; a freed or foreign
/// handle is an error, never undefined behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PagedBuffer {
    alloc: u32,
    id: u64,
    len: usize,
}

impl PagedBuffer {
    /// Length in bytes as requested (the last page may hold unused tail bytes).
    pub fn len_bytes(&self) -> usize {
        self.len
    }
    /// The buffer's id, unique within its allocator (error messages name it).
    pub fn id(&self) -> u64 {
        self.id
    }
}

/// Traffic counters. Host-only backends leave them all at zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pages copied host → device (faults and prefetches).
    pub pages_in: u64,
    /// Pages copied device → host (evictions and explicit page-outs).
    pub pages_out: u64,
    /// `pages_in` × page size.
    pub bytes_in: u64,
    /// `pages_out` × page size.
    pub bytes_out: u64,
    /// Accesses that found a page non-resident and brought it in synchronously.
    pub faults: u64,
    /// Accesses that found a page resident because a prefetch brought it in.
    pub faults_avoided: u64,
    /// Pages brought in ahead of use (each also counts in `pages_in`).
    pub prefetches: u64,
    /// Prefetched pages whose copy ran while a compute access was running
    /// ([`PagedAllocator::with_pages_mut_prefetching`]; a subset of `prefetches`).
    pub prefetches_overlapped: u64,
    /// Prefetched pages dropped because only unused prefetched pages were left to evict.
    pub prefetches_dropped: u64,
    /// Page-outs forced by the budget (a subset of `pages_out`).
    pub evictions: u64,
}

impl Stats {
    /// Bytes copied in either direction.
    pub fn bytes_moved(&self) -> u64 {
        self.bytes_in + self.bytes_out
    }
}

struct Page {
    slot: Slot,
    resident: bool,
    prefetched: bool,
    last_use: u64,
}

struct Buffer {
    pages: Vec<u32>,
    len: usize,
}

/// Page-granular allocator with a device residency budget; see the crate docs.
pub struct PagedAllocator {
    backend: Box<dyn Backend>,
    instance: u32,
    page_size: usize,
    /// `None`: host-only backend, everything resident, no budget.
    budget_pages: Option<usize>,
    pages: Vec<Page>,
    free_pages: Vec<u32>,
    buffers: HashMap<u64, Buffer>,
    next_id: u64,
    /// Resident pages by (last use, page): the first entry is the LRU victim.
    lru: BTreeSet<(u64, u32)>,
    tick: u64,
    stats: Stats,
    zeros: Vec<u8>,
    /// Whether `with_pages_mut_prefetching` copies during the access (default) or after it.
    overlap: bool,
}

impl PagedAllocator {
    /// `device_budget` bytes may be resident at once (whole pages; ignored by host-only backends).
    pub fn new(backend: Box<dyn Backend>, device_budget: usize) -> Result<Self> {
        let page_size = backend.page_size();
        let budget_pages = match backend.kind() {
            DeviceKind::HostOnly => None,
            DeviceKind::Discrete { capacity_bytes } => {
                let pages = device_budget.min(capacity_bytes) / page_size;
                if pages == 0 {
                    return Err(Error::Config(format!(
                        "device budget {device_budget} B (capacity {capacity_bytes} B) holds no {page_size}-byte page"
                    )));
                }
                Some(pages)
            }
        };
        Ok(Self {
            backend,
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            page_size,
            budget_pages,
            pages: Vec::new(),
            free_pages: Vec::new(),
            buffers: HashMap::new(),
            next_id: 1,
            lru: BTreeSet::new(),
            tick: 0,
            stats: Stats::default(),
            zeros: vec![0; page_size],
            overlap: true,
        })
    }
    /// Host-only allocator for CPU runs.
    pub fn host(page_size: usize) -> Result<Self> {
        Self::new(Box::new(HostBackend::new(page_size)?), usize::MAX)
    }
    /// A simulated device holding exactly `device_budget` bytes (whole pages).
    pub fn simulated(page_size: usize, device_budget: usize) -> Result<Self> {
        Self::new(Box::new(SimulatedDevice::new(page_size, device_budget)?), device_budget)
    }
    /// CUDA unified memory on device `ordinal`, at most `device_budget` bytes resident (also
    /// capped by the device's free memory). An error, not a panic, without a driver or GPU.
    #[cfg(feature = "cuda")]
    pub fn cuda(ordinal: usize, page_size: usize, device_budget: usize) -> Result<Self> {
        Self::new(Box::new(crate::cuda::CudaManaged::new(ordinal, page_size)?), device_budget)
    }

    /// Bytes per page.
    pub fn page_size(&self) -> usize {
        self.page_size
    }
    /// The backend's name (`host`, `simulated`, `cuda-managed`).
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }
    /// The traffic counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }
    /// Zeroes the traffic counters.
    pub fn reset_stats(&mut self) {
        self.stats = Stats::default();
    }
    /// With `false`, [`Self::with_pages_mut_prefetching`] prefetches after the access instead of
    /// during it: the same pages move, only later (for measuring what the overlap buys).
    pub fn set_overlap(&mut self, on: bool) {
        self.overlap = on;
    }
    /// Budget in bytes (`None` for host-only backends).
    pub fn budget_bytes(&self) -> Option<usize> {
        self.budget_pages.map(|p| p * self.page_size)
    }
    /// Bytes of pages resident on a discrete device (0 for host-only backends).
    pub fn resident_bytes(&self) -> usize {
        self.lru.len() * self.page_size
    }
    /// Pages held by live buffers.
    pub fn live_pages(&self) -> usize {
        self.pages.len() - self.free_pages.len()
    }
    /// Pages ever created (live + free for reuse): the allocator's footprint.
    pub fn total_pages(&self) -> usize {
        self.pages.len()
    }
    /// Buffers allocated and not freed.
    pub fn live_buffers(&self) -> usize {
        self.buffers.len()
    }

    /// Allocates `len` zeroed bytes in whole pages, reusing freed pages first.
    pub fn alloc(&mut self, len: usize) -> Result<PagedBuffer> {
        let n = len.div_ceil(self.page_size);
        let mut pages = Vec::with_capacity(n);
        for _ in 0..n {
            let id = match self.free_pages.pop() {
                Some(id) => {
                    let slot = self.pages[id as usize].slot;
                    self.backend.write(slot, 0, &self.zeros)?;
                    id
                }
                None => {
                    let slot = self.backend.create_page()?;
                    let resident = self.budget_pages.is_none();
                    self.pages.push(Page { slot, resident, prefetched: false, last_use: 0 });
                    (self.pages.len() - 1) as u32
                }
            };
            pages.push(id);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.buffers.insert(id, Buffer { pages, len });
        Ok(PagedBuffer { alloc: self.instance, id, len })
    }

    /// Frees a buffer; its pages go back to the free list (device copies are discarded).
    pub fn free(&mut self, buf: PagedBuffer) -> Result<()> {
        self.check(buf, "free")?;
        let Some(b) = self.buffers.remove(&buf.id) else {
            return Err(Error::UnknownBuffer { op: "free", id: buf.id });
        };
        for &p in &b.pages {
            if self.budget_pages.is_some() && self.pages[p as usize].resident {
                self.drop_resident(p, false)?;
            }
            self.free_pages.push(p);
        }
        Ok(())
    }

    /// Releases the memory of free pages back to the backend.
    pub fn trim(&mut self) -> Result<()> {
        // Page ids are indices, so only a free tail of the table can be dropped.
        let mut free: Vec<u32> = std::mem::take(&mut self.free_pages);
        free.sort_unstable();
        while free.last().is_some_and(|&p| p as usize + 1 == self.pages.len()) {
            free.pop();
            if let Some(page) = self.pages.pop() {
                self.backend.destroy_page(page.slot)?;
            }
        }
        self.free_pages = free;
        Ok(())
    }

    fn check(&self, buf: PagedBuffer, op: &'static str) -> Result<&Buffer> {
        if buf.alloc != self.instance {
            return Err(Error::ForeignHandle { op, handle: buf.alloc, this: self.instance });
        }
        match self.buffers.get(&buf.id) {
            Some(b) => Ok(b),
            None if buf.id < self.next_id => Err(Error::AlreadyFreed { op, id: buf.id }),
            None => Err(Error::UnknownBuffer { op, id: buf.id }),
        }
    }

    fn check_range(&self, buf: PagedBuffer, r: &Range<usize>, op: &'static str) -> Result<()> {
        let len = self.check(buf, op)?.len;
        if r.start > r.end || r.end > len {
            return Err(Error::OutOfRange { op, id: buf.id, start: r.start, end: r.end, len });
        }
        Ok(())
    }

    /// Page ids covering a byte range of a checked buffer.
    fn pages_of(&self, buf: PagedBuffer, r: &Range<usize>) -> Vec<u32> {
        if r.start >= r.end {
            return Vec::new();
        }
        let (first, last) = (r.start / self.page_size, (r.end - 1) / self.page_size);
        self.buffers.get(&buf.id).map(|b| b.pages[first..=last].to_vec()).unwrap_or_default()
    }

    fn touch(&mut self, p: u32) {
        self.tick += 1;
        let page = &mut self.pages[p as usize];
        if self.budget_pages.is_some() && page.resident {
            self.lru.remove(&(page.last_use, p));
            self.lru.insert((self.tick, p));
        }
        page.last_use = self.tick;
    }

    fn drop_resident(&mut self, p: u32, keep: bool) -> Result<()> {
        let slot = self.unmap(p, keep);
        self.backend.page_out(slot, keep)
    }

    /// Page-table side of a page-out: marks `p` non-resident and counts the copy if `keep`.
    fn unmap(&mut self, p: u32, keep: bool) -> Slot {
        let page = &mut self.pages[p as usize];
        self.lru.remove(&(page.last_use, p));
        page.resident = false;
        page.prefetched = false;
        if keep {
            self.stats.pages_out += 1;
            self.stats.bytes_out += self.page_size as u64;
        }
        page.slot
    }

    /// Page-table side of bringing page `p` in under a budget of `budget` pages: unmaps the
    /// least-recently-used page allowed by `may_evict` if the budget is full, maps `p` and counts.
    /// Returns the backend's work, or `None` (nothing changed) when no page may be evicted.
    fn plan_in(
        &mut self,
        p: u32,
        budget: usize,
        how: Transfer,
        may_evict: impl Fn(u32, &Page) -> bool,
    ) -> Option<Move> {
        let mut evict = None;
        if self.lru.len() >= budget {
            let victim = self.lru.iter().map(|&(_, v)| v).find(|&v| may_evict(v, &self.pages[v as usize]))?;
            evict = Some(self.unmap(victim, true));
            self.stats.evictions += 1;
        }
        let page = &mut self.pages[p as usize];
        page.resident = true;
        page.prefetched = how == Transfer::Prefetch;
        self.lru.insert((page.last_use, p));
        self.stats.pages_in += 1;
        self.stats.bytes_in += self.page_size as u64;
        Some(Move { evict, fetch: page.slot })
    }

    /// Brings page `p` in, evicting the least-recently-used page allowed by `may_evict`.
    /// Returns false (nothing moved) when no page may be evicted.
    fn bring_in(&mut self, p: u32, how: Transfer, may_evict: impl Fn(u32, &Page) -> bool) -> Result<bool> {
        let Some(budget) = self.budget_pages else {
            return Ok(true);
        };
        let Some(m) = self.plan_in(p, budget, how, may_evict) else {
            return Ok(false);
        };
        if let Some(victim) = m.evict {
            self.backend.page_out(victim, true)?;
        }
        self.backend.page_in(m.fetch, how)?;
        Ok(true)
    }

    /// Advisory: starts bringing the pages of `range` (bytes) in. Stops, without error, rather
    /// than evict a page that was prefetched and not yet used.
    pub fn prefetch_to_device(&mut self, buf: PagedBuffer, range: Range<usize>) -> Result<()> {
        self.check_range(buf, &range, "prefetch_to_device")?;
        let pages = self.pages_of(buf, &range);
        self.prefetch_pages(&pages, |_, pg| !pg.prefetched)
    }

    /// Prefetches `pages` in order, evicting only pages allowed by `may_evict`; counts the rest
    /// as dropped at the first page that finds no victim.
    fn prefetch_pages(&mut self, pages: &[u32], may_evict: impl Fn(u32, &Page) -> bool) -> Result<()> {
        if self.budget_pages.is_none() {
            return Ok(());
        }
        for (i, &p) in pages.iter().enumerate() {
            if self.pages[p as usize].resident {
                continue;
            }
            if !self.bring_in(p, Transfer::Prefetch, &may_evict)? {
                self.stats.prefetches_dropped += (pages.len() - i) as u64;
                break;
            }
            self.stats.prefetches += 1;
            self.touch(p);
        }
        Ok(())
    }

    /// Pages the resident pages of `range` (bytes) out to the host.
    pub fn evict_to_host(&mut self, buf: PagedBuffer, range: Range<usize>) -> Result<()> {
        self.check_range(buf, &range, "evict_to_host")?;
        if self.budget_pages.is_none() {
            return Ok(());
        }
        for p in self.pages_of(buf, &range) {
            if self.pages[p as usize].resident {
                self.drop_resident(p, true)?;
            }
        }
        Ok(())
    }
}
