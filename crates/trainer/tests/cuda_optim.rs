//! The optimizers on CUDA tensors (feature `cuda`) against their host twins, bit for bit:
//! `CudaAdamW` vs `AdamW` over 5 steps with weight decay, `CudaAdamW8bit` vs `AdamW8bit` over mixed
//! segments with NaN/inf gradients and a run longer than one grid, a checkpoint saved on CUDA
//! resumed on the CPU (and back) identically, the gradient norm and clipping vs the host
//! functions, `CudaPagedAdamW` (m and v in CUDA managed pages) vs `PagedAdamW` over 5 steps with a
//! state larger than its residency budget and its checkpoints moving between devices, the paged
//! optimizers from `make_tensor_optimizer` writing into the same device storage, and bad operands
//! as errors. Each GPU test is `#[ignore]`d, so a machine without a GPU reports them ignored;
//! run explicitly without a CUDA driver they print `SKIPPED: no CUDA driver` and return
//! (`scripts/gpu-check.sh` runs them with `--include-ignored` and fails on that line).
#![cfg(feature = "cuda")]

use paged_alloc::PagedAllocator;
use tensor::{DType, Device, Rng, Tensor};
use trainer::optim::device::CudaPagedAdamW;
use trainer::optim::{
    clip_grad_norm, clip_grad_norm_tensor, global_grad_norm, grad_norm_tensor, make_tensor_optimizer, AdamW, AdamW8bit,
    AdamWConfig, CudaAdamW, CudaAdamW8bit, Optimizer, OptimizerState, PagedAdamW, StateTensor, TensorOptimizer,
};
use trainer::train::make_optimizer;

const CUDA: Device = Device::Cuda(0);
/// Mixed sizes: 8-bit tensors off the block size, 8-bit neighbours merged into one launch,
/// 32-bit ones between and at the end.
const SEGMENTS: &[usize] = &[5000, 300, 4096, 8192, 4500, 7, 1000, 6000];
/// More than 65535 blocks of 256 (the launch's grid cap), so the kernels' grid-stride loops run.
const BIG: usize = 65_535 * 256 + 1_000;

/// True when a CUDA test can run; otherwise prints the SKIPPED line gpu-check.sh looks for.
fn cuda_ready(test: &str) -> bool {
    if tensor::cuda::driver_present() {
        return true;
    }
    println!("SKIPPED: no CUDA driver ({test}: nothing compared)");
    false
}

fn cfg() -> AdamWConfig {
    AdamWConfig { weight_decay: 0.01, ..AdamWConfig::default() }
}

fn randn(n: usize, std: f32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal() * std).collect()
}

