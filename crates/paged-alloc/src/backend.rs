//! Memory backends: the primitives the allocator's paging policy runs on.
//!
//! Reference: the CUDA unified-memory calls bitsandbytes' paged optimizers use (see the crate docs
//! for the mapping). `HostBackend` keeps everything in host memory; `SimulatedDevice` keeps a
//! device arena of a fixed number of page frames and copies bytes on every page-in/page-out, and
//! runs the copies of an overlapped access on a second rayon thread while the compute works on
//! its pinned frames. Deliberately no policy here (budgets, LRU, counters): that is the
//! allocator's job.

use crate::{Error, Result};

/// A backend's identifier for the storage of one page.
pub type Slot = usize;

/// Why a page is brought in: a synchronous fault (the access waits) or an advisory prefetch
/// (on CUDA, queued on a stream without waiting).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    /// An access needs the page now.
    Fault,
    /// The page is wanted soon.
    Prefetch,
}

/// One prefetch of an overlapped access: page `evict` out (keeping its bytes), if any, then page
/// `fetch` in. The allocator has already chosen the victim and updated its page table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Move {
    /// The victim to page out first, if the budget is full.
    pub evict: Option<Slot>,
    /// The page to bring in.
    pub fetch: Slot,
}

/// The compute closure of an overlapped access: it gets the device views of the pinned pages.
pub type AccessFn<'f> = dyn FnMut(Vec<&mut [u8]>) + Send + 'f;

/// What "the device" is for a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// Host memory is the device: every page is resident from creation, no traffic, no budget.
    HostOnly,
    /// A separate memory holding at most `capacity_bytes` of pages at once.
    Discrete {
        /// Bytes of pages the device can hold at once.
        capacity_bytes: usize,
    },
}

/// Memory primitives only. Pages are `page_size()` bytes, zero-filled on creation and 8-byte
/// aligned on both sides (so f32/u32 views of aligned ranges are valid).
pub trait Backend: Send {
    /// A short name for messages and statistics.
    fn name(&self) -> &'static str;
    /// Bytes per page.
    fn page_size(&self) -> usize;
    /// Where "the device" is.
    fn kind(&self) -> DeviceKind;
    /// Creates a zero-filled page that lives on the host.
    fn create_page(&mut self) -> Result<Slot>;
    /// Releases a page's storage on both sides.
    fn destroy_page(&mut self, slot: Slot) -> Result<()>;
    /// Copies a host page to the device; the device copy becomes authoritative.
    fn page_in(&mut self, slot: Slot, how: Transfer) -> Result<()>;
    /// Releases a page's device copy, copying it back to the host first when `keep` is set.
    fn page_out(&mut self, slot: Slot, keep: bool) -> Result<()>;
    /// Mutable views of the device copies of distinct resident pages, in request order.
    fn device_pages_mut(&mut self, slots: &[Slot]) -> Result<Vec<&mut [u8]>>;
    /// Copies bytes out of a page, wherever its authoritative copy lives.
    fn read(&self, slot: Slot, offset: usize, dst: &mut [u8]) -> Result<()>;
    /// Copies bytes into a page, wherever its authoritative copy lives.
    fn write(&mut self, slot: Slot, offset: usize, src: &[u8]) -> Result<()>;
    /// Waits for queued transfers (no-op for synchronous backends).
    fn synchronize(&mut self) -> Result<()>;
    /// Calls `f` with the device views of the distinct resident pages `pinned` (request order)
    /// while `moves` run; no page of a move is pinned. The default issues the moves first, then
    /// calls `f`: right for any backend, and already overlapped where a page-in only queues the
    /// copy (CUDA's `cuMemPrefetchAsync`). Synchronous backends override it to copy concurrently.
    fn access_overlapped(&mut self, pinned: &[Slot], moves: &[Move], f: &mut AccessFn<'_>) -> Result<()> {
        for m in moves {
            if let Some(victim) = m.evict {
                self.page_out(victim, true)?;
            }
            self.page_in(m.fetch, Transfer::Prefetch)?;
        }
        let views = self.device_pages_mut(pinned)?;
        f(views);
        Ok(())
    }
}

/// Host pages in 8-byte words so every page start is 8-byte aligned.
#[derive(Default)]
struct HostArena {
    pages: Vec<Option<Box<[u64]>>>,
    free: Vec<Slot>,
    words: usize,
}

