//! Adam state kept in a paged allocator and updated page by page: `PagedAdamW` (32-bit state) and
//! `AdamW8bit` (bnb's blockwise 8-bit state; tensors under 4096 elements stay 32-bit), each on any
//! `paged_alloc` backend (host for CPU runs, a budgeted device for paged optimizers).
//!
//! Reference: bitsandbytes `Optimizer2State` (`min_8bit_size = 4096`, block size 256, one set of
//! blocks per tensor) and `PagedAdamW32bit`/`PagedAdamW8bit`. The step visits the state unit by
//! unit (a page of m with its page of v; for 8-bit, a page of codes of each moment with their
//! absmax pages), in the order of the parameters. Unit k is updated inside
//! `with_pages_mut_prefetching`, which brings unit k+1's pages in *while* k is being updated
//! (cyclically, so the next step's first unit is on its way): on the simulated device the copy
//! runs on a second thread, on CUDA it is a queued `cuMemPrefetchAsync`. The 8-bit update of a
//! unit runs its 256-element blocks in parallel (rayon, 64 blocks a task). Deliberately not here:
//! bnb's unorm/percentile clipping and fp16/bf16 parameters.

use std::ops::Range;

use paged_alloc::{PageViewMut, PagedAllocator, PagedBuffer, Stats, DEFAULT_PAGE_SIZE};
use rayon::prelude::*;

use super::adam8bit_simd::adam8bit_blocks;
use super::adamw::adamw_kernel;
use super::{check_len, AdamConsts, AdamWConfig, OptimError, Optimizer, OptimizerState, Result, StateTensor};

/// Tensors with fewer elements keep 32-bit state in the 8-bit optimizer (bnb `min_8bit_size`).
pub const MIN_8BIT_SIZE: usize = 4096;
/// Elements per 8-bit quantization block (one absmax each).
pub const QUANT_BLOCK: usize = 256;
/// Quantization blocks per parallel task of the 8-bit update (16 Ki elements).
const BLOCKS_PER_TASK: usize = 64;

/// A run of one tensor: `len` elements at `state` in a state buffer and at `param` in the params.
#[derive(Clone, Copy, Debug)]
struct Piece {
    state: usize,
    param: usize,
    len: usize,
}

/// The pieces overlapping state range `r`, clipped to it.
fn overlapping(pieces: &[Piece], r: Range<usize>) -> impl Iterator<Item = Piece> + '_ {
    let first = pieces.partition_point(|p| p.state + p.len <= r.start);
    pieces[first..].iter().take_while(move |p| p.state < r.end).filter_map(move |p| {
        let (lo, hi) = (r.start.max(p.state), r.end.min(p.state + p.len));
        (lo < hi).then_some(Piece { state: lo, param: p.param + (lo - p.state), len: hi - lo })
    })
}

#[derive(Clone)]
enum Unit {
    F32(Range<usize>),
    Q8(Range<usize>),
}

struct Engine {
    kind: &'static str,
    cfg: AdamWConfig,
    step: u64,
    n: usize,
    alloc: PagedAllocator,
    f_pieces: Vec<Piece>,
    f_len: usize,
    m: PagedBuffer,
    v: PagedBuffer,
    q_pieces: Vec<Piece>,
    /// 8-bit state length, each tensor padded to whole blocks.
    q_len: usize,
    mq: PagedBuffer,
    vq: PagedBuffer,
    absmax_m: PagedBuffer,
    absmax_v: PagedBuffer,
    units: Vec<Unit>,
}

impl Engine {
    fn new(
        kind: &'static str,
        cfg: AdamWConfig,
        segments: &[usize],
        min_8bit: usize,
        mut alloc: PagedAllocator,
    ) -> Result<Self> {
        let ps = alloc.page_size();
        let (mut f_pieces, mut q_pieces) = (Vec::new(), Vec::new());
        let (mut n, mut f_len, mut q_len) = (0, 0, 0);
        for &len in segments {
            if len >= min_8bit {
                q_pieces.push(Piece { state: q_len, param: n, len });
                q_len += len.div_ceil(QUANT_BLOCK) * QUANT_BLOCK;
            } else if len > 0 {
                f_pieces.push(Piece { state: f_len, param: n, len });
                f_len += len;
            }
            n += len;
        }
        if q_len > 0 && ps & (QUANT_BLOCK - 1) != 0
        /* QUANT_BLOCK is a power of two */
        {
            return Err(OptimError::Config(format!(
                "{kind}: page size {ps} is not a multiple of the {QUANT_BLOCK}-element quantization block"
            )));
        }
        let blocks = q_len / QUANT_BLOCK;
        let mut units: Vec<Unit> =
            (0..(q_len).div_ceil(ps)).map(|i| Unit::Q8(i * ps..((i + 1) * ps).min(q_len))).collect();
        let chunk = ps / 4;
        units.extend((0..f_len.div_ceil(chunk)).map(|i| Unit::F32(i * chunk..((i + 1) * chunk).min(f_len))));
        Ok(Self {
            kind,
            cfg,
            step: 0,
            n,
            m: alloc.alloc(f_len * 4)?,
            v: alloc.alloc(f_len * 4)?,
            mq: alloc.alloc(q_len)?,
            vq: alloc.alloc(q_len)?,
            absmax_m: alloc.alloc(blocks * 4)?,
            absmax_v: alloc.alloc(blocks * 4)?,
            alloc,
            f_pieces,
            f_len,
            q_pieces,
            q_len,
            units,
        })
    }

