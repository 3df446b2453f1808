//! What tests/trainable.rs (both routes on the CPU) and tests/cuda_train.rs (CUDA vs the CPU)
//! share: the tiny model's path and the micro-batches of each step.

use std::path::PathBuf;
use tensor::Rng;
use trainer::data::{Batch, Example};

/// The tiny model: where it was at build time, else under the current directory (the repository
/// root, where gpu-check.sh runs a test binary built on another machine).
pub fn tiny() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../llama/tests/fixtures/tiny-llama");
    if built.is_dir() {
        built
    } else {
        PathBuf::from("crates/llama/tests/fixtures/tiny-llama")
    }
}

/// Two micro-batches of two random rows (5-16 tokens, the first two labels masked) for `step`.
pub fn batches(step: usize) -> Vec<Batch> {
    let mut rng = Rng::new(100 + step as u64);
    (0..2)
        .map(|_| {
            let ex: Vec<Example> = (0..2)
                .map(|_| {
                    let len = 5 + rng.below(12);
                    let ids: Vec<u32> = (0..len).map(|_| rng.below(256) as u32).collect();
                    let mut labels: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
                    labels[..2].iter_mut().for_each(|l| *l = -100);
                    Example { input_ids: ids, labels }
                })
                .collect();
            let refs: Vec<&Example> = ex.iter().collect();
            Batch::pad(&refs, 0)
        })
        .collect()
}
