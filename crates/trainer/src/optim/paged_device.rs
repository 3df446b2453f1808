//! `paged-adamw` on CUDA: [`CudaPagedAdamW`], 32-bit AdamW whose m and v live in pages of
//! paged-alloc's CUDA managed-memory backend (`PagedAllocator::cuda`, one `cuMemAllocManaged`
//! allocation per page, as bitsandbytes' `PagedAdamW32bit` keeps its state in
//! `cudaMallocManaged` memory) and whose update is the GPU kernel of [`CudaAdamW`](super::CudaAdamW)
//! launched page by page on the managed addresses (`optim_ops::adamw_step_raw`).
//!
//! The walk is [`PagedState`]: the state in units of `page_size / 4` elements (a page of m with
//! its page of v, the units of the host [`PagedAdamW`](super::super::PagedAdamW), engine.rs), each
//! made resident by `with_pages_mut_prefetching` while the next unit's pages are prefetched
//! (`cuMemPrefetchAsync` on the allocator's stream, overlapping this unit's kernel). It is plain
//! host logic over any allocator, so the CPU tests run it on the simulated device.
//!
//! # Ordering (why the pages are valid for each launch)
//! The allocator's stream (page-ins and page-outs) and the tensors' stream (the kernels) are two
//! different streams, so ordering is made explicit: (1) the allocator synchronises its stream
//! after pinning a unit and before handing out its pages (`pin`), so every page-in of the unit
//! has completed when the kernel is queued; (2) when the state is larger than the residency
//! budget (pages can be evicted), the tensors' stream is synchronised after each unit's launch,
//! before the next access may page that unit out, so a page is never migrated away under a
//! running kernel (the next unit's prefetch, queued before the launch, still overlaps it);
//! (3) whatever the budget, the tensors' stream is synchronised before the allocator reads or
//! writes the pages (`save_state`, `load_state`) and before the pages are freed (`Drop`). When
//! the whole state is resident nothing is ever evicted, so a step queues its launches and
//! returns without waiting, like [`CudaAdamW`](super::CudaAdamW).
//!
//! # Budget
//! [`CudaPagedAdamW::new`] asks for no residency cap of its own: the budget is what the CUDA
//! backend allows, the device's free memory at creation less `paged_alloc::cuda::DEVICE_RESERVE`,
//! so the whole state stays resident when the device has room (one page-in per page, on the first
//! step; no traffic afterwards), which is what bitsandbytes' paged optimizers do in practice
//! (managed memory only moves under memory pressure). The host paged optimizer has no budget to
//! copy (`train::make_optimizer` gives it a host allocator). The backend refuses to create managed
//! memory beyond the device's free memory (oversubscription can stall the GPU), so a state that
//! does not fit is an error at creation and `make_tensor_optimizer` falls back to `Staged`.
//! [`CudaPagedAdamW::with_allocator`] takes any budget (tests use one smaller than the state).

use std::ops::Range;

use paged_alloc::{PageViewMut, PagedAllocator, PagedBuffer};

use super::super::{OptimError, OptimizerState, Result, StateTensor};

/// The units of the f32 state walk: element ranges of `elems_per_page` elements (the last one
/// shorter) covering `0..n`, each inside one page of m and of v (the host `PagedAdamW`'s units).
pub(crate) fn f32_units(n: usize, page_size: usize) -> Vec<Range<usize>> {
    let chunk = (page_size / 4).max(1);
    (0..n.div_ceil(chunk)).map(|i| i * chunk..((i + 1) * chunk).min(n)).collect()
}

/// m and v of `n` f32 parameters in a paged allocator, walked unit by unit (module docs).
pub(crate) struct PagedState {
    pub alloc: PagedAllocator,
    pub n: usize,
    m: PagedBuffer,
    v: PagedBuffer,
    units: Vec<Range<usize>>,
}

impl PagedState {
    /// Zeroed state for `n` parameters in `alloc`.
    pub fn new(n: usize, mut alloc: PagedAllocator) -> Result<Self> {
        let units = f32_units(n, alloc.page_size());
        let (m, v) = (alloc.alloc(n * 4)?, alloc.alloc(n * 4)?);
        Ok(Self { alloc, n, m, v, units })
    }

    /// Whether a page may be evicted during a walk: the state has more pages than the budget.
    pub fn pages_can_move(&self) -> bool {
        match self.alloc.budget_bytes() {
            None => false,
            Some(b) => self.alloc.total_pages() * self.alloc.page_size() > b,
        }
    }

