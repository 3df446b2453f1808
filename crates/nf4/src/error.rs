//! Errors of the nf4 crate. Each names the tensor (or argument) at fault, so a message read in a
//! log says what to fix. Converts into `tensor::Error` for autograd backward closures.
//!
//! Reference: none (bitsandbytes raises `ValueError`/`AssertionError` in the same places).

/// Everything quantization, dequantization, serialization and the NF4 linear can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Blocksize not a power of two in 32..=4096.
    #[error("nf4: blocksize {blocksize} is invalid (expected a power of two from 32 to 4096)")]
    InvalidBlocksize {
        /// The rejected blocksize.
        blocksize: usize,
    },
    /// A NaN or infinity in a tensor to quantize: it never silently becomes a code.
    #[error("nf4: tensor '{tensor}' has a non-finite value {value} at flat index {index}; cannot quantize NaN or Inf")]
    NonFinite {
        /// Name of the tensor.
        tensor: String,
        /// Row-major flat index of the first non-finite element.
        index: usize,
        /// The offending value.
        value: f32,
    },
    /// A quantization state that is truncated or inconsistent (codes shorter than the shape
    /// implies, unknown quant type, wrong dtype, malformed JSON, ...).
    #[error("nf4: quant state of '{tensor}': {msg}")]
    InvalidState {
        /// Name of the quantized weight.
        tensor: String,
        /// What is wrong.
        msg: String,
    },
    /// An argument that does not fit (dtype, shape, quant type name, ...).
    #[error("nf4: {what}: {msg}")]
    InvalidArgument {
        /// The tensor or argument at fault.
        what: String,
        /// What is wrong.
        msg: String,
    },
    /// An error from a tensor operation.
    #[error(transparent)]
    Tensor(#[from] tensor::Error),
    /// A safetensors read or write failed.
    #[error("nf4: safetensors error for '{tensor}': {source}")]
    Safetensors {
        /// The tensor (or file) being read or written.
        tensor: String,
        /// The underlying error.
        source: safetensors::SafeTensorError,
    },
}

/// Result with the nf4 [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn state(tensor: &str, msg: impl Into<String>) -> Self {
        Error::InvalidState { tensor: tensor.to_string(), msg: msg.into() }
    }
    pub(crate) fn arg(what: &str, msg: impl Into<String>) -> Self {
        Error::InvalidArgument { what: what.to_string(), msg: msg.into() }
    }
}

impl From<Error> for tensor::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Tensor(t) => t,
            other => tensor::Error::invalid("nf4", other.to_string()),
        }
    }
}
