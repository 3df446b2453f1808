//! Reverse-mode autograd over `tensor`: a [`Tape`] of backward closures in execution order, [`Var`]s
//! that carry a value and their place on the tape, one reverse loop in [`Tape::backward`], and a
//! finite-difference [`gradcheck`] for every rule.
//!
//! Backward accumulates (`+=`) into gradients: a var used by several ops gets the sum of their
//! contributions. A node is recorded only when an input requires a gradient and recording is on
//! ([`no_grad`] turns it off); fused ops are one node each. Other crates add differentiable ops
//! with [`custom_op`]; [`checkpoint`] trades recompute for activation memory.
//! Op contract: `docs/ops.md`. Errors are `tensor::Error` naming the op; nothing here panics.
//!
//! ```
//! use autograd::{ops, Tape};
//! use tensor::{Rng, Tensor};
//! let mut rng = Rng::new(0);
//! let tape = Tape::new();
//! let w = tape.leaf(Tensor::randn([4, 3], 0.5, &mut rng));
//! let x = autograd::Var::constant(Tensor::randn([2, 4], 1.0, &mut rng));
//! let logits = x.matmul(&w).unwrap();
//! let targets = Tensor::from_vec(vec![2i32, 0], [2]).unwrap();
//! let loss = ops::cross_entropy(&logits, &targets, -100, None).unwrap();
//! let grads = tape.backward(&loss).unwrap();
//! assert_eq!(grads.get(&w).unwrap().dims(), &[4, 3]);
//! ```

mod checkpoint;
mod custom;
mod grad_mode;
mod gradcheck;
pub mod ops;
pub mod profile;
mod tape;
mod var;

pub use checkpoint::checkpoint;
pub use custom::{custom_op, custom_op_named};
pub use grad_mode::{is_grad_enabled, no_grad};
pub use gradcheck::{gradcheck, gradcheck_ref, GradcheckConfig, GradcheckReport};
pub use tape::{Grads, Tape};
pub use tensor::{Error, Result};
pub use var::Var;