    fn requests(&self, u: &Unit) -> Vec<(PagedBuffer, Range<usize>)> {
        match u {
            Unit::F32(e) => vec![(self.m, e.start * 4..e.end * 4), (self.v, e.start * 4..e.end * 4)],
            Unit::Q8(c) => {
                let b = c.start / QUANT_BLOCK * 4..c.end / QUANT_BLOCK * 4;
                vec![(self.mq, c.clone()), (self.vq, c.clone()), (self.absmax_m, b.clone()), (self.absmax_v, b)]
            }
        }
    }

    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<()> {
        check_len(self.kind, "params", params.len(), self.n)?;
        check_len(self.kind, "grads", grads.len(), self.n)?;
        self.step += 1;
        let c = AdamConsts::new(&self.cfg, self.step, lr);
        // The walk runs on a rayon worker (one hand-off per step): each unit's update then runs
        // inline and the page copies beside it are a job another worker steals when it is idle,
        // or that this one runs itself after the update when none is (`rayon::join`), so
        // overlapping never waits for a thread to be scheduled.
        rayon::scope(|_| {
            for k in 0..self.units.len() {
                let unit = self.units[k].clone();
                let reqs = self.requests(&unit);
                let next = self.requests(&self.units[(k + 1) % self.units.len()]);
                let (f_pieces, q_pieces) = (&self.f_pieces, &self.q_pieces);
                let (params, grads) = (&mut *params, grads);
                self.alloc.with_pages_mut_prefetching(&reqs, &next, |views| match unit {
                    Unit::F32(e) => update_f32(views, f_pieces, e, params, grads, &c),
                    Unit::Q8(r) => update_q8(views, q_pieces, r, params, grads, &c),
                })??;
            }
            Ok(())
        })
    }

    fn state_bytes(&self) -> usize {
        self.f_len * 8 + self.q_len * 2 + self.q_len / QUANT_BLOCK * 8
    }

    fn save(&self) -> Result<OptimizerState> {
        let a = &self.alloc;
        let f32s = |b: PagedBuffer, n: usize| -> Result<StateTensor> {
            let mut out = vec![0.0f32; n];
            a.read_f32(b, 0, &mut out)?;
            Ok(StateTensor::F32(out))
        };
        let mut tensors = vec![("m".to_string(), f32s(self.m, self.f_len)?), ("v".into(), f32s(self.v, self.f_len)?)];
        if self.q_len > 0 {
            for (name, b) in [("m_q8", self.mq), ("v_q8", self.vq)] {
                let mut out = vec![0u8; self.q_len];
                a.read_bytes(b, 0, &mut out)?;
                tensors.push((name.into(), StateTensor::U8(out)));
            }
            let blocks = self.q_len / QUANT_BLOCK;
            tensors.push(("absmax_m".into(), f32s(self.absmax_m, blocks)?));
            tensors.push(("absmax_v".into(), f32s(self.absmax_v, blocks)?));
        }
        Ok(OptimizerState { kind: self.kind.into(), step: self.step, tensors })
    }

    fn load(&mut self, s: &OptimizerState) -> Result<()> {
        s.expect_kind(self.kind)?;
        let blocks = self.q_len / QUANT_BLOCK;
        // Validate everything before writing anything.
        let (m, v) = (s.f32("m", self.f_len)?, s.f32("v", self.f_len)?);
        let q = if self.q_len > 0 {
            Some((
                s.u8("m_q8", self.q_len)?,
                s.u8("v_q8", self.q_len)?,
                s.f32("absmax_m", blocks)?,
                s.f32("absmax_v", blocks)?,
            ))
        } else {
            None
        };
        self.alloc.write_f32(self.m, 0, m)?;
        self.alloc.write_f32(self.v, 0, v)?;
        if let Some((mq, vq, am, av)) = q {
            self.alloc.write_bytes(self.mq, 0, mq)?;
            self.alloc.write_bytes(self.vq, 0, vq)?;
            self.alloc.write_f32(self.absmax_m, 0, am)?;
            self.alloc.write_f32(self.absmax_v, 0, av)?;
        }
        self.step = s.step;
        Ok(())
    }
}

