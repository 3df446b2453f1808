//! Interleaved A/B timing of matmul layouts (min of many rounds, robust to a busy machine):
//! `cargo run --release -p benches --example ab_matmul -- M K N`.
use std::time::Instant;
use tensor::{Rng, Tensor};

fn main() {
    let a: Vec<usize> = std::env::args().skip(1).map(|s| s.parse().unwrap()).collect();
    let (m, k, n) = (a[0], a[1], a[2]);
    let mut rng = Rng::new(0);
    let x = Tensor::randn([m, k], 1.0, &mut rng);
    let w = Tensor::randn([n, k], 1.0, &mut rng); // (N, K) as nn.Linear stores it
    let wt = w.t().unwrap().contiguous().unwrap(); // (K, N) row-major
    let mut best = [f64::MAX; 3];
    for _ in 0..40 {
        let t = Instant::now();
        let _ = x.matmul(&w.t().unwrap()).unwrap();
        best[0] = best[0].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let _ = x.matmul(&wt).unwrap();
        best[1] = best[1].min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let _ = w.t().unwrap().contiguous().unwrap();
        best[2] = best[2].min(t.elapsed().as_secs_f64());
    }
    let gf = |s: f64| 2.0 * (m * k * n) as f64 / s / 1e9;
    println!(
        "{m}x{k}x{n}: w.t() view {:.3} ms ({:.0} GFLOP/s); contiguous (K,N) {:.3} ms ({:.0} GFLOP/s); transpose copy {:.3} ms",
        best[0] * 1e3, gf(best[0]), best[1] * 1e3, gf(best[1]), best[2] * 1e3
    );
}