fn on(v: &[f32], dev: Device) -> Tensor {
    Tensor::from_slice(v, [v.len()]).unwrap().to_device(dev).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn down(t: &Tensor) -> Vec<f32> {
    t.to_vec::<f32>().unwrap()
}

/// Gradients of step `s`; at step 2 a NaN and an inf (8-bit skips them, 32-bit propagates).
fn grads_at(n: usize, s: u64, nonfinite: bool) -> Vec<f32> {
    let mut g = randn(n, 0.01, 100 + s);
    if nonfinite && s == 2 {
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

/// `steps` steps of `dev` (on CUDA tensors) and `host` side by side from the same parameters,
/// comparing parameters and saved state after each; returns both parameter sets.
fn run_side_by_side(
    what: &str,
    dev: &mut dyn TensorOptimizer,
    host: &mut dyn Optimizer,
    p0: &[f32],
    steps: std::ops::Range<u64>,
    nonfinite: bool,
) -> (Tensor, Vec<f32>) {
    let (mut p, mut ph) = (on(p0, CUDA), p0.to_vec());
    let view = p.narrow(0, 1, 10).unwrap(); // shares the storage: must see every update
    for s in steps {
        let g = grads_at(p0.len(), s, nonfinite);
        host.step(&mut ph, &g, lr_at(s)).unwrap();
        dev.step(&mut p, &on(&g, CUDA), lr_at(s)).unwrap();
        assert_eq!(p.device(), CUDA, "{what}: params left the device");
        assert_eq!(bits(&down(&p)), bits(&ph), "{what}: params after step {s}");
        assert_eq!(bits(&down(&view)), bits(&ph[1..11]), "{what}: a view of the params missed step {s}");
        assert_same_state(
            &dev.save_state().unwrap(),
            &host.save_state().unwrap(),
            &format!("{what}: state after step {s}"),
        );
        assert_eq!((dev.steps(), dev.state_bytes()), (host.steps(), host.state_bytes()), "{what}");
    }
    (p, ph)
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn cuda_adamw_is_adamw_bit_for_bit_over_5_steps_with_weight_decay() {
    if !cuda_ready("cuda_adamw_is_adamw_bit_for_bit_over_5_steps_with_weight_decay") {
        return;
    }
    for (n, nonfinite) in [(1_000_003, true), (BIG, false)] {
        let mut dev = CudaAdamW::new(cfg(), n, CUDA).unwrap();
        let mut host = AdamW::new(cfg(), n);
        run_side_by_side(&format!("adamw n={n}"), &mut dev, &mut host, &randn(n, 0.1, 1), 0..5, nonfinite);
    }
    // No weight decay: the kernel's other branch.
    let n = 4099;
    let cfg0 = AdamWConfig::default();
    let (mut dev, mut host) = (CudaAdamW::new(cfg0, n, CUDA).unwrap(), AdamW::new(cfg0, n));
    run_side_by_side("adamw wd=0", &mut dev, &mut host, &randn(n, 0.1, 2), 0..5, true);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn cuda_adamw8bit_is_adamw8bit_bit_for_bit() {
    if !cuda_ready("cuda_adamw8bit_is_adamw8bit_bit_for_bit") {
        return;
    }
    const MIN: usize = trainer::optim::MIN_8BIT_SIZE;
    let big = [300, BIG, 7];
    // (segments, min_8bit_size, NaN/inf gradients at step 2)
    let cases: [(&[usize], usize, bool); 4] = [
        (SEGMENTS, MIN, true),
        (&[256, 512, 300, 100, 1024, 50], 256, true),
        (&[10, 20, 30], MIN, true),
        (&big, MIN, false),
    ];
    for (segments, min, nonfinite) in cases {
        let n: usize = segments.iter().sum();
        let alloc = paged_alloc::PagedAllocator::host(paged_alloc::DEFAULT_PAGE_SIZE).unwrap();
        let mut host = AdamW8bit::with_min_8bit_size(cfg(), segments, min, alloc).unwrap();
        let mut dev = CudaAdamW8bit::with_min_8bit_size(cfg(), segments, min, CUDA).unwrap();
        println!("{segments:?}: {} launches per step", dev.launches_per_step());
        run_side_by_side(&format!("adamw8bit {segments:?}"), &mut dev, &mut host, &randn(n, 0.1, 3), 0..5, nonfinite);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn a_checkpoint_saved_on_cuda_resumes_on_the_cpu_and_back_identically() {
    if !cuda_ready("a_checkpoint_saved_on_cuda_resumes_on_the_cpu_and_back_identically") {
        return;
    }
    let n: usize = SEGMENTS.iter().sum();
    let p0 = randn(n, 0.1, 4);
    for name in ["adamw", "adamw8bit"] {
        let new_dev = || -> Box<dyn TensorOptimizer> {
            match name {
                "adamw" => Box::new(CudaAdamW::new(cfg(), n, CUDA).unwrap()),
                _ => Box::new(CudaAdamW8bit::new(cfg(), SEGMENTS, CUDA).unwrap()),
            }
        };
        let new_host = || -> Box<dyn Optimizer> {
            match name {
                "adamw" => Box::new(AdamW::new(cfg(), n)),
                _ => Box::new(AdamW8bit::new(cfg(), SEGMENTS).unwrap()),
            }
        };
        // An uninterrupted run on the host, the reference.
        let mut reference = new_host();
        let mut p_ref = p0.clone();
        for s in 0..6 {
            reference.step(&mut p_ref, &grads_at(n, s, true), lr_at(s)).unwrap();
        }
        // Steps 0..2 on CUDA, saved; 2..4 on the CPU from that state; 4..6 on CUDA again.
        let mut dev = new_dev();
        let mut p = on(&p0, CUDA);
        for s in 0..2 {
            dev.step(&mut p, &on(&grads_at(n, s, true), CUDA), lr_at(s)).unwrap();
        }
        let mut cpu = new_host();
        cpu.load_state(&dev.save_state().unwrap()).unwrap();
        let mut ph = down(&p);
        for s in 2..4 {
            cpu.step(&mut ph, &grads_at(n, s, true), lr_at(s)).unwrap();
        }
        let mut dev2 = new_dev();
        dev2.load_state(&cpu.save_state().unwrap()).unwrap();
        let mut p2 = on(&ph, CUDA);
        for s in 4..6 {
            dev2.step(&mut p2, &on(&grads_at(n, s, true), CUDA), lr_at(s)).unwrap();
        }
        assert_eq!(bits(&down(&p2)), bits(&p_ref), "{name}: params after CUDA -> CPU -> CUDA");
        assert_same_state(&dev2.save_state().unwrap(), &reference.save_state().unwrap(), &format!("{name}: state"));
    }
}

/// 64 KiB managed pages, 4 of them resident: a state of n = 1_000_003 (8 MB of m and v) pages
/// through a 256 KiB budget, two units at a time.
const SMALL_PAGE: usize = 64 << 10;
/// On the CUDA emulator, whose device memory is host memory, the simulated device's pages.
fn small_budget() -> PagedAllocator {
    if tensor::cuda::emulated() {
        return PagedAllocator::simulated(SMALL_PAGE, 4 * SMALL_PAGE).unwrap();
    }
    PagedAllocator::cuda(0, SMALL_PAGE, 4 * SMALL_PAGE).unwrap()
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn cuda_paged_adamw_is_paged_adamw_bit_for_bit_with_a_state_larger_than_the_budget() {
    if !cuda_ready("cuda_paged_adamw_is_paged_adamw_bit_for_bit_with_a_state_larger_than_the_budget") {
        return;
    }
    let n = 1_000_003;
    let p0 = randn(n, 0.1, 12);
    // Paged through a small budget; the host twin pages through the same budget (simulated).
    let mut dev = CudaPagedAdamW::with_allocator(cfg(), n, CUDA, small_budget()).unwrap();
    assert!(dev.pages_can_move());
    let sim = PagedAllocator::simulated(SMALL_PAGE, 4 * SMALL_PAGE).unwrap();
    let mut host = PagedAdamW::new(cfg(), n, sim).unwrap();
    run_side_by_side("cuda paged adamw, small budget", &mut dev, &mut host, &p0, 0..5, true);
    let st = dev.allocator().stats();
    println!("small budget: {st:?}");
    assert!(
        st.evictions > 0 && st.pages_in as usize > 4 * 2 * (n * 4).div_ceil(SMALL_PAGE),
        "the state did not page: {st:?}"
    );
    assert_eq!(st, host.stats(), "the same walk moves the same pages");
    // The default budget: the whole state resident, no eviction.
    let mut dev = CudaPagedAdamW::new(cfg(), n, CUDA).unwrap();
    assert!(!dev.pages_can_move());
    let mut host = PagedAdamW::new(cfg(), n, PagedAllocator::host(paged_alloc::DEFAULT_PAGE_SIZE).unwrap()).unwrap();
    run_side_by_side("cuda paged adamw, default budget", &mut dev, &mut host, &p0, 0..5, true);
    assert_eq!(dev.allocator().stats().evictions, 0);
    // No weight decay, and the unpaged AdamW as the twin.
    let cfg0 = AdamWConfig::default();
    let mut dev = CudaPagedAdamW::with_allocator(cfg0, 4099, CUDA, small_budget()).unwrap();
    run_side_by_side("cuda paged adamw wd=0", &mut dev, &mut AdamW::new(cfg0, 4099), &randn(4099, 0.1, 13), 0..5, true);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn a_cuda_paged_adamw_checkpoint_moves_between_devices_and_optimizers() {
    if !cuda_ready("a_cuda_paged_adamw_checkpoint_moves_between_devices_and_optimizers") {
        return;
    }
    let n = 300_001;
    let p0 = randn(n, 0.1, 14);
    let mut reference = AdamW::new(cfg(), n);
    let mut p_ref = p0.clone();
    for s in 0..8 {
        reference.step(&mut p_ref, &grads_at(n, s, true), lr_at(s)).unwrap();
    }
    // 0..2 paged on CUDA (small budget), 2..4 on the host PagedAdamW, 4..6 on CudaAdamW,
    // 6..8 paged on CUDA again (default budget).
    let mut dev = CudaPagedAdamW::with_allocator(cfg(), n, CUDA, small_budget()).unwrap();
    let mut p = on(&p0, CUDA);
    for s in 0..2 {
        dev.step(&mut p, &on(&grads_at(n, s, true), CUDA), lr_at(s)).unwrap();
    }
    let mut cpu = PagedAdamW::new(cfg(), n, PagedAllocator::host(paged_alloc::DEFAULT_PAGE_SIZE).unwrap()).unwrap();
    cpu.load_state(&dev.save_state().unwrap()).unwrap();
    drop(dev);
    let mut ph = down(&p);
    for s in 2..4 {
        cpu.step(&mut ph, &grads_at(n, s, true), lr_at(s)).unwrap();
    }
    let mut unpaged = CudaAdamW::new(cfg(), n, CUDA).unwrap();
    unpaged.load_state(&cpu.save_state().unwrap()).unwrap();
    let mut p = on(&ph, CUDA);
    for s in 4..6 {
        unpaged.step(&mut p, &on(&grads_at(n, s, true), CUDA), lr_at(s)).unwrap();
    }
    let mut dev2 = CudaPagedAdamW::new(cfg(), n, CUDA).unwrap();
    let mut bad = unpaged.save_state().unwrap();
    bad.kind = "adamw8bit".into();
    assert!(dev2.load_state(&bad).is_err(), "a state of another kind must be refused");
    assert_eq!(dev2.steps(), 0);
    dev2.load_state(&unpaged.save_state().unwrap()).unwrap();
    for s in 6..8 {
        dev2.step(&mut p, &on(&grads_at(n, s, true), CUDA), lr_at(s)).unwrap();
    }
    assert_eq!(bits(&down(&p)), bits(&p_ref), "params after CUDA paged -> CPU -> CUDA -> CUDA paged");
    assert_same_state(&dev2.save_state().unwrap(), &reference.save_state().unwrap(), "state");
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn grad_norm_and_clip_on_cuda_are_the_host_functions() {
    if !cuda_ready("grad_norm_and_clip_on_cuda_are_the_host_functions") {
        return;
    }
    for n in [1, 1000, 1_000_003, BIG] {
        let g = randn(n, 0.5, 5 + n as u64);
        let norm = global_grad_norm(&g);
        let got = grad_norm_tensor(&on(&g, CUDA)).unwrap();
        assert_eq!(got.to_bits(), norm.to_bits(), "n={n}: norm {got} vs host {norm}");
        for max_norm in [0.1 * norm, norm, 10.0 * norm] {
            let mut want = g.clone();
            let want_norm = clip_grad_norm(&mut want, max_norm);
            let mut t = on(&g, CUDA);
            let view = t.narrow(0, 0, 1).unwrap();
            let got_norm = clip_grad_norm_tensor(&mut t, max_norm).unwrap();
            assert_eq!(got_norm.to_bits(), want_norm.to_bits(), "n={n} max_norm {max_norm}");
            assert_eq!(bits(&down(&t)), bits(&want), "n={n} max_norm {max_norm}");
            assert_eq!(down(&view)[0].to_bits(), want[0].to_bits(), "clipping must write the shared storage");
        }
    }
    for bad in [f32::NAN, f32::INFINITY] {
        let mut g = randn(5000, 0.5, 6);
        g[17] = bad;
        let mut t = on(&g, CUDA);
        let got = clip_grad_norm_tensor(&mut t, 1e-3).unwrap();
        assert_eq!(got.to_bits(), global_grad_norm(&g).to_bits());
        assert_eq!(bits(&down(&t)), bits(&g), "a non-finite norm must leave the grads alone");
    }
    assert_eq!(grad_norm_tensor(&on(&[], CUDA)).unwrap(), 0.0);
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn staged_paged_optimizers_on_cuda_write_the_same_device_storage() {
    if !cuda_ready("staged_paged_optimizers_on_cuda_write_the_same_device_storage") {
        return;
    }
    let n: usize = SEGMENTS.iter().sum();
    for name in ["adamw", "paged-adamw", "paged-adamw-8bit"] {
        let mut dev = make_tensor_optimizer(name, SEGMENTS, cfg(), CUDA).unwrap();
        let mut host = make_optimizer(name, SEGMENTS, cfg()).unwrap();
        run_side_by_side(name, dev.as_mut(), host.as_mut(), &randn(n, 0.1, 7), 0..4, true);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn bad_operands_on_cuda_are_errors_that_change_nothing() {
    if !cuda_ready("bad_operands_on_cuda_are_errors_that_change_nothing") {
        return;
    }
    let n = 8192;
    let p0 = randn(n, 0.1, 8);
    let g = on(&randn(n, 0.01, 9), CUDA);
    let mut opts: Vec<Box<dyn TensorOptimizer>> = vec![
        Box::new(CudaAdamW::new(cfg(), n, CUDA).unwrap()),
        Box::new(CudaAdamW8bit::new(cfg(), &[n], CUDA).unwrap()),
        Box::new(CudaPagedAdamW::with_allocator(cfg(), n, CUDA, small_budget()).unwrap()),
    ];
    for opt in opts.iter_mut() {
        let cases: Vec<(&str, Tensor, Tensor)> = vec![
            ("params on the CPU", Tensor::from_slice(&p0, [n]).unwrap(), g.clone()),
            ("grads on the CPU", on(&p0, CUDA), g.to_device(Device::Cpu).unwrap()),
            ("bf16 params", on(&p0, CUDA).to_dtype(DType::BF16).unwrap(), g.clone()),
            ("strided params", on(&p0, CUDA).reshape([64, 128]).unwrap().t().unwrap(), g.clone()),
            ("short params", on(&p0[..n - 1], CUDA), g.clone()),
            ("short grads", on(&p0, CUDA), g.narrow(0, 0, n - 1).unwrap()),
        ];
        for (what, mut p, g) in cases {
            let before = p.to_vec_f32().unwrap();
            let e = opt.step(&mut p, &g, 1e-3).err();
            assert!(e.is_some(), "{}: {what} accepted", opt.name());
            println!("{}: {what}: {}", opt.name(), e.unwrap());
            assert_eq!(bits(&p.to_vec_f32().unwrap()), bits(&before), "{what}: params changed");
            assert_eq!(opt.steps(), 0, "{what}: step counted");
        }
    }
    assert!(CudaAdamW::new(cfg(), n, Device::Cpu).is_err());
    assert!(CudaAdamW::new(cfg(), n, Device::Cuda(1 << 20)).is_err());
}

#[test]
fn cuda_optimizers_without_a_driver_are_errors() {
    // The paged state must be CUDA managed memory, on a CUDA device (checked before any driver call).
    // (On the emulator, whose device memory is host memory, host pages are accepted.)
    let host = || PagedAllocator::host(4096).unwrap();
    assert_eq!(CudaPagedAdamW::with_allocator(cfg(), 10, CUDA, host()).is_ok(), tensor::cuda::emulated());
    assert!(CudaPagedAdamW::with_allocator(cfg(), 10, Device::Cpu, host()).is_err());
    assert!(CudaPagedAdamW::new(cfg(), 10, Device::Cpu).is_err());
    if tensor::cuda::driver_present() {
        println!("driver present: checking a missing ordinal instead");
        assert!(CudaAdamW::new(cfg(), 10, Device::Cuda(1 << 20)).is_err());
        return;
    }
    assert!(CudaAdamW::new(cfg(), 10, CUDA).is_err());
    assert!(CudaAdamW8bit::new(cfg(), &[10], CUDA).is_err());
    assert!(CudaPagedAdamW::new(cfg(), 10, CUDA).is_err());
    assert!(PagedAllocator::cuda(0, SMALL_PAGE, 4 * SMALL_PAGE).is_err());
    assert!(make_tensor_optimizer("adamw", &[10], cfg(), CUDA).is_err());
}