    fn requests(&self, e: &Range<usize>) -> [(PagedBuffer, Range<usize>); 2] {
        [(self.m, e.start * 4..e.end * 4), (self.v, e.start * 4..e.end * 4)]
    }

    /// Calls `f(elements, m, v)` for every unit in order, with the unit's m and v pages resident
    /// (and the next unit's prefetching meanwhile). An error stops the walk.
    pub fn walk<F>(&mut self, mut f: F) -> Result<()>
    where
        F: FnMut(Range<usize>, &mut PageViewMut<'_>, &mut PageViewMut<'_>) -> Result<()> + Send,
    {
        for k in 0..self.units.len() {
            let e = self.units[k].clone();
            let reqs = self.requests(&e);
            let next = self.requests(&self.units[(k + 1) % self.units.len()]);
            let f = &mut f;
            self.alloc.with_pages_mut_prefetching(&reqs, &next, move |views| match views {
                [vm, vv] => f(e, vm, vv),
                _ => Err(OptimError::Config("paged adamw: a unit expects two pages".into())),
            })??;
        }
        Ok(())
    }

    /// `m` and `v` as saved by the host `AdamW`/`PagedAdamW` (kind `adamw`).
    pub fn save(&self, step: u64) -> Result<OptimizerState> {
        let f32s = |b: PagedBuffer| -> Result<StateTensor> {
            let mut out = vec![0.0f32; self.n];
            self.alloc.read_f32(b, 0, &mut out)?;
            Ok(StateTensor::F32(out))
        };
        Ok(OptimizerState {
            kind: "adamw".into(),
            step,
            tensors: vec![("m".into(), f32s(self.m)?), ("v".into(), f32s(self.v)?)],
        })
    }

    /// Validates `s` (kind `adamw`, `m` and `v` of `n` elements) before writing anything; returns
    /// its step count.
    pub fn load(&mut self, s: &OptimizerState) -> Result<u64> {
        s.expect_kind("adamw")?;
        let (m, v) = (s.f32("m", self.n)?, s.f32("v", self.n)?);
        self.alloc.write_f32(self.m, 0, m)?;
        self.alloc.write_f32(self.v, 0, v)?;
        Ok(s.step)
    }
}

#[cfg(feature = "cuda")]
pub use cuda::CudaPagedAdamW;

#[cfg(feature = "cuda")]
mod cuda {
    use std::sync::Arc;

    use paged_alloc::{PagedAllocator, DEFAULT_PAGE_SIZE};
    use tensor::cuda::{optim_ops, CudaDevice};
    use tensor::{Device, Tensor};

    use super::super::super::{AdamConsts, AdamWConfig, OptimError, OptimizerState, Result};
    use super::super::{check_operand, kernel_step, TensorOptimizer};
    use super::PagedState;

    /// bitsandbytes' `PagedAdamW32bit` on a GPU: m and v in CUDA managed-memory pages, one
    /// `adamw_fwd_f32` launch per page-sized unit on the managed addresses (module docs for the
    /// walk, the stream ordering and the budget). Bit-identical to [`PagedAdamW`] and
    /// [`AdamW`](super::super::super::AdamW) (the kernel of [`CudaAdamW`](super::super::CudaAdamW),
    /// elementwise, so splitting the launch changes nothing), saved as they save (kind `adamw`,
    /// `m`, `v`), so checkpoints move between devices and between the paged and unpaged
    /// optimizers.
    ///
    /// [`PagedAdamW`]: super::super::super::PagedAdamW
    pub struct CudaPagedAdamW {
        cfg: AdamWConfig,
        step: u64,
        device: Device,
        dev: Arc<CudaDevice>,
        state: PagedState,
        sync_each_unit: bool,
    }

    impl CudaPagedAdamW {
        /// Zeroed state for `n` parameters in managed memory of CUDA `device`, in
        /// [`DEFAULT_PAGE_SIZE`] pages, resident budget = the device's free memory less the
        /// backend's reserve (module docs). An error, never a panic, without a driver, on a
        /// device without concurrent managed access, or when the state does not fit.
        pub fn new(cfg: AdamWConfig, n: usize, device: Device) -> Result<Self> {
            let Device::Cuda(ordinal) = device else {
                return Err(OptimError::Config("CudaPagedAdamW::new: needs a CUDA device, got Cpu".into()));
            };
            let dev = tensor::cuda::select(device)?;
            // The emulator's device memory is host memory: its pages are host pages.
            let alloc = if dev.is_emulated() {
                PagedAllocator::host(DEFAULT_PAGE_SIZE)?
            } else {
                PagedAllocator::cuda(ordinal, DEFAULT_PAGE_SIZE, usize::MAX)?
            };
            Self::build(cfg, n, device, dev, alloc)
        }

