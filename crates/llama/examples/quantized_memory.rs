//! Peak memory of loading the default model (SmolLM2-135M-Instruct GGUF) with every linear
//! quantized to NF4 + double quant while loading, against the size of what is kept.
//! Run: `cargo run --release -p llama --example quantized_memory` (after scripts/fetch-assets.sh).

fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn main() {
    let path = llama::assets::ensure_default_model().unwrap_or_else(|e| panic!("{e}"));
    let t = std::time::Instant::now();
    let src = llama::WeightSource::open(&path).unwrap();
    let model = llama::Model::load(&src, Some(&nf4::QuantConfig::default())).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let kept = model.weight_bytes() as f64 / (1 << 20) as f64;
    let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64;
    let peak = peak_rss().map_or(f64::NAN, |b| b as f64 / (1 << 20) as f64);
    println!("loaded and quantized in {secs:.2} s");
    println!("weights kept: {kept:.1} MiB (NF4 linears + f32 embedding and norms); GGUF file mapped: {file:.1} MiB");
    println!("peak RSS: {peak:.1} MiB = {:.2}x the kept weights", peak / kept);
}
