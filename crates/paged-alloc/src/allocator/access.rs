//! The compute access (`with_pages_mut` and the page-by-page walkers) and in-place reads/writes.
//!
//! Reference: CUDA unified memory's fault-then-migrate on first touch, made explicit: an access
//! names its pages, they are faulted in and pinned while the closure runs. Deliberately not here:
//! views spanning pages (device copies of neighbouring pages are not contiguous).

use std::ops::Range;

use super::PagedAllocator;
use crate::backend::Slot;
use crate::{Error, PagedBuffer, Result, Transfer};

/// A mutable view of a byte range inside one resident page.
pub struct PageViewMut<'a> {
    bytes: &'a mut [u8],
    start: usize,
}

impl<'a> PageViewMut<'a> {
    /// The range's bytes.
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.bytes
    }
    /// The range's address in device memory, for a kernel (host-addressable for every backend
    /// here; on CUDA a managed pointer).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.bytes.as_mut_ptr()
    }
    /// The range as f32s; pages are 8-byte aligned, so this needs a 4-byte aligned range.
    pub fn as_f32_mut(&mut self) -> Result<&mut [f32]> {
        let (start, end) = (self.start, self.start + self.bytes.len());
        bytemuck::try_cast_slice_mut(self.bytes).map_err(|_| Error::Misaligned {
            op: "as_f32_mut",
            what: "f32",
            align: 4,
            start,
            end,
        })
    }
}

/// The views of an access: each request's byte range inside its page's device copy.
fn views<'a>(frames: Vec<&'a mut [u8]>, reqs: &[(PagedBuffer, Range<usize>)], ps: usize) -> Vec<PageViewMut<'a>> {
    frames
        .into_iter()
        .zip(reqs)
        .map(|(frame, (_, r))| {
            let off = r.start % ps;
            PageViewMut { bytes: &mut frame[off..off + (r.end - r.start)], start: r.start }
        })
        .collect()
}

