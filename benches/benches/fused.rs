//! Criterion benchmarks of the fused Llama ops on the CPU (rmsnorm, attention, cross-entropy),
//! forward alone and forward + backward, at SmolLM-135M and Llama-7B-like sizes.
//! Throughput: rmsnorm and cross-entropy in bytes moved (every input read once and every output
//! written once, f32), attention in FLOPs (reported by criterion as "elem/s"; 4·D per visible
//! (query, key) pair forward, 2.5× that backward as FlashAttention-2 counts them).
//! Not measured here: rope and swiglu (elementwise, memory-bound like rmsnorm), bf16 inputs.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use tensor::ops::{attention, cross_entropy, rmsnorm};
use tensor::{Rng, Tensor};

fn rmsnorm_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rmsnorm");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    for (rows, ch) in [(256usize, 576usize), (2048, 4096)] {
        let mut rng = Rng::new(1);
        let x = Tensor::randn([rows, ch], 1.0, &mut rng);
        let w = Tensor::rand_uniform(ch, 0.5, 1.5, &mut rng);
        let dy = Tensor::randn([rows, ch], 1.0, &mut rng);
        let id = format!("{rows}x{ch}");
        let n = (rows * ch * 4) as u64;
        // fwd: x in, y out; bwd: dy, x in, dx out.
        g.throughput(Throughput::Bytes(2 * n));
        g.bench_function(BenchmarkId::new("fwd", &id), |b| b.iter(|| black_box(rmsnorm::fwd(&x, &w, 1e-5).unwrap())));
        g.throughput(Throughput::Bytes(5 * n));
        g.bench_function(BenchmarkId::new("fwd_bwd", &id), |b| {
            b.iter(|| {
                let (y, rstd) = rmsnorm::fwd(&x, &w, 1e-5).unwrap();
                black_box((y, rmsnorm::bwd(&dy, &x, &w, &rstd).unwrap()))
            })
        });
    }
    g.finish();
}

fn attention_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("attention");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    // (B, Hq, Hkv, T, S, D): SmolLM-135M's heads (9 query, 3 KV) and a plain MHA layer.
    for (b, hq, hkv, t, s, d) in [(1usize, 9usize, 3usize, 256usize, 256usize, 64usize), (1, 8, 8, 256, 256, 64)] {
        let mut rng = Rng::new(2);
        let q = Tensor::randn([b, hq, t, d], 1.0, &mut rng);
        let k = Tensor::randn([b, hkv, s, d], 1.0, &mut rng);
        let v = Tensor::randn([b, hkv, s, d], 1.0, &mut rng);
        let dout = Tensor::randn([b, hq, t, d], 1.0, &mut rng);
        let scale = 1.0 / (d as f32).sqrt();
        let pairs = (t * (s - t) + t * (t + 1) / 2) as u64;
        let fwd_flops = 4 * (b * hq * d) as u64 * pairs;
        let id = format!("B{b}_Hq{hq}_Hkv{hkv}_T{t}_S{s}_D{d}");
        g.throughput(Throughput::Elements(fwd_flops));
        g.bench_function(BenchmarkId::new("fwd", &id), |bch| {
            bch.iter(|| black_box(attention::fwd(&q, &k, &v, scale).unwrap()))
        });
        g.throughput(Throughput::Elements(fwd_flops * 7 / 2));
        g.bench_function(BenchmarkId::new("fwd_bwd", &id), |bch| {
            bch.iter(|| {
                let (out, lse) = attention::fwd(&q, &k, &v, scale).unwrap();
                black_box(attention::bwd(&dout, &q, &k, &v, &out, &lse, scale).unwrap())
            })
        });
    }
    g.finish();
}

fn cross_entropy_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_entropy");
    g.measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    let (n, v) = (256usize, 49_152usize);
    let mut rng = Rng::new(3);
    let logits = Tensor::randn([n, v], 2.0, &mut rng);
    let tv: Vec<i32> = (0..n).map(|i| if i % 10 == 0 { -100 } else { rng.below(v) as i32 }).collect();
    let targets = Tensor::from_vec(tv, n).unwrap();
    let id = format!("{n}x{v}");
    let bytes = (n * v * 4) as u64;
    // fwd: logits in; bwd: logits in, dlogits out.
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(BenchmarkId::new("fwd", &id), |b| {
        b.iter(|| black_box(cross_entropy::fwd(&logits, &targets, -100).unwrap()))
    });
    g.throughput(Throughput::Bytes(3 * bytes));
    g.bench_function(BenchmarkId::new("fwd_bwd", &id), |b| {
        b.iter(|| {
            let (loss, count, lse) = cross_entropy::fwd(&logits, &targets, -100).unwrap();
            let scale = 1.0 / count.max(1) as f32;
            black_box((loss, cross_entropy::bwd(&logits, &targets, &lse, -100, scale).unwrap()))
        })
    });
    g.finish();
}

criterion_group!(benches, rmsnorm_bench, attention_bench, cross_entropy_bench);
criterion_main!(benches);
