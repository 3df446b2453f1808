//! Errors returned by every tensor operation. Each names the op and the shapes or values involved,
//! so a message read in a log says what to fix without a debugger.

use crate::{DType, Shape};

/// Everything a tensor operation can report instead of panicking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two operands (or an operand and an expectation) have incompatible shapes.
    #[error("{op}: shape mismatch, {lhs:?} vs {rhs:?}")]
    ShapeMismatch { op: &'static str, lhs: Shape, rhs: Shape },
    /// Two operands have different dtypes, or the op does not take this dtype.
    #[error("{op}: dtype mismatch, {lhs:?} vs {rhs:?}")]
    DTypeMismatch { op: &'static str, lhs: DType, rhs: DType },
    /// The op does not support this dtype.
    #[error("{op}: unsupported dtype {dtype:?}")]
    UnsupportedDType { op: &'static str, dtype: DType },
    /// An index (token id, position, dimension) is out of range.
    #[error("{op}: index {index} out of range for size {size}")]
    IndexOutOfRange { op: &'static str, index: i64, size: usize },
    /// A dimension argument does not exist for this rank.
    #[error("{op}: dimension {dim} out of range for shape {shape:?}")]
    DimOutOfRange { op: &'static str, dim: usize, shape: Shape },
    /// The element count does not match the shape.
    #[error("{op}: {len} elements cannot fill shape {shape:?} ({expected} elements)")]
    ElementCount { op: &'static str, len: usize, shape: Shape, expected: usize },
    /// Any other invalid argument, described in words.
    #[error("{op}: {msg}")]
    Invalid { op: &'static str, msg: String },
    /// The requested device is not available (no driver, no such ordinal).
    #[error("device unavailable: {0}")]
    Device(String),
}

/// Result with the tensor [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid { op, msg: msg.into() }
    }
}