impl PagedAllocator {
    /// Compute access: every `(buffer, byte range)` must lie inside one page; all named pages are
    /// made resident (faulting synchronously where a prefetch did not), pinned while `f` runs, and
    /// handed to `f` as views in request order. Rejected if they need more pages than the budget.
    pub fn with_pages_mut<R>(
        &mut self,
        reqs: &[(PagedBuffer, Range<usize>)],
        f: impl FnOnce(&mut [PageViewMut<'_>]) -> R,
    ) -> Result<R> {
        let ids = self.pin(reqs, "with_pages_mut")?;
        let slots: Vec<Slot> = ids.iter().map(|&p| self.pages[p as usize].slot).collect();
        let ps = self.page_size;
        let frames = self.backend.device_pages_mut(&slots)?;
        Ok(f(&mut views(frames, reqs, ps)))
    }

    /// [`Self::with_pages_mut`] on `reqs` while the pages of `next` come in **during** `f`: the
    /// step of a paged optimizer passes the state of the unit it updates and of the unit it will
    /// update next. The prefetches that fit beside the pinned pages (evicting only pages that are
    /// neither pinned, nor wanted by `next`, nor prefetched and unused) are handed to the backend
    /// with the access ([`crate::Backend::access_overlapped`]: the simulated device copies on a
    /// second thread, CUDA queues `cuMemPrefetchAsync`); the rest are prefetched after `f` returns,
    /// as [`Self::prefetch_to_device`] would. Counted in `prefetches` and `prefetches_overlapped`.
    pub fn with_pages_mut_prefetching<R: Send>(
        &mut self,
        reqs: &[(PagedBuffer, Range<usize>)],
        next: &[(PagedBuffer, Range<usize>)],
        f: impl FnOnce(&mut [PageViewMut<'_>]) -> R + Send,
    ) -> Result<R> {
        const OP: &str = "with_pages_mut_prefetching";
        for (buf, r) in next {
            self.check_range(*buf, r, OP)?;
        }
        let ids = self.pin(reqs, OP)?;
        let mut wanted: Vec<u32> = Vec::new();
        for (buf, r) in next {
            for p in self.pages_of(*buf, r) {
                if !wanted.contains(&p) {
                    wanted.push(p);
                }
            }
        }
        let mut moves = Vec::new();
        let mut later: &[u32] = &wanted;
        if let (Some(budget), true) = (self.budget_pages, self.overlap) {
            later = &[];
            for (i, &p) in wanted.iter().enumerate() {
                if self.pages[p as usize].resident {
                    continue;
                }
                let free = |v: u32, pg: &super::Page| !pg.prefetched && !ids.contains(&v) && !wanted.contains(&v);
                match self.plan_in(p, budget, Transfer::Prefetch, free) {
                    Some(m) => {
                        moves.push(m);
                        self.stats.prefetches += 1;
                        self.stats.prefetches_overlapped += 1;
                        self.touch(p);
                    }
                    None => {
                        later = &wanted[i..];
                        break;
                    }
                }
            }
        }
        let slots: Vec<Slot> = ids.iter().map(|&p| self.pages[p as usize].slot).collect();
        let ps = self.page_size;
        let (mut f, mut out) = (Some(f), None);
        self.backend.access_overlapped(&slots, &moves, &mut |frames| {
            if let Some(f) = f.take() {
                out = Some(f(&mut views(frames, reqs, ps)));
            }
        })?;
        let later = later.to_vec();
        self.prefetch_pages(&later, |v, pg| !pg.prefetched && !wanted.contains(&v))?;
        out.ok_or(Error::Backend {
            backend: self.backend.name(),
            op: OP,
            msg: "the backend returned without running the access".into(),
        })
    }

    /// Validates an access, faults its pages in, pins and touches them; returns their page ids.
    fn pin(&mut self, reqs: &[(PagedBuffer, Range<usize>)], op: &'static str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(reqs.len());
        for (buf, r) in reqs {
            self.check_range(*buf, r, op)?;
            if r.start == r.end {
                return Err(Error::EmptyRange { op, id: buf.id, start: r.start });
            }
            if r.start / self.page_size != (r.end - 1) / self.page_size {
                let (start, end, page_size) = (r.start, r.end, self.page_size);
                return Err(Error::CrossesPage { op, id: buf.id, start, end, page_size });
            }
            let p = self.pages_of(*buf, r)[0];
            if ids.contains(&p) {
                return Err(Error::AliasedPages { op, page: p as usize });
            }
            ids.push(p);
        }
        if let Some(budget) = self.budget_pages {
            if ids.len() > budget {
                return Err(Error::AccessExceedsBudget { op, needed: ids.len(), budget });
            }
            for &p in &ids {
                let page = &mut self.pages[p as usize];
                if page.resident {
                    if page.prefetched {
                        page.prefetched = false;
                        self.stats.faults_avoided += 1;
                    }
                } else {
                    let pinned = ids.clone();
                    self.bring_in(p, Transfer::Fault, |v, _| !pinned.contains(&v))?;
                    self.stats.faults += 1;
                }
            }
            self.backend.synchronize()?;
        }
        for &p in &ids {
            self.touch(p);
        }
        Ok(ids)
    }

    /// Walks `range` (in f32 elements) page by page, calling `f(first_element, slice)`; never
    /// needs more than one resident page, whatever the range's size.
    pub fn with_device_slice_mut(
        &mut self,
        buf: PagedBuffer,
        range: Range<usize>,
        mut f: impl FnMut(usize, &mut [f32]),
    ) -> Result<()> {
        let bytes = range.start.saturating_mul(4)..range.end.saturating_mul(4);
        self.check_range(buf, &bytes, "with_device_slice_mut")?;
        let mut at = bytes.start;
        while at < bytes.end {
            let end = ((at / self.page_size + 1) * self.page_size).min(bytes.end);
            self.with_pages_mut(&[(buf, at..end)], |v| v[0].as_f32_mut().map(|s| f(at / 4, s)))??;
            at = end;
        }
        Ok(())
    }

    /// Byte-wise counterpart of [`Self::with_device_slice_mut`].
    pub fn with_device_bytes_mut(
        &mut self,
        buf: PagedBuffer,
        range: Range<usize>,
        mut f: impl FnMut(usize, &mut [u8]),
    ) -> Result<()> {
        self.check_range(buf, &range, "with_device_bytes_mut")?;
        let mut at = range.start;
        while at < range.end {
            let end = ((at / self.page_size + 1) * self.page_size).min(range.end);
            self.with_pages_mut(&[(buf, at..end)], |v| f(at, v[0].as_bytes_mut()))?;
            at = end;
        }
        Ok(())
    }

    /// Copies bytes out from wherever the pages live; moves nothing, counts nothing.
    pub fn read_bytes(&self, buf: PagedBuffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let r = offset..offset.saturating_add(dst.len());
        self.check_range(buf, &r, "read_bytes")?;
        let mut done = 0;
        for p in self.pages_of(buf, &r) {
            let at = offset + done;
            let n = (self.page_size - at % self.page_size).min(dst.len() - done);
            let slot = self.pages[p as usize].slot;
            self.backend.read(slot, at % self.page_size, &mut dst[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// Copies bytes in, wherever the pages live; moves nothing, counts nothing.
    pub fn write_bytes(&mut self, buf: PagedBuffer, offset: usize, src: &[u8]) -> Result<()> {
        let r = offset..offset.saturating_add(src.len());
        self.check_range(buf, &r, "write_bytes")?;
        let mut done = 0;
        for p in self.pages_of(buf, &r) {
            let at = offset + done;
            let n = (self.page_size - at % self.page_size).min(src.len() - done);
            let slot = self.pages[p as usize].slot;
            self.backend.write(slot, at % self.page_size, &src[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    /// f32 helpers over [`Self::read_bytes`]/[`Self::write_bytes`]; `offset` counts elements.
    pub fn read_f32(&self, buf: PagedBuffer, offset: usize, dst: &mut [f32]) -> Result<()> {
        self.read_bytes(buf, offset.saturating_mul(4), bytemuck::cast_slice_mut(dst))
    }
    /// f32 counterpart of [`Self::write_bytes`]; `offset` counts elements.
    pub fn write_f32(&mut self, buf: PagedBuffer, offset: usize, src: &[f32]) -> Result<()> {
        self.write_bytes(buf, offset.saturating_mul(4), bytemuck::cast_slice(src))
    }
}