impl HostArena {
    fn create(&mut self) -> Slot {
        let page = vec![0u64; self.words].into_boxed_slice();
        match self.free.pop() {
            Some(slot) => {
                self.pages[slot] = Some(page);
                slot
            }
            None => {
                self.pages.push(Some(page));
                self.pages.len() - 1
            }
        }
    }
    fn destroy(&mut self, slot: Slot) -> bool {
        match self.pages.get_mut(slot) {
            Some(p @ Some(_)) => {
                *p = None;
                self.free.push(slot);
                true
            }
            _ => false,
        }
    }
    fn get(&self, slot: Slot) -> Option<&[u8]> {
        self.pages.get(slot)?.as_deref().map(bytemuck::cast_slice)
    }
    fn get_mut(&mut self, slot: Slot) -> Option<&mut [u8]> {
        self.pages.get_mut(slot)?.as_deref_mut().map(bytemuck::cast_slice_mut)
    }
}

fn check_page_size(page_size: usize) -> Result<usize> {
    if page_size == 0 || page_size & 7 != 0 {
        return Err(Error::Config(format!("page size {page_size} must be a positive multiple of 8 bytes")));
    }
    Ok(page_size / 8)
}

fn copy_range(page: &[u8], offset: usize, dst: &mut [u8]) -> bool {
    match offset.checked_add(dst.len()).and_then(|end| page.get(offset..end)) {
        Some(src) => {
            dst.copy_from_slice(src);
            true
        }
        None => false,
    }
}

fn paste_range(page: &mut [u8], offset: usize, src: &[u8]) -> bool {
    match offset.checked_add(src.len()).and_then(|end| page.get_mut(offset..end)) {
        Some(dst) => {
            dst.copy_from_slice(src);
            true
        }
        None => false,
    }
}

/// Picks `slots` (distinct indices) out of `chunks` as mutable views, in request order.
fn pick_mut<'a>(chunks: Vec<Option<&'a mut [u64]>>, idx: &[usize], backend: &'static str) -> Result<Vec<&'a mut [u8]>> {
    let mut chunks = chunks;
    take_frames(&mut chunks, idx, backend)
}

/// Takes the chunks at `idx` (distinct indices) out of `chunks`, leaving `None` behind, so one
/// arena can be handed out to several owners without overlap.
fn take_frames<'a>(
    chunks: &mut [Option<&'a mut [u64]>],
    idx: &[usize],
    backend: &'static str,
) -> Result<Vec<&'a mut [u8]>> {
    let mut out = Vec::with_capacity(idx.len());
    for &i in idx {
        match chunks.get_mut(i).and_then(Option::take) {
            Some(c) => out.push(bytemuck::cast_slice_mut(c)),
            None => {
                return Err(Error::Backend {
                    backend,
                    op: "device_pages_mut",
                    msg: format!("page {i} is missing or requested twice"),
                })
            }
        }
    }
    Ok(out)
}

/// Host memory is the device: for CPU runs. Every page is always resident; no bytes move.
pub struct HostBackend {
    page_size: usize,
    host: HostArena,
}

impl HostBackend {
    /// A backend of `page_size`-byte pages (a positive multiple of 8).
    pub fn new(page_size: usize) -> Result<Self> {
        let words = check_page_size(page_size)?;
        Ok(Self { page_size, host: HostArena { words, ..HostArena::default() } })
    }
    fn missing(op: &'static str, slot: Slot) -> Error {
        Error::Backend { backend: "host", op, msg: format!("no page in slot {slot}") }
    }
}

