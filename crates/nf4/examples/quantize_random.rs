//! Quantize a random matrix to NF4 with double quantization, dequantize it, and print the
//! storage cost, the error and the time each direction took.
//!
//! `cargo run --release -p nf4 --example quantize_random -- [rows] [cols]` (default 4096 4096).

use std::time::Instant;

use nf4::{Nf4Weight, QuantConfig};
use tensor::{Rng, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (rows, cols) = (args.first().copied().unwrap_or(4096), args.get(1).copied().unwrap_or(4096));
    let mut rng = Rng::new(0);
    let w = Tensor::randn([rows, cols], 0.02, &mut rng);
    let cfg = QuantConfig::default();

    // Best of 5, so thread-pool start-up and first-touch page faults are not measured.
    let (mut t_quant, mut t_deq) = (f64::INFINITY, f64::INFINITY);
    let mut q = Nf4Weight::quantize("w", &w, &cfg)?;
    let mut back = vec![0f32; rows * cols];
    for _ in 0..5 {
        let t0 = Instant::now();
        q = Nf4Weight::quantize("w", &w, &cfg)?;
        t_quant = t_quant.min(t0.elapsed().as_secs_f64());
        let t1 = Instant::now();
        q.dequantize_into(&mut back)?;
        t_deq = t_deq.min(t1.elapsed().as_secs_f64());
    }

    let x = w.as_slice::<f32>()?;
    let max_err = x.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let rms = (x.iter().zip(&back).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>() / x.len() as f64).sqrt();
    let n = (rows * cols) as f64;
    println!("matrix {rows}x{cols}, {cfg:?}");
    println!("bits/param: {:.4} (formula), {:.4} (this tensor)", cfg.bits_per_param(), q.storage_bits_per_param());
    println!("max |error|: {max_err:.3e}, rms error: {rms:.3e} (weights ~ N(0, 0.02^2))");
    println!("quantize:   {:8.2} ms, {:.2e} elements/s", t_quant * 1e3, n / t_quant);
    println!("dequantize: {:8.2} ms, {:.2e} elements/s", t_deq * 1e3, n / t_deq);
    Ok(())
}
