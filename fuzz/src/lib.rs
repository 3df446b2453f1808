//! Shared helpers of the fuzz targets: a per-process scratch directory for loaders that only read
//! files, the tiny fixture model, and the small adapter the adapter target pairs inputs with (the
//! seed writer in crates/llama/tests/fuzz_regressions.rs builds the same one).

use std::path::{Path, PathBuf};

/// A scratch directory for this target and process (created once, reused by every input).
pub fn scratch(target: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
    let d = base.join(format!("qlora-fuzz-{target}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

/// The tiny Llama fixture directory of the llama crate.
pub fn tiny_llama() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates/llama/tests/fixtures/tiny-llama")
}

/// The tiny fixture's config.
pub fn tiny_config() -> llama::LlamaConfig {
    llama::LlamaConfig::from_json_file(tiny_llama().join("config.json")).expect("tiny config")
}

/// A small valid adapter for the tiny model (r = 2 on q_proj and v_proj), as the bytes of its
/// `adapter_config.json` and `adapter_model.safetensors`.
pub fn small_adapter(cfg: &llama::LlamaConfig, dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let lc = llama::LoraConfig::new(2, 4.0, 0.0, &["q_proj", "v_proj"]).expect("lora config");
    let mut p = llama::LoraParams::zeros(cfg, lc);
    p.data.iter_mut().enumerate().for_each(|(i, v)| *v = (i % 7) as f32 * 0.25);
    p.save_peft(dir, None).expect("save adapter");
    let json = std::fs::read(dir.join("adapter_config.json")).expect("read adapter config");
    let st = std::fs::read(dir.join("adapter_model.safetensors")).expect("read adapter");
    (json, st)
}