impl Backend for HostBackend {
    fn name(&self) -> &'static str {
        "host"
    }
    fn page_size(&self) -> usize {
        self.page_size
    }
    fn kind(&self) -> DeviceKind {
        DeviceKind::HostOnly
    }
    fn create_page(&mut self) -> Result<Slot> {
        Ok(self.host.create())
    }
    fn destroy_page(&mut self, slot: Slot) -> Result<()> {
        self.host.destroy(slot).then_some(()).ok_or(Self::missing("destroy_page", slot))
    }
    fn page_in(&mut self, _slot: Slot, _how: Transfer) -> Result<()> {
        Ok(())
    }
    fn page_out(&mut self, _slot: Slot, _keep: bool) -> Result<()> {
        Ok(())
    }
    fn device_pages_mut(&mut self, slots: &[Slot]) -> Result<Vec<&mut [u8]>> {
        let chunks = self.host.pages.iter_mut().map(|p| p.as_deref_mut()).collect();
        pick_mut(chunks, slots, "host")
    }
    fn read(&self, slot: Slot, offset: usize, dst: &mut [u8]) -> Result<()> {
        let page = self.host.get(slot).ok_or(Self::missing("read", slot))?;
        copy_range(page, offset, dst).then_some(()).ok_or(Self::missing("read", slot))
    }
    fn write(&mut self, slot: Slot, offset: usize, src: &[u8]) -> Result<()> {
        let page = self.host.get_mut(slot).ok_or(Self::missing("write", slot))?;
        paste_range(page, offset, src).then_some(()).ok_or(Self::missing("write", slot))
    }
    fn synchronize(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A device of `capacity_bytes` (rounded down to whole page frames) next to a host arena. Page-in
/// and page-out copy the page between the two, so paging costs what a memcpy costs here.
pub struct SimulatedDevice {
    page_size: usize,
    host: HostArena,
    /// Device frames, `page_size / 8` words each.
    device: Vec<u64>,
    free_frames: Vec<usize>,
    /// slot -> device frame of its resident copy.
    frame_of: Vec<Option<usize>>,
}

impl SimulatedDevice {
    /// A device of `capacity_bytes` (whole pages of `page_size`, a positive multiple of 8).
    pub fn new(page_size: usize, capacity_bytes: usize) -> Result<Self> {
        let words = check_page_size(page_size)?;
        let frames = capacity_bytes / page_size;
        if frames == 0 {
            return Err(Error::Config(format!(
                "simulated device of {capacity_bytes} bytes holds no {page_size}-byte page"
            )));
        }
        Ok(Self {
            page_size,
            host: HostArena { words, ..HostArena::default() },
            device: vec![0u64; frames * words],
            free_frames: (0..frames).rev().collect(),
            frame_of: Vec::new(),
        })
    }
    fn err(op: &'static str, msg: String) -> Error {
        Error::Backend { backend: "simulated", op, msg }
    }
    fn frame(&self, slot: Slot) -> Option<usize> {
        self.frame_of.get(slot).copied().flatten()
    }
    fn frame_bytes(&self, frame: usize) -> &[u8] {
        let w = self.page_size / 8;
        bytemuck::cast_slice(&self.device[frame * w..(frame + 1) * w])
    }
    fn frame_bytes_mut(&mut self, frame: usize) -> &mut [u8] {
        let w = self.page_size / 8;
        bytemuck::cast_slice_mut(&mut self.device[frame * w..(frame + 1) * w])
    }
}

impl Backend for SimulatedDevice {
    fn name(&self) -> &'static str {
        "simulated"
    }
    fn page_size(&self) -> usize {
        self.page_size
    }
    fn kind(&self) -> DeviceKind {
        DeviceKind::Discrete { capacity_bytes: self.device.len() * 8 }
    }
    fn create_page(&mut self) -> Result<Slot> {
        let slot = self.host.create();
        if self.frame_of.len() <= slot {
            self.frame_of.resize(slot + 1, None);
        }
        self.frame_of[slot] = None;
        Ok(slot)
    }
    fn destroy_page(&mut self, slot: Slot) -> Result<()> {
        if let Some(frame) = self.frame(slot) {
            self.free_frames.push(frame);
            self.frame_of[slot] = None;
        }
        self.host.destroy(slot).then_some(()).ok_or(Self::err("destroy_page", format!("no page in slot {slot}")))
    }
    fn page_in(&mut self, slot: Slot, _how: Transfer) -> Result<()> {
        if self.frame(slot).is_some() {
            return Ok(());
        }
        let frame =
            self.free_frames.pop().ok_or(Self::err("page_in", "device full: the budget was exceeded".into()))?;
        let w = self.page_size / 8;
        let src = self.host.pages.get(slot).and_then(|p| p.as_deref());
        let Some(src) = src else {
            self.free_frames.push(frame);
            return Err(Self::err("page_in", format!("no page in slot {slot}")));
        };
        self.device[frame * w..(frame + 1) * w].copy_from_slice(src);
        self.frame_of[slot] = Some(frame);
        Ok(())
    }
    fn page_out(&mut self, slot: Slot, keep: bool) -> Result<()> {
        let Some(frame) = self.frame(slot) else {
            return Ok(());
        };
        if keep {
            let w = self.page_size / 8;
            let dst = self.host.pages.get_mut(slot).and_then(|p| p.as_deref_mut());
            let dst = dst.ok_or(Self::err("page_out", format!("no page in slot {slot}")))?;
            dst.copy_from_slice(&self.device[frame * w..(frame + 1) * w]);
        }
        self.frame_of[slot] = None;
        self.free_frames.push(frame);
        Ok(())
    }
    fn device_pages_mut(&mut self, slots: &[Slot]) -> Result<Vec<&mut [u8]>> {
        let mut frames = Vec::with_capacity(slots.len());
        for &s in slots {
            let f = self.frame(s);
            frames.push(f.ok_or(Self::err("device_pages_mut", format!("slot {s} not resident")))?);
        }
        let w = self.page_size / 8;
        let chunks = self.device.chunks_mut(w).map(Some).collect();
        pick_mut(chunks, &frames, "simulated")
    }
    fn read(&self, slot: Slot, offset: usize, dst: &mut [u8]) -> Result<()> {
        let page = match self.frame(slot) {
            Some(frame) => Some(self.frame_bytes(frame)),
            None => self.host.get(slot),
        };
        let ok = page.is_some_and(|p| copy_range(p, offset, dst));
        ok.then_some(()).ok_or(Self::err("read", format!("slot {slot} at {offset}")))
    }
    fn write(&mut self, slot: Slot, offset: usize, src: &[u8]) -> Result<()> {
        let ok = match self.frame(slot) {
            Some(frame) => paste_range(self.frame_bytes_mut(frame), offset, src),
            None => self.host.get_mut(slot).is_some_and(|p| paste_range(p, offset, src)),
        };
        ok.then_some(()).ok_or(Self::err("write", format!("slot {slot} at {offset}")))
    }
    fn synchronize(&mut self) -> Result<()> {
        Ok(())
    }
    /// The page table is updated here, on the calling thread; then the device arena is split into
    /// its frames (safe disjoint `&mut`s): the pinned frames go to `f`, the frames of the moves to
    /// a copy job, and `rayon::join` runs the two at once. Both are memcpy-bound, so on a machine
    /// with spare cores the page-in of the next unit costs (almost) nothing.
    fn access_overlapped(&mut self, pinned: &[Slot], moves: &[Move], f: &mut AccessFn<'_>) -> Result<()> {
        const OP: &str = "access_overlapped";
        let mut pinned_frames = Vec::with_capacity(pinned.len());
        for &s in pinned {
            pinned_frames.push(self.frame(s).ok_or(Self::err(OP, format!("pinned slot {s} not resident")))?);
        }
        // (frame, page to copy out of it first, page to copy into it)
        let mut jobs: Vec<(usize, Option<Slot>, Slot)> = Vec::with_capacity(moves.len());
        for m in moves {
            if self.host.get(m.fetch).is_none() || self.frame(m.fetch).is_some() {
                return Err(Self::err(OP, format!("slot {} is missing or already resident", m.fetch)));
            }
            let frame = match m.evict {
                Some(v) => {
                    let frame = self.frame(v).ok_or(Self::err(OP, format!("victim slot {v} not resident")))?;
                    self.frame_of[v] = None;
                    frame
                }
                None => self.free_frames.pop().ok_or(Self::err(OP, "device full: the budget was exceeded".into()))?,
            };
            self.frame_of[m.fetch] = Some(frame);
            jobs.push((frame, m.evict, m.fetch));
        }
        let w = self.page_size / 8;
        let mut frames: Vec<Option<&mut [u64]>> = self.device.chunks_mut(w).map(Some).collect();
        let views = take_frames(&mut frames, &pinned_frames, "simulated")?;
        let mut copies = Vec::with_capacity(jobs.len());
        for &(frame, evict, fetch) in &jobs {
            let dst = take_frames(&mut frames, &[frame], "simulated")?.pop();
            copies.push((dst.ok_or(Self::err(OP, format!("frame {frame} missing")))?, evict, fetch));
        }
        let host = &mut self.host;
        let copy = move || -> Result<()> {
            for (frame, evict, fetch) in copies {
                if let Some(v) = evict {
                    let dst = host.get_mut(v).ok_or(Self::err(OP, format!("no page in slot {v}")))?;
                    dst.copy_from_slice(frame);
                }
                frame.copy_from_slice(host.get(fetch).ok_or(Self::err(OP, format!("no page in slot {fetch}")))?);
            }
            Ok(())
        };
        let ((), copied) = rayon::join(|| f(views), copy);
        copied
    }
}
