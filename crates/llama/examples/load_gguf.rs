//! Measure loading a model through `WeightSource`: open, config, tokenizer, then every tensor
//! dequantized to f32 one at a time (dropped after use), reporting wall time and peak RSS.
//! `cargo run --release -p llama --example load_gguf [MODEL_PATH]` (default: the cached GGUF).

use std::time::Instant;

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
    kb.unwrap_or(f64::NAN) / 1024.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = match std::env::args().nth(1) {
        Some(p) => p.into(),
        None => llama::assets::ensure_default_model()?,
    };
    let t0 = Instant::now();
    let ws = llama::WeightSource::open(&path)?;
    let t_open = t0.elapsed();
    let tok = ws.tokenizer()?;
    let t_tok = t0.elapsed() - t_open;
    let (mut n, mut bytes) = (0usize, 0usize);
    for (name, t) in ws.iter_f32() {
        let t = t.map_err(|e| format!("{name}: {e}"))?;
        n += t.elem_count();
        bytes = bytes.max(t.elem_count() * 4);
    }
    let total = t0.elapsed();
    println!("{}: {:?}, {} params, vocab {}", path.display(), ws.kind(), n, tok.vocab_size());
    println!(
        "open+config {:.1} ms, tokenizer {:.1} ms, all tensors to f32 {:.1} ms total",
        t_open.as_secs_f64() * 1e3,
        t_tok.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e3
    );
    println!("largest f32 tensor {:.1} MB, peak RSS {:.1} MB", bytes as f64 / 1e6, peak_rss_mb());
    Ok(())
}