        /// As [`Self::new`] with the state in `alloc`, which must be a `PagedAllocator::cuda`
        /// on `device`'s ordinal (checked: its backend is `cuda-managed`; on the CUDA emulator a
        /// host or simulated one), with a budget of at least two pages (a page of m and one of v
        /// are used together).
        pub fn with_allocator(cfg: AdamWConfig, n: usize, device: Device, alloc: PagedAllocator) -> Result<Self> {
            if !matches!(device, Device::Cuda(_)) {
                return Err(OptimError::Config("CudaPagedAdamW: needs a CUDA device, got Cpu".into()));
            }
            // On the emulator (whose device memory is host memory) host and simulated pages
            // stand in for managed ones.
            let emulated = tensor::cuda::emulated();
            let ok = match alloc.backend_name() {
                "cuda-managed" => true,
                "host" | "simulated" => emulated,
                _ => false,
            };
            if !ok {
                return Err(OptimError::Config(format!(
                    "CudaPagedAdamW: the state must be in CUDA managed memory, got a `{}` allocator",
                    alloc.backend_name()
                )));
            }
            let dev = tensor::cuda::select(device)?;
            Self::build(cfg, n, device, dev, alloc)
        }

        fn build(
            cfg: AdamWConfig,
            n: usize,
            device: Device,
            dev: Arc<CudaDevice>,
            alloc: PagedAllocator,
        ) -> Result<Self> {
            let state = PagedState::new(n, alloc)?;
            let sync_each_unit = state.pages_can_move();
            Ok(Self { cfg, step: 0, device, dev, state, sync_each_unit })
        }

        pub fn config(&self) -> &AdamWConfig {
            &self.cfg
        }
        pub fn device(&self) -> Device {
            self.device
        }
        pub fn len(&self) -> usize {
            self.state.n
        }
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }
        /// The allocator holding m and v (traffic counters, residency).
        pub fn allocator(&self) -> &PagedAllocator {
            &self.state.alloc
        }
        /// Whether the state is larger than the budget, so each launch is waited for before the
        /// next unit's access (module docs).
        pub fn pages_can_move(&self) -> bool {
            self.sync_each_unit
        }
    }

    impl TensorOptimizer for CudaPagedAdamW {
        fn name(&self) -> &'static str {
            "adamw"
        }
        fn step(&mut self, params: &mut Tensor, grads: &Tensor, lr: f32) -> Result<()> {
            const OP: &str = "cuda paged adamw step";
            let n = self.len();
            check_operand(OP, "params", params, self.device, n)?;
            check_operand(OP, "grads", grads, self.device, n)?;
            let c = kernel_step(&AdamConsts::new(&self.cfg, self.step + 1, lr));
            let (p, g, dev, sync) = (&*params, grads, &self.dev, self.sync_each_unit);
            self.state.walk(|e, m, v| {
                let (m_ptr, v_ptr) = (m.as_mut_ptr() as u64, v.as_mut_ptr() as u64);
                // SAFETY: m and v are the unit's pages of managed memory on `device` (checked at
                // construction), resident: the allocator synchronised its stream after paging
                // them in. They stay allocated and resident until the kernel has run: either
                // nothing is ever evicted (`sync` false; save/load/drop synchronise first), or
                // the device stream is synchronised below, before the next access may evict.
                unsafe { optim_ops::adamw_step_raw(p, g, e, m_ptr, v_ptr, c)? };
                if sync {
                    dev.synchronize()?;
                }
                Ok(())
            })?;
            self.step += 1;
            Ok(())
        }
        fn steps(&self) -> u64 {
            self.step
        }
        fn state_bytes(&self) -> usize {
            self.len() * 8
        }
        fn save_state(&self) -> Result<OptimizerState> {
            // The allocator copies on its own stream: wait for the launches that wrote the pages.
            self.dev.synchronize()?;
            self.state.save(self.step)
        }
        fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
            self.dev.synchronize()?;
            self.step = self.state.load(state)?;
            Ok(())
        }
    }

    impl Drop for CudaPagedAdamW {
        /// The pages are freed when the allocator drops (after this): no launch may still use them.
        fn drop(&mut self) {
            let _ = self.dev.synchronize();
        }
    }
}
