//! Optimizer step throughput (parameters/s) at the size that matters: the LoRA r = 64 adapters of
//! SmolLM2-135M on all seven projections (19,537,920 parameters in 420 tensors). 32-bit AdamW,
//! PagedAdamW on the host backend and on a simulated device whose budget is a quarter of the
//! state (at least 6 pages), with and without overlapping the page-in of the next unit with the
//! update of the current one, and 8-bit AdamW (host, and paged the same two ways). First it prints what paging
//! costs per GiB moved, from the host-backed and both paged optimizers stepping in turn; each
//! paged case prints its bytes moved per step; a memcpy group gives the machine's copy bandwidth.
//! Run: `cargo bench -p benches --bench optim`.
//!
//! Reference: bitsandbytes' optimizer benchmarks (`benchmarking/optimizer_benchmark.py`).
//! Deliberately CPU only: the simulated device's page traffic is memcpy, so these numbers bound
//! the policy's overhead, not PCIe/NVLink migration.

use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use paged_alloc::{PagedAllocator, Stats, DEFAULT_PAGE_SIZE};
use trainer::optim::{AdamW, AdamW8bit, AdamWConfig, Optimizer, PagedAdamW};

const MIB: f64 = (1 << 20) as f64;
const GIB: f64 = (1 << 30) as f64;
const CFG: AdamWConfig = AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 };

/// SmolLM2-135M (30 layers, hidden 576, intermediate 1536, 3 KV heads of 64), LoRA r = 64 on
/// q, k, v, o, gate, up, down: A (r × in) then B (out × r) per projection, as the trainer lays
/// them out.
fn smollm2_lora_r64() -> Vec<usize> {
    let (h, i, kv, r) = (576, 1536, 3 * 64, 64);
    let projections = [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]; // (in, out)
    (0..30).flat_map(|_| projections.iter().flat_map(move |&(inp, out)| [r * inp, out * r])).collect()
}

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

/// A simulated device holding a quarter of `state_bytes`, but at least 6 pages (an 8-bit unit
/// pins 4 pages: codes of m and v and their absmax pages, and the next unit needs 2 more to be
/// prefetched beside it): every step pages (almost) all of the state in and out.
fn quarter(state_bytes: usize, overlap: bool) -> PagedAllocator {
    let budget = (state_bytes / 4).max(6 * DEFAULT_PAGE_SIZE);
    let mut a = PagedAllocator::simulated(DEFAULT_PAGE_SIZE, budget).expect("simulated device");
    a.set_overlap(overlap);
    a
}

/// Benchmarks one optimizer's step; for a paged one (`stats` given) it first prints the state,
/// the budget and the traffic of one steady-state step.
fn bench_opt<O: Optimizer>(
    c: &mut Criterion,
    n: usize,
    name: &str,
    mut opt: O,
    stats: impl Fn(&O) -> Option<(Stats, Option<usize>)>,
) {
    let (mut p, g) = (data(n, 1), data(n, 2));
    // A warm-up step puts paged runs in steady state; the next one is measured for traffic.
    opt.step(&mut p, &g, 1e-4).expect("step");
    let before = stats(&opt);
    opt.step(&mut p, &g, 1e-4).expect("step");
    if let (Some((a, budget)), Some((b, _))) = (before, stats(&opt)) {
        println!(
            "{name}: state {:.1} MiB, budget {:.1} MiB, {:.1} MiB moved per step ({} pages in, {} of them during an update)",
            opt.state_bytes() as f64 / MIB,
            budget.unwrap_or(0) as f64 / MIB,
            (b.bytes_moved() - a.bytes_moved()) as f64 / MIB,
            b.pages_in - a.pages_in,
            b.prefetches_overlapped - a.prefetches_overlapped,
        );
    }
    let mut group = c.benchmark_group("optim_step");
    group.throughput(Throughput::Elements(n as u64));
    group.sample_size(10);
    group.bench_function(BenchmarkId::new(name, n), |b| {
        b.iter(|| opt.step(black_box(&mut p), black_box(&g), 1e-4).expect("step"))
    });
    group.finish();
}

/// What paging costs per GiB moved, measured side by side: the optimizer on the host backend,
/// paged with overlap and paged without step in turn for `ROUNDS` rounds (so a change of load
/// hits all three alike); cost = (median paged step − median host step) / GiB moved per step.
fn paging_cost<O: Optimizer>(label: &str, n: usize, mut opts: [O; 3], stats: impl Fn(&O) -> Stats) {
    const ROUNDS: usize = 9;
    let g = data(n, 2);
    let mut ps: Vec<Vec<f32>> = (0..3).map(|_| data(n, 1)).collect();
    for (o, p) in opts.iter_mut().zip(&mut ps) {
        o.step(p, &g, 1e-4).expect("step");
    }
    let before = stats(&opts[1]);
    let mut times: [Vec<f64>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for ((o, p), t) in opts.iter_mut().zip(&mut ps).zip(&mut times) {
            let t0 = Instant::now();
            o.step(p, &g, 1e-4).expect("step");
            t.push(t0.elapsed().as_secs_f64());
        }
    }
    let moved = (stats(&opts[1]).bytes_moved() - before.bytes_moved()) as f64 / ROUNDS as f64;
    let median = |mut t: Vec<f64>| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    };
    let [host, on, off] = times.map(median);
    println!(
        "{label}: {:.1} MiB moved per step; median step host {:.1} ms, paged with overlap {:.1} ms, without {:.1} ms: \
         paging costs {:.3} s per GiB moved with overlap, {:.3} s without",
        moved / MIB,
        host * 1e3,
        on * 1e3,
        off * 1e3,
        (on - host) / (moved / GIB),
        (off - host) / (moved / GIB),
    );
}

fn optim_steps(c: &mut Criterion) {
    let segments = smollm2_lora_r64();
    let n: usize = segments.iter().sum();
    println!("optimizer step over {n} parameters in {} tensors, 2 MiB pages", segments.len());
    let host = || PagedAllocator::host(DEFAULT_PAGE_SIZE).expect("host");
    let paged32 = |a| PagedAdamW::new(CFG, n, a).expect("paged");
    let paged8 = |a| AdamW8bit::paged(CFG, &segments, a).expect("paged 8bit");
    let state8 = paged8(host()).state_bytes();

    paging_cost(
        "32-bit paging cost",
        n,
        [paged32(host()), paged32(quarter(8 * n, true)), paged32(quarter(8 * n, false))],
        PagedAdamW::stats,
    );
    paging_cost(
        "8-bit paging cost",
        n,
        [paged8(host()), paged8(quarter(state8, true)), paged8(quarter(state8, false))],
        AdamW8bit::stats,
    );

    let paged_stats = |o: &PagedAdamW| Some((o.stats(), o.allocator().budget_bytes()));
    let q8_stats = |o: &AdamW8bit| Some((o.stats(), o.allocator().budget_bytes()));
    bench_opt(c, n, "adamw32", AdamW::new(CFG, n), |_| None);
    bench_opt(c, n, "paged_adamw32_host", paged32(host()), paged_stats);
    bench_opt(c, n, "paged_adamw32_sim", paged32(quarter(8 * n, true)), paged_stats);
    bench_opt(c, n, "paged_adamw32_sim_no_overlap", paged32(quarter(8 * n, false)), paged_stats);
    bench_opt(c, n, "adamw8bit_host", paged8(host()), q8_stats);
    bench_opt(c, n, "paged_adamw8bit_sim", paged8(quarter(state8, true)), q8_stats);
    bench_opt(c, n, "paged_adamw8bit_sim_no_overlap", paged8(quarter(state8, false)), q8_stats);
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
