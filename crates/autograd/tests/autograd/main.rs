//! Integration tests for autograd: the tape's mechanics, checkpointing, and a gradcheck of every
//! backward rule on seeded random shapes (sizes 1 and odd included, and strided views).

// `&[x.clone()]` reads better than `slice::from_ref(&x)` in the one-input gradchecks.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod checkpoint;
mod common;
mod grad_elementwise;
mod grad_fused;
mod grad_shape;
mod prop;
mod tape;
