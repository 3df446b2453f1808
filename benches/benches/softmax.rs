//! Softmax throughput in bytes moved (forward: read x, write y; backward: read y and dy, write
//! dx; f32). Shapes: vocabulary rows `(256, 32000)` as in a loss over logits, and attention-score
//! rows `(9·256, 256)`. The ceiling is memory bandwidth; `exp` is the polynomial in
//! `ops/softmax/cpu.rs`, so the forward should stay close to the backward.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use tensor::{ops::softmax::softmax_last_bwd, Rng, Tensor};

fn softmax(c: &mut Criterion) {
    let mut g = c.benchmark_group("softmax");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    let mut rng = Rng::new(0);
    for (rows, cols) in [(256, 32000), (9 * 256, 256)] {
        let x = Tensor::randn([rows, cols], 3.0, &mut rng);
        let dy = Tensor::randn([rows, cols], 1.0, &mut rng);
        let y = x.softmax_last().unwrap();
        let bytes = (rows * cols * 4) as u64;
        g.throughput(Throughput::Bytes(2 * bytes));
        g.bench_function(BenchmarkId::new("fwd_f32", format!("{rows}x{cols}")), |b| {
            b.iter(|| x.softmax_last().unwrap())
        });
        g.throughput(Throughput::Bytes(3 * bytes));
        g.bench_function(BenchmarkId::new("bwd_f32", format!("{rows}x{cols}")), |b| {
            b.iter(|| softmax_last_bwd(&y, &dy).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, softmax);
criterion_main!(benches);
