//! Optimizer step throughput (parameters/s): 32-bit AdamW, PagedAdamW on the host backend and on a
//! simulated device whose budget is a quarter of the state, 8-bit AdamW (host and paged), plus a
//! plain memcpy so the cost of paging can be read per GiB moved. Bytes moved per step are printed
//! before each paged benchmark. Run: `cargo bench -p benches --bench optim`.
//!
//! Reference: bitsandbytes' optimizer benchmarks (`benchmarking/optimizer_benchmark.py`).
//! Deliberately CPU only: the simulated device's page traffic is memcpy, so these numbers bound
//! the policy's overhead, not PCIe/NVLink migration.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paged_alloc::{PagedAllocator, DEFAULT_PAGE_SIZE};
use trainer::optim::{AdamW, AdamW8bit, AdamWConfig, Optimizer, PagedAdamW};

const N: usize = 1 << 22; // 4 Mi parameters: 16 MiB of params, 32 MiB of 32-bit state

fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

fn bench_opt<O: Optimizer>(c: &mut Criterion, name: &str, mut opt: O, moved: impl Fn(&O) -> Option<u64>) {
    let mut p = data(N, 1);
    let g = data(N, 2);
    // A warm-up step puts paged runs in steady state; the next one is measured for traffic.
    opt.step(&mut p, &g, 1e-4).expect("step");
    let before = moved(&opt);
    opt.step(&mut p, &g, 1e-4).expect("step");
    if let (Some(a), Some(b)) = (before, moved(&opt)) {
        println!(
            "{name}: state {:.1} MiB, {:.1} MiB moved per step",
            opt.state_bytes() as f64 / MIB,
            (b - a) as f64 / MIB
        );
    }
    let mut group = c.benchmark_group("optim_step");
    group.throughput(Throughput::Elements(N as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new(name, N), |b| {
        b.iter(|| opt.step(black_box(&mut p), black_box(&g), 1e-4).expect("step"))
    });
    group.finish();
}

const MIB: f64 = (1 << 20) as f64;

/// A device holding a quarter of the state: every step pages (almost) all of it in and out.
fn simulated(state_bytes: usize) -> PagedAllocator {
    let budget = (state_bytes / 4).max(4 * DEFAULT_PAGE_SIZE);
    PagedAllocator::simulated(DEFAULT_PAGE_SIZE, budget).expect("alloc")
}

fn optim_steps(c: &mut Criterion) {
    let cfg = AdamWConfig { weight_decay: 0.01, ..Default::default() };
    bench_opt(c, "adamw32", AdamW::new(cfg, N), |_| None);
    let host = PagedAllocator::host(DEFAULT_PAGE_SIZE).expect("host");
    let opt = PagedAdamW::new(cfg, N, host).expect("paged");
    bench_opt(c, "paged_adamw32_host", opt, |o| Some(o.stats().bytes_moved()));
    let opt = PagedAdamW::new(cfg, N, simulated(N * 8)).expect("paged");
    bench_opt(c, "paged_adamw32_sim_quarter", opt, |o| Some(o.stats().bytes_moved()));
    bench_opt(c, "adamw8bit_host", AdamW8bit::new(cfg, &[N]).expect("8bit"), |_| None);
    let opt = AdamW8bit::paged(cfg, &[N], simulated(N * 2)).expect("paged 8bit");
    bench_opt(c, "paged_adamw8bit_sim_quarter", opt, |o| Some(o.stats().bytes_moved()));
}

/// The floor for simulated paging: copying 64 MiB between two host buffers.
fn memcpy(c: &mut Criterion) {
    let n = 64 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let mut group = c.benchmark_group("memcpy");
    group.throughput(Throughput::Bytes(n as u64));
    group.sample_size(10);
    group.bench_function("64MiB", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
    group.finish();
}

criterion_group!(benches, optim_steps, memcpy);
criterion_main!(benches);
