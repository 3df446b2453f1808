//! Differentiable ops on [`Var`](crate::Var), one file per family, mirroring `tensor::ops` and the
//! table in `docs/ops.md`. Each op computes its value with the tensor op, then records one node
//! whose backward is the rule from that table; fused ops (rmsnorm, rope, swiglu, attention,
//! cross-entropy) are one node wrapping tensor's `fwd`/`bwd` pair. Backward contributions are
//! accumulated (`+=`) into gradients by the tape, never written over.
//!
//! A rule computes a gradient only for inputs that require one, and saves only what those
//! gradients need. Deliberately missing: `maximum` and `argmax` (not differentiated; no Llama
//! training path needs them).

pub mod binary;
pub mod fused;
pub mod index;
pub mod matmul;
pub mod reduce;
pub mod shape;
pub mod unary;

pub use fused::{attention, cross_entropy, lora, rmsnorm, rope, swiglu};
pub use index::embedding;
pub use shape::cat;

use tensor::{Result, Tensor};

/// `Some(f())` when `need`, without running `f` otherwise.
pub(crate) fn when(need: bool, f: impl FnOnce() -> Result<Tensor>) -> Result<Option<Tensor>> {
    if need {
        f().map(Some)
    } else {
        Ok(None)
    }
}
