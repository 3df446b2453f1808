//! Criterion benchmarks of the nf4 crate on the CPU: quantize with double quantization,
//! dequantize to f32, and the fused NF4 linear forward and input-gradient backward, on a
//! 4096×4096 f32 weight (Llama-7B `q_proj`).
//! Throughput: quantize/dequantize in elements/s (weight elements) and in bytes/s (f32 read +
//! 4.127 bits written, or the reverse); the linear in FLOPs (`2·N·out·in`, reported by criterion
//! as "elem/s"). Targets on the 2-core dev machine: quantize ≥ 6e8 elem/s, dequantize ≥ 2e9.
//! Not measured here: bf16/f16 inputs, FP4 (same loops), serialization.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use nf4::{linear, Nf4Weight, QuantConfig};
use std::time::Duration;
use tensor::{DType, Rng, Tensor};

const ROWS: usize = 4096;
const COLS: usize = 4096;

fn weight() -> Tensor {
    Tensor::randn([ROWS, COLS], 0.02, &mut Rng::new(7))
}

fn quantize_bench(c: &mut Criterion) {
    let w = weight();
    let cfg = QuantConfig::default();
    let n = (ROWS * COLS) as u64;
    let q = Nf4Weight::quantize("w", &w, &cfg).unwrap();
    let q_bytes = (q.storage_bits_per_param() * n as f64 / 8.0) as u64;
    let mut out = vec![0f32; ROWS * COLS];
    let id = format!("{ROWS}x{COLS}");

    let mut g = c.benchmark_group("nf4_quantize_dq");
    g.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(n));
    g.bench_function(BenchmarkId::new("elements", &id), |b| {
        b.iter(|| black_box(Nf4Weight::quantize("w", &w, &cfg).unwrap()))
    });
    g.throughput(Throughput::Bytes(4 * n + q_bytes));
    g.bench_function(BenchmarkId::new("bytes", &id), |b| {
        b.iter(|| black_box(Nf4Weight::quantize("w", &w, &cfg).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("nf4_dequantize_f32");
    g.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(n));
    g.bench_function(BenchmarkId::new("elements", &id), |b| {
        b.iter(|| q.dequantize_into(black_box(&mut out[..])).unwrap())
    });
    g.throughput(Throughput::Bytes(4 * n + q_bytes));
    g.bench_function(BenchmarkId::new("bytes", &id), |b| {
        b.iter(|| q.dequantize_into(black_box(&mut out[..])).unwrap())
    });
    g.finish();
}

fn linear_bench(c: &mut Criterion) {
    let q = Nf4Weight::quantize("w", &weight(), &QuantConfig::default()).unwrap();
    let mut g = c.benchmark_group("nf4_linear");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    for tokens in [16usize, 256] {
        let mut rng = Rng::new(3);
        let x = Tensor::randn([tokens, COLS], 1.0, &mut rng);
        let dy = Tensor::randn([tokens, ROWS], 1.0, &mut rng);
        let id = format!("{tokens}x{COLS}x{ROWS}");
        g.throughput(Throughput::Elements((2 * tokens * ROWS * COLS) as u64));
        g.bench_function(BenchmarkId::new("fwd", &id), |b| b.iter(|| black_box(linear::forward(&x, &q).unwrap())));
        g.bench_function(BenchmarkId::new("bwd", &id), |b| {
            b.iter(|| black_box(linear::backward(&dy, &q, DType::F32).unwrap()))
        });
    }
    g.finish();
}

criterion_group!(benches, quantize_bench, linear_bench);
criterion_main!(benches);
