//! Tensors for the QLoRA engine: one non-generic [`Tensor`] over a [`Storage`] enum (CPU, and CUDA
//! with feature `cuda`: `Tensor::to_device`), strided views without copies, and every op a Llama
//! forward and backward needs, dispatched on the operands' device.
//!
//! Each op sits in `ops/<op>/` with a fast path and a plain scalar reference (`*_ref`) that tests
//! compare against. Errors name the op and the shapes; nothing here panics on bad input.
//!
//! ```
//! use tensor::{Tensor, DType};
//! let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]).unwrap();
//! let at = a.t().unwrap(); // a view: no copy
//! assert_eq!(at.dims(), &[3, 2]);
//! assert_eq!(at.to_vec::<f32>().unwrap(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
//! assert_eq!(a.dtype(), DType::F32);
//! ```

#[cfg(feature = "cuda")]
pub mod cuda;
mod dtype;
mod error;
mod layout;
pub mod ops;
mod rng;
mod shape;
mod storage;
mod tensor;

pub use dtype::{DType, Element};
pub use error::{Error, Result};
pub use half::{bf16, f16};
pub use layout::{Layout, StridedIndex};
pub use rng::Rng;
pub use shape::Shape;
pub use storage::{CpuElement, CpuStorage, Device, Storage};
pub use tensor::Tensor;
