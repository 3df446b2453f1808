//! Matmul throughput in FLOP/s (2·M·N·K per product; criterion prints it as elements/s, so
//! `Gelem/s` reads as GFLOP/s). Sizes: 1024³ square (compare with
//! `scripts/bench-matmul-numpy.sh`), and Llama-ish linears with the weight stored `(N, K)` as
//! nn.Linear does and passed as the transposed view `w.t()`, the way the model calls it.
//!
//! Not measured here: the NF4 dequantize-and-multiply path (its own bench), backward shapes.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use tensor::{DType, Rng, Tensor};

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let mut rng = Rng::new(0);
    // (M, K, N, weight stored (N, K) and used transposed, dtype)
    let cases = [
        (1024, 1024, 1024, false, DType::F32),
        (1024, 1024, 1024, true, DType::F32),
        (1024, 1024, 1024, false, DType::BF16),
        (256, 576, 1536, true, DType::F32),
        (256, 512, 32000, true, DType::F32),
        (256, 32000, 512, false, DType::F32),
        (64, 512, 32000, true, DType::F32),
        (256, 512, 1376, true, DType::F32),
        (256, 512, 1376, false, DType::F32),
        (256, 512, 32000, false, DType::F32),
        (256, 512, 8, true, DType::F32),
        (256, 8, 512, true, DType::F32),
        (8, 256, 512, false, DType::F32),
    ];
    for (m, k, n, wt, dtype) in cases {
        let a = Tensor::randn([m, k], 1.0, &mut rng).to_dtype(dtype).unwrap();
        let b = if wt {
            Tensor::randn([n, k], 1.0, &mut rng).to_dtype(dtype).unwrap().t().unwrap()
        } else {
            Tensor::randn([k, n], 1.0, &mut rng).to_dtype(dtype).unwrap()
        };
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        let id = format!("{}_{m}x{k}x{n}{}", dtype.as_str(), if wt { "_wT" } else { "" });
        g.bench_function(BenchmarkId::from_parameter(id), |bch| bch.iter(|| a.matmul(&b).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, matmul);
criterion_main!(benches);