fn update_f32(
    views: &mut [PageViewMut<'_>],
    pieces: &[Piece],
    e: Range<usize>,
    params: &mut [f32],
    grads: &[f32],
    c: &AdamConsts,
) -> Result<()> {
    let [vm, vv] = views else {
        return Err(OptimError::Config("f32 unit expects two pages".into()));
    };
    let (m, v) = (vm.as_f32_mut()?, vv.as_f32_mut()?);
    for p in overlapping(pieces, e.clone()) {
        let s = p.state - e.start..p.state - e.start + p.len;
        let pr = p.param..p.param + p.len;
        adamw_kernel(&mut params[pr.clone()], &grads[pr], &mut m[s.clone()], &mut v[s], c);
    }
    Ok(())
}

fn update_q8(
    views: &mut [PageViewMut<'_>],
    pieces: &[Piece],
    r: Range<usize>,
    params: &mut [f32],
    grads: &[f32],
    c: &AdamConsts,
) -> Result<()> {
    let [vm, vv, vam, vav] = views else {
        return Err(OptimError::Config("8-bit unit expects four pages".into()));
    };
    let (am, av) = (vam.as_f32_mut()?, vav.as_f32_mut()?);
    let (mc, vc) = (vm.as_bytes_mut(), vv.as_bytes_mut());
    let first_block = r.start / QUANT_BLOCK;
    for p in overlapping(pieces, r.clone()) {
        // Pieces start on block boundaries, so blocks of a piece are whole blocks of the buffer.
        let (s, blk) = (p.state - r.start, p.state / QUANT_BLOCK - first_block);
        let nb = p.len.div_ceil(QUANT_BLOCK);
        let (mc, vc) = (&mut mc[s..s + p.len], &mut vc[s..s + p.len]);
        let (am, av) = (&mut am[blk..blk + nb], &mut av[blk..blk + nb]);
        let (pp, gp) = (&mut params[p.param..p.param + p.len], &grads[p.param..p.param + p.len]);
        let task = BLOCKS_PER_TASK * QUANT_BLOCK;
        pp.par_chunks_mut(task)
            .zip(gp.par_chunks(task))
            .zip(mc.par_chunks_mut(task).zip(vc.par_chunks_mut(task)))
            .zip(am.par_chunks_mut(BLOCKS_PER_TASK).zip(av.par_chunks_mut(BLOCKS_PER_TASK)))
            .for_each(|(((pt, gt), (mt, vt)), (amt, avt))| {
                adam8bit_blocks(pt, gt, mt, vt, amt, avt, c, QUANT_BLOCK, true);
            });
    }
    Ok(())
}

macro_rules! engine_optimizer {
    ($ty:ident, $name:literal) => {
        impl $ty {
            /// The allocator holding the state (traffic counters, residency).
            pub fn allocator(&self) -> &PagedAllocator {
                &self.0.alloc
            }
            pub fn stats(&self) -> Stats {
                self.0.alloc.stats()
            }
        }
        impl Optimizer for $ty {
            fn name(&self) -> &'static str {
                $name
            }
            fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<()> {
                self.0.step(params, grads, lr)
            }
            fn steps(&self) -> u64 {
                self.0.step
            }
            fn state_bytes(&self) -> usize {
                self.0.state_bytes()
            }
            fn save_state(&self) -> Result<OptimizerState> {
                self.0.save()
            }
            fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
                self.0.load(state)
            }
        }
    };
}

/// AdamW with 32-bit m and v in a paged allocator (`PagedAdamW32bit`). Same math, order and saved
/// state as [`super::AdamW`] (its state loads into `AdamW` and back).
pub struct PagedAdamW(Engine);

impl PagedAdamW {
    /// State for `n` parameters in `alloc` (e.g. `PagedAllocator::simulated(page, budget)`); a
    /// paging budget must hold at least 2 pages (a page of m and one of v are used together).
    pub fn new(cfg: AdamWConfig, n: usize, alloc: PagedAllocator) -> Result<Self> {
        Ok(Self(Engine::new("adamw", cfg, &[n], usize::MAX, alloc)?))
    }
}
engine_optimizer!(PagedAdamW, "adamw");

/// bitsandbytes' blockwise 8-bit AdamW (`AdamW8bit`; `PagedAdamW8bit` when given a paging
/// allocator). `segments` are the lengths of the tensors laid out back to back in the flat buffer:
/// quantization blocks start at each tensor, and tensors under [`MIN_8BIT_SIZE`] stay 32-bit.
pub struct AdamW8bit(Engine);

impl AdamW8bit {
    /// State in host memory.
    pub fn new(cfg: AdamWConfig, segments: &[usize]) -> Result<Self> {
        Self::paged(cfg, segments, PagedAllocator::host(DEFAULT_PAGE_SIZE)?)
    }
    /// State in `alloc`, whose page size must be a multiple of [`QUANT_BLOCK`]. A paging budget
    /// must hold 4 pages (m and v codes and their absmax pages are used together); 2 suffice when
    /// every tensor is under `min_8bit_size`.
    pub fn paged(cfg: AdamWConfig, segments: &[usize], alloc: PagedAllocator) -> Result<Self> {
        Self::with_min_8bit_size(cfg, segments, MIN_8BIT_SIZE, alloc)
    }
    /// As [`Self::paged`] with another small-tensor threshold (bnb's `min_8bit_size`).
    pub fn with_min_8bit_size(
        cfg: AdamWConfig,
        segments: &[usize],
        min_8bit_size: usize,
        alloc: PagedAllocator,
    ) -> Result<Self> {
        Ok(Self(Engine::new("adamw8bit", cfg, segments, min_8bit_size, alloc)?))
    }
}
engine_optimizer!(AdamW8bit, "adamw8bit");
