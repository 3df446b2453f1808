//! Operations, one folder each (see `docs/ops.md` for the list and contracts): `mod.rs` holds the
//! public op and its device dispatch, `cpu.rs` the fast CPU path with the plain scalar `*_ref`
//! beside it, and the tests compare the two.

pub mod attention;
pub mod binary;
pub mod cast;
pub mod cat;
pub mod copy;
pub mod cross_entropy;
pub(crate) mod fused;
pub mod index;
pub mod matmul;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod softmax;
pub mod swiglu;
#[cfg(test)]
pub(crate) mod testing;
pub mod unary;
