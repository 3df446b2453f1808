//! The tensor optimizers on CPU tensors: [`Staged`] over each host optimizer *is* that optimizer
//! (parameters and saved state bit for bit), its update lands in the same storage when the tensor
//! holds it alone, bad operands are errors that change nothing, the gradient norm and clipping
//! on tensors are the host functions' (NaN and inf included), and the launch plan of
//! `CudaAdamW8bit`, run here with the host kernels in its per-run slices, reproduces `AdamW8bit`
//! bit for bit, and the page walk of `CudaPagedAdamW` (`PagedState`), run here on the simulated
//! device with the host kernel on its pages, is `PagedAdamW`'s walk (same units, same traffic,
//! same bits) for budgets below and above the state (the CUDA twins of these tests are
//! crates/trainer/tests/cuda_optim.rs).

use std::sync::Arc;

use tensor::{DType, Device, Rng, Tensor};

use super::adam8bit_simd::adam8bit_blocks;
use super::adamw::adamw_kernel;
use super::device::{f32_units, PagedState, Plan, Run};
use super::*;
use crate::train::make_optimizer;

/// Mixed sizes: 8-bit tensors not a multiple of the block, 8-bit neighbours that merge into one
/// launch, 32-bit ones between and at the end (engine.rs's rules).
const SEGMENTS: &[usize] = &[5000, 300, 4096, 8192, 4500, 7, 1000, 6000];
const NAMES: [&str; 3] = ["adamw", "paged-adamw", "paged-adamw-8bit"];

fn cfg() -> AdamWConfig {
    AdamWConfig { weight_decay: 0.01, ..AdamWConfig::default() }
}

fn randn(n: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal() * std).collect()
}

