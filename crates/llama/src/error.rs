//! Errors of the loading half of the crate (files, configs, tensors, tokenizers). Every variant
//! names the file it is about, and the tensor or key when there is one, so a one-line message
//! says what to fix. Nothing here is recoverable by retrying; callers print and exit.

use std::path::{Path, PathBuf};

/// Everything loading a model, its config or its tokenizer can report instead of panicking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Opening, reading or mapping a file failed.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The file is malformed as a whole (bad magic, truncated header, bad JSON).
    #[error("{}: {msg}", file.display())]
    Format { file: PathBuf, msg: String },
    /// One tensor of the file is malformed, missing or of an unsupported type.
    #[error("{}: tensor '{tensor}': {msg}", file.display())]
    Tensor { file: PathBuf, tensor: String, msg: String },
    /// A config key is missing or has an invalid value.
    #[error("{}: key '{key}': {msg}", file.display())]
    Config { file: PathBuf, key: String, msg: String },
    /// Building or running the tokenizer failed.
    #[error("{}: tokenizer: {msg}", file.display())]
    Tokenizer { file: PathBuf, msg: String },
    /// A required asset is not in the cache (the message names the fetch script).
    #[error("{0}")]
    MissingAsset(String),
    /// The model was asked for something it cannot do (bad ids, too long a sequence, ...).
    #[error("model: {0}")]
    Model(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Op(#[from] tensor::Error),
}

/// Result with the llama [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_path_buf(), source }
    }
    pub(crate) fn format(file: &Path, msg: impl Into<String>) -> Self {
        Error::Format { file: file.to_path_buf(), msg: msg.into() }
    }
    pub(crate) fn tensor(file: &Path, tensor: &str, msg: impl Into<String>) -> Self {
        Error::Tensor { file: file.to_path_buf(), tensor: tensor.to_string(), msg: msg.into() }
    }
    pub(crate) fn config(file: &Path, key: &str, msg: impl Into<String>) -> Self {
        Error::Config { file: file.to_path_buf(), key: key.to_string(), msg: msg.into() }
    }
    pub(crate) fn tokenizer(file: &Path, msg: impl Into<String>) -> Self {
        Error::Tokenizer { file: file.to_path_buf(), msg: msg.into() }
    }
}
