//! Shared helpers: seeded inputs and a gradcheck wrapper that names the case on failure.

use autograd::{gradcheck, GradcheckConfig, Result, Var};
use tensor::{Rng, Tensor};

/// Normal samples with std 1.
pub fn randn(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::randn(shape.to_vec(), 1.0, rng)
}

/// Uniform samples in `[lo, hi)` (keeps log, sqrt, div and powf away from 0).
pub fn uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng) -> Tensor {
    Tensor::rand_uniform(shape.to_vec(), lo, hi, rng)
}

/// Gradcheck `f` at `inputs` with the f32 config; panics with `case` in the message on mismatch.
pub fn check(case: &str, f: impl Fn(&[Var]) -> Result<Var>, inputs: &[Tensor]) {
    check_with(case, f, inputs, &GradcheckConfig::f32());
}

pub fn check_with(case: &str, f: impl Fn(&[Var]) -> Result<Var>, inputs: &[Tensor], cfg: &GradcheckConfig) {
    if let Err(e) = gradcheck(f, inputs, cfg) {
        panic!("{case}: {e}");
    }
}

/// Shapes with size-1 and odd dims, for seeded loops.
pub const SHAPES: &[&[usize]] = &[&[1], &[5], &[3, 4], &[1, 7], &[2, 3, 5], &[4, 1, 3]];

/// Every shape a `(len,)`-broadcast partner of `shape` may take: itself, trailing dims, and
/// size-1 versions of each dim.
pub fn broadcast_partners(shape: &[usize]) -> Vec<Vec<usize>> {
    let mut out = vec![shape.to_vec(), shape[1..].to_vec()];
    for i in 0..shape.len() {
        let mut s = shape.to_vec();
        s[i] = 1;
        out.push(s);
    }
    out.retain(|s| !s.is_empty());
    out
}
