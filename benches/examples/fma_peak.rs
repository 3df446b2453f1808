//! The machine's arithmetic ceiling: f32 FMA throughput (AVX-512 when present, else AVX2) and, where
//! the CPU has AVX512-BF16, bf16 dot-product throughput, on 1 thread and on every thread, from
//! independent accumulator chains (no memory traffic). Every GEMM-bound figure in BENCHMARKS.md is
//! read against this: `cargo run --release -p benches --example fma_peak`.
use std::time::Instant;

const ITERS: u64 = 100_000_000;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 12 independent chains of `iters` FMAs on 16 lanes; returns a value so nothing is elided.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512(iters: u64) -> f32 {
        let (b, c) = (_mm512_set1_ps(1.000_000_1), _mm512_set1_ps(1e-9));
        let mut a = [_mm512_setzero_ps(); 12];
        for (i, v) in a.iter_mut().enumerate() {
            *v = _mm512_set1_ps(i as f32);
        }
        for _ in 0..iters {
            for v in a.iter_mut() {
                *v = _mm512_fmadd_ps(*v, b, c);
            }
        }
        a.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }

    /// 12 chains of 8-lane AVX2 FMAs.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(iters: u64) -> f32 {
        let (b, c) = (_mm256_set1_ps(1.000_000_1), _mm256_set1_ps(1e-9));
        let mut a = [_mm256_setzero_ps(); 12];
        for (i, v) in a.iter_mut().enumerate() {
            *v = _mm256_set1_ps(i as f32);
        }
        for _ in 0..iters {
            for v in a.iter_mut() {
                *v = _mm256_fmadd_ps(*v, b, c);
            }
        }
        let mut out = [0f32; 8];
        let mut s = 0.0;
        for v in a {
            _mm256_storeu_ps(out.as_mut_ptr(), v);
            s += out.iter().sum::<f32>();
        }
        s
    }

    /// 12 chains of `vdpbf16ps` (32 bf16 products into 16 f32 lanes each).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16(iters: u64) -> f32 {
        let one = _mm512_set1_epi16(0x3f80);
        let small = _mm512_set1_epi16(0x3000);
        let (b, c): (__m512bh, __m512bh) = (std::mem::transmute(one), std::mem::transmute(small));
        let mut a = [_mm512_setzero_ps(); 12];
        for _ in 0..iters {
            for v in a.iter_mut() {
                *v = _mm512_dpbf16_ps(*v, b, c);
            }
        }
        a.iter().map(|v| _mm512_reduce_add_ps(*v)).sum()
    }
}

/// GFLOP/s of `kernel` (`flops_per_iter` per loop iteration) on `threads` threads at once.
fn rate(threads: usize, flops_per_iter: f64, kernel: fn(u64) -> f32) -> f64 {
    let t = Instant::now();
    let sink: f32 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(move || kernel(ITERS))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    std::hint::black_box(sink);
    threads as f64 * ITERS as f64 * flops_per_iter / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    #[cfg(target_arch = "x86_64")]
    {
        let mut kernels: Vec<(&str, f64, fn(u64) -> f32)> = Vec::new();
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was just detected.
            kernels.push(("f32 FMA, AVX-512", 12.0 * 16.0 * 2.0, |n| unsafe { x86::fma512(n) }));
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            kernels.push(("f32 FMA, AVX2", 12.0 * 8.0 * 2.0, |n| unsafe { x86::fma256(n) }));
        }
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            kernels.push(("bf16 dot (vdpbf16ps)", 12.0 * 32.0 * 2.0, |n| unsafe { x86::dpbf16(n) }));
        }
        for (name, flops, k) in kernels {
            println!(
                "{name:<22} 1 thread {:7.1} GFLOP/s   {all} threads {:7.1} GFLOP/s",
                rate(1, flops, k),
                rate(all, flops, k)
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("fma_peak: only x86_64 kernels are written ({all} threads here)");
}