fn flat(v: &[f32]) -> Tensor {
    Tensor::from_slice(v, [v.len()]).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Gradients of step `s`, with a NaN and an inf at step 2 (8-bit skips them, 32-bit propagates).
fn grads_at(n: usize, s: u64) -> Vec<f32> {
    let mut g = randn(n, 0.01, 100 + s);
    if s == 2 {
        g[3] = f32::NAN;
        g[n - 2] = f32::INFINITY;
    }
    g
}

/// `got` and `want` are the same saved state bit for bit (NaN state from NaN gradients
/// included); a failure names the first differing buffer and element, not the whole state.
#[track_caller]
fn assert_same_state(got: &OptimizerState, want: &OptimizerState, what: &str) {
    assert_eq!((&got.kind, got.step), (&want.kind, want.step), "{what}: kind and step");
    let names = |s: &OptimizerState| s.tensors.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: buffer names");
    for ((name, g), (_, w)) in got.tensors.iter().zip(&want.tensors) {
        let (g, w): (Vec<u32>, Vec<u32>) = match (g, w) {
            (StateTensor::F32(g), StateTensor::F32(w)) => (bits(g), bits(w)),
            (StateTensor::U8(g), StateTensor::U8(w)) => {
                (g.iter().map(|&b| b as u32).collect(), w.iter().map(|&b| b as u32).collect())
            }
            _ => panic!("{what}: `{name}` has another element type"),
        };
        assert_eq!(g.len(), w.len(), "{what}: `{name}` length");
        if let Some(i) = (0..g.len()).find(|&i| g[i] != w[i]) {
            panic!("{what}: `{name}`[{i}] is {:#x}, want {:#x} (bits)", g[i], w[i]);
        }
    }
}

fn lr_at(s: u64) -> f32 {
    1e-3 * (1.0 - 0.1 * s as f32)
}

#[test]
fn staged_is_the_host_optimizer_bit_for_bit() {
    let n: usize = SEGMENTS.iter().sum();
    for name in NAMES {
        let mut host = make_optimizer(name, SEGMENTS, cfg()).unwrap();
        let mut dev = make_tensor_optimizer(name, SEGMENTS, cfg(), Device::Cpu).unwrap();
        assert_eq!(dev.name(), host.name(), "{name}");
        let mut p_host = randn(n, 0.1, 1);
        let mut p = flat(&p_host);
        for s in 0..5 {
            let g = grads_at(n, s);
            host.step(&mut p_host, &g, lr_at(s)).unwrap();
            dev.step(&mut p, &flat(&g), lr_at(s)).unwrap();
            assert_eq!(bits(&p.to_vec::<f32>().unwrap()), bits(&p_host), "{name}: params after step {s}");
            assert_same_state(
                &dev.save_state().unwrap(),
                &host.save_state().unwrap(),
                &format!("{name}: state after step {s}"),
            );
            assert_eq!((dev.steps(), dev.state_bytes()), (host.steps(), host.state_bytes()), "{name}");
        }
    }
}

#[test]
fn staged_updates_the_storage_it_holds_alone_and_never_writes_under_other_handles() {
    let n = 3000;
    let (p0, g) = (randn(n, 0.1, 2), randn(n, 0.01, 3));
    let mut want = p0.clone();
    AdamW::new(cfg(), n).step(&mut want, &g, 1e-3).unwrap();

    // Alone: the same allocation, updated.
    let mut opt = Staged::new(Box::new(AdamW::new(cfg(), n)));
    let mut p = flat(&p0);
    let (arc, data) = (Arc::as_ptr(p.storage()), p.as_slice::<f32>().unwrap().as_ptr());
    opt.step(&mut p, &flat(&g), 1e-3).unwrap();
    assert_eq!(Arc::as_ptr(p.storage()), arc, "storage replaced although the tensor held it alone");
    assert_eq!(p.as_slice::<f32>().unwrap().as_ptr(), data);
    assert_eq!(bits(p.as_slice::<f32>().unwrap()), bits(&want));

    // A contiguous view at an offset, alone on its storage: only its elements change.
    let mut big = randn(n + 10, 0.1, 4);
    big[5..5 + n].copy_from_slice(&p0);
    let mut view = flat(&big).narrow(0, 5, n).unwrap();
    let mut opt = Staged::new(Box::new(AdamW::new(cfg(), n)));
    opt.step(&mut view, &flat(&g), 1e-3).unwrap();
    assert_eq!(view.layout().offset(), 5);
    assert_eq!(bits(&view.to_vec::<f32>().unwrap()), bits(&want));

    // Shared: `p` gets the update in fresh storage, the other handle keeps the old values.
    let mut opt = Staged::new(Box::new(AdamW::new(cfg(), n)));
    let mut p = flat(&p0);
    let other = p.clone();
    opt.step(&mut p, &flat(&g), 1e-3).unwrap();
    assert!(!p.same_storage(&other));
    assert_eq!(bits(&p.to_vec::<f32>().unwrap()), bits(&want));
    assert_eq!(bits(&other.to_vec::<f32>().unwrap()), bits(&p0));

    // Gradients that view the parameters' own storage are read before anything is written.
    let mut opt = Staged::new(Box::new(AdamW::new(cfg(), n)));
    let both = flat(&[p0.clone(), g.clone()].concat());
    let mut p = both.narrow(0, 0, n).unwrap();
    let gv = both.narrow(0, n, n).unwrap();
    opt.step(&mut p, &gv, 1e-3).unwrap();
    assert_eq!(bits(&p.to_vec::<f32>().unwrap()), bits(&want));
    assert_eq!(bits(&gv.to_vec::<f32>().unwrap()), bits(&g));
}

#[test]
fn bad_operands_are_errors_that_change_nothing() {
    let n = 64;
    let p0 = randn(n, 0.1, 5);
    let mut opt = make_tensor_optimizer("adamw", &[n], cfg(), Device::Cpu).unwrap();
    let g = flat(&randn(n, 0.01, 6));
    let cases: Vec<(&str, Tensor, Tensor)> = vec![
        ("bf16 params", flat(&p0).to_dtype(DType::BF16).unwrap(), g.clone()),
        ("strided params", flat(&p0).reshape([8, 8]).unwrap().t().unwrap(), g.clone()),
        ("short params", flat(&p0[..n - 1]), g.clone()),
        ("short grads", flat(&p0), g.narrow(0, 0, n - 1).unwrap()),
        ("f16 grads", flat(&p0), g.to_dtype(DType::F16).unwrap()),
    ];
    for (what, mut p, g) in cases {
        let before = p.to_vec_f32().unwrap();
        let e = opt.step(&mut p, &g, 1e-3).unwrap_err();
        assert!(matches!(e, OptimError::Tensor(_) | OptimError::Length { .. }), "{what}: {e}");
        assert_eq!(bits(&p.to_vec_f32().unwrap()), bits(&before), "{what}: params changed");
        assert_eq!(opt.steps(), 0, "{what}: step counted");
    }
}

#[test]
fn staged_state_round_trips_with_the_host_optimizer() {
    let n: usize = SEGMENTS.iter().sum();
    for name in NAMES {
        let mut host = make_optimizer(name, SEGMENTS, cfg()).unwrap();
        let mut p_host = randn(n, 0.1, 7);
        for s in 0..2 {
            host.step(&mut p_host, &grads_at(n, s), lr_at(s)).unwrap();
        }
        let mut dev = make_tensor_optimizer(name, SEGMENTS, cfg(), Device::Cpu).unwrap();
        dev.load_state(&host.save_state().unwrap()).unwrap();
        let mut p = flat(&p_host);
        for s in 2..4 {
            let g = grads_at(n, s);
            host.step(&mut p_host, &g, lr_at(s)).unwrap();
            dev.step(&mut p, &flat(&g), lr_at(s)).unwrap();
        }
        assert_eq!(bits(&p.to_vec::<f32>().unwrap()), bits(&p_host), "{name}");
        assert_same_state(&dev.save_state().unwrap(), &host.save_state().unwrap(), name);
    }
}

#[test]
fn grad_norm_and_clip_on_tensors_are_the_host_functions() {
    let g = randn(10_001, 0.5, 8);
    let norm = global_grad_norm(&g);
    assert_eq!(grad_norm_tensor(&flat(&g)).unwrap().to_bits(), norm.to_bits());
    // A strided view: the norm of its elements.
    let m = flat(&g[..10_000]).reshape([100, 100]).unwrap().t().unwrap();
    assert_eq!(grad_norm_tensor(&m).unwrap().to_bits(), global_grad_norm(&m.to_vec::<f32>().unwrap()).to_bits());

    for max_norm in [0.1 * norm, norm, 10.0 * norm] {
        let mut want = g.clone();
        let want_norm = clip_grad_norm(&mut want, max_norm);
        let mut t = flat(&g);
        let got_norm = clip_grad_norm_tensor(&mut t, max_norm).unwrap();
        assert_eq!(got_norm.to_bits(), want_norm.to_bits(), "max_norm {max_norm}");
        assert_eq!(bits(&t.to_vec::<f32>().unwrap()), bits(&want), "max_norm {max_norm}");
    }
    for bad in [f32::NAN, f32::INFINITY] {
        let mut gb = g.clone();
        gb[17] = bad;
        let mut t = flat(&gb);
        let got = clip_grad_norm_tensor(&mut t, 1e-3).unwrap();
        assert!(!got.is_finite());
        assert_eq!(got.to_bits(), global_grad_norm(&gb).to_bits());
        assert_eq!(bits(&t.to_vec::<f32>().unwrap()), bits(&gb), "non-finite norm must leave grads alone");
    }
    let e = grad_norm_tensor(&flat(&g).to_dtype(DType::BF16).unwrap()).unwrap_err();
    assert!(matches!(e, OptimError::Tensor(_)), "{e}");
    let mut strided = m.clone();
    assert!(clip_grad_norm_tensor(&mut strided, 1.0).is_err());
}

#[test]
fn make_tensor_optimizer_names_and_devices() {
    for name in NAMES {
        let o = make_tensor_optimizer(name, SEGMENTS, cfg(), Device::Cpu).unwrap();
        assert_eq!(o.name(), make_optimizer(name, SEGMENTS, cfg()).unwrap().name());
    }
    let e = make_tensor_optimizer("sgd", SEGMENTS, cfg(), Device::Cpu).err().unwrap();
    assert!(e.contains("is not one of"), "{e}");
    #[cfg(not(feature = "cuda"))]
    {
        let e = make_tensor_optimizer("adamw", SEGMENTS, cfg(), Device::Cuda(0)).err().unwrap();
        assert!(e.contains("feature `cuda`"), "{e}");
    }
    #[cfg(feature = "cuda")]
    if !tensor::cuda::driver_present() {
        // No GPU here: an error, never a panic, whichever optimizer.
        for name in NAMES {
            let r = make_tensor_optimizer(name, SEGMENTS, cfg(), Device::Cuda(0));
            assert!(name != "adamw" || r.is_err(), "{name}");
        }
        assert!(CudaAdamW8bit::new(cfg(), SEGMENTS, Device::Cuda(0)).is_err());
        let g = flat(&[1.0, 2.0]);
        assert!(g.to_device(Device::Cuda(0)).is_err());
    }
}

/// The launch plan of `CudaAdamW8bit` for [`SEGMENTS`]: 8-bit runs merge only across tensors
/// that fill whole blocks, 32-bit runs across adjacent small tensors.
#[test]
fn the_8bit_launch_plan_follows_the_engine_layout() {
    let p = Plan::new(SEGMENTS, MIN_8BIT_SIZE);
    let r = |param, state, len| Run { param, state, len };
    assert_eq!(p.n, SEGMENTS.iter().sum::<usize>());
    assert_eq!(p.q_runs, vec![r(0, 0, 5000), r(5300, 5120, 4096 + 8192 + 4500), r(23095, 22016, 6000)]);
    assert_eq!(p.q_len, 5120 + 4096 + 8192 + 4608 + 6144);
    assert_eq!(p.f_runs, vec![r(5000, 0, 300), r(22088, 300, 1007)]);
    assert_eq!(p.f_len, 1307);
    // Empty tensors take no state and do not break a run.
    let p = Plan::new(&[512, 0, 256, 0, 3, 0, 4], 256);
    assert_eq!(p.q_runs, vec![r(0, 0, 768)]);
    assert_eq!(p.f_runs, vec![r(768, 0, 7)]);
}

/// `CudaAdamW8bit::step` with the host kernels in place of the launches: the same plan, the same
/// per-run slices (kernel blocks counted from each run's start), the same saved names.
struct PlanOnHost {
    cfg: AdamWConfig,
    step: u64,
    plan: Plan,
    m: Vec<f32>,
    v: Vec<f32>,
    mq: Vec<u8>,
    vq: Vec<u8>,
    am: Vec<f32>,
    av: Vec<f32>,
}

impl PlanOnHost {
    fn new(segments: &[usize], min_8bit: usize) -> Self {
        let plan = Plan::new(segments, min_8bit);
        let (f, q, b) = (plan.f_len, plan.q_len, plan.q_len / QUANT_BLOCK);
        Self {
            cfg: cfg(),
            step: 0,
            plan,
            m: vec![0.0; f],
            v: vec![0.0; f],
            mq: vec![0; q],
            vq: vec![0; q],
            am: vec![0.0; b],
            av: vec![0.0; b],
        }
    }
    fn step(&mut self, p: &mut [f32], g: &[f32], lr: f32) {
        self.step += 1;
        let c = AdamConsts::new(&self.cfg, self.step, lr);
        for r in &self.plan.f_runs {
            let (pr, sr) = (r.param..r.param + r.len, r.state..r.state + r.len);
            adamw_kernel(&mut p[pr.clone()], &g[pr], &mut self.m[sr.clone()], &mut self.v[sr], &c);
        }
        for r in &self.plan.q_runs {
            let (pr, sr) = (r.param..r.param + r.len, r.state..r.state + r.len);
            let br = r.state / QUANT_BLOCK..r.state / QUANT_BLOCK + r.len.div_ceil(QUANT_BLOCK);
            let (am, av) = (&mut self.am[br.clone()], &mut self.av[br]);
            let (mq, vq) = (&mut self.mq[sr.clone()], &mut self.vq[sr]);
            adam8bit_blocks(&mut p[pr.clone()], &g[pr], mq, vq, am, av, &c, QUANT_BLOCK, false);
        }
    }
    fn save(&self) -> OptimizerState {
        let mut tensors =
            vec![("m".to_string(), StateTensor::F32(self.m.clone())), ("v".into(), StateTensor::F32(self.v.clone()))];
        if self.plan.q_len > 0 {
            tensors.push(("m_q8".into(), StateTensor::U8(self.mq.clone())));
            tensors.push(("v_q8".into(), StateTensor::U8(self.vq.clone())));
            tensors.push(("absmax_m".into(), StateTensor::F32(self.am.clone())));
            tensors.push(("absmax_v".into(), StateTensor::F32(self.av.clone())));
        }
        OptimizerState { kind: "adamw8bit".into(), step: self.step, tensors }
    }
}

#[test]
fn the_8bit_launch_plan_on_host_kernels_is_adamw8bit_bit_for_bit() {
    let cases: [(&[usize], usize); 4] = [
        (SEGMENTS, MIN_8BIT_SIZE),
        (&[256, 512, 300, 100, 1024, 50], 256),
        (&[10, 20, 30], MIN_8BIT_SIZE),
        (&[4096 * 3 + 1], MIN_8BIT_SIZE),
    ];
    for (segments, min_8bit) in cases {
        let n: usize = segments.iter().sum();
        let alloc = paged_alloc::PagedAllocator::host(paged_alloc::DEFAULT_PAGE_SIZE).unwrap();
        let mut host = AdamW8bit::with_min_8bit_size(cfg(), segments, min_8bit, alloc).unwrap();
        let mut emu = PlanOnHost::new(segments, min_8bit);
        let (mut ph, mut pe) = (randn(n, 0.1, 9), randn(n, 0.1, 9));
        for s in 0..5 {
            let g = grads_at(n, s);
            host.step(&mut ph, &g, lr_at(s)).unwrap();
            emu.step(&mut pe, &g, lr_at(s));
            assert_eq!(bits(&pe), bits(&ph), "{segments:?}: params after step {s}");
            assert_same_state(&emu.save(), &host.save_state().unwrap(), &format!("{segments:?}: state after step {s}"));
        }
    }
}

/// The units of the paged CUDA walk: page-sized runs of elements covering the state in order,
/// each inside one page of m and of v (the host `PagedAdamW`'s units, engine.rs).
#[test]
fn the_paged_walk_units_cover_the_state_page_by_page() {
    for (n, ps) in [(0, 4096), (1, 4096), (1024, 4096), (1025, 4096), (1_000_003, 65_536), (5 << 20, 2 << 20)] {
        let units = f32_units(n, ps);
        assert_eq!(units.len(), (n * 4).div_ceil(ps), "n={n} ps={ps}: one unit per page");
        let mut at = 0;
        for u in &units {
            assert_eq!(u.start, at, "n={n}: units in order, no gap");
            assert!(u.end > u.start && u.end - u.start <= ps / 4, "n={n}: {u:?}");
            assert_eq!(u.start * 4 / ps, (u.end * 4 - 1) / ps, "n={n}: {u:?} crosses a page");
            at = u.end;
        }
        assert_eq!(at, n, "n={n}: the units cover the state");
    }
}

/// `PagedState::walk` with the host kernel on each unit's pages is `PagedAdamW` bit for bit
/// (params and saved state), with the same page traffic, on the simulated device: budgets of two
/// pages (a unit), three, and the whole state; NaN/inf gradients included.
#[test]
fn the_paged_walk_on_host_kernels_is_paged_adamw_bit_for_bit() {
    const PS: usize = 4096;
    let n = 10 * 1024 + 77; // 11 pages of m, 11 of v
    for budget_pages in [2, 3, 22, 64] {
        let sim = || paged_alloc::PagedAllocator::simulated(PS, budget_pages * PS).unwrap();
        let mut host = PagedAdamW::new(cfg(), n, sim()).unwrap();
        let mut walk = PagedState::new(n, sim()).unwrap();
        assert_eq!(walk.pages_can_move(), budget_pages < 22, "budget {budget_pages}");
        let p0 = randn(n, 0.1, 11);
        let (mut ph, mut pw) = (p0.clone(), p0);
        for s in 0..5 {
            let g = grads_at(n, s);
            host.step(&mut ph, &g, lr_at(s)).unwrap();
            let c = AdamConsts::new(&cfg(), s + 1, lr_at(s));
            let (p, g) = (&mut pw, &g);
            walk.walk(|e, m, v| {
                adamw_kernel(&mut p[e.clone()], &g[e], m.as_f32_mut()?, v.as_f32_mut()?, &c);
                Ok(())
            })
            .unwrap();
            let what = format!("budget {budget_pages} pages, step {s}");
            assert_eq!(bits(&pw), bits(&ph), "{what}: params");
            assert_same_state(&walk.save(s + 1).unwrap(), &host.save_state().unwrap(), &what);
            assert_eq!(walk.alloc.stats(), host.stats(), "{what}: page traffic");
        }
        // And the state loads back (validated first: a wrong kind or length writes nothing).
        let saved = host.save_state().unwrap();
        let mut other = PagedState::new(n, sim()).unwrap();
        let mut bad = saved.clone();
        bad.kind = "adamw8bit".into();
        assert!(other.load(&bad).is_err());
        assert!(other.load(&OptimizerState { tensors: vec![], ..saved.clone() }).is_err());
        assert_eq!(other.load(&saved).unwrap(), 5);
        assert_same_state(&other.save(5).unwrap(), &saved, "loaded");
    }
}
