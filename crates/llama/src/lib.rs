//! Llama-architecture models: config, weights, tokenizer, the forward pass, LoRA and generation.
//!
//! Loading:
//! - [`assets`]: where the default model and data are cached, fetching them on first use.
//! - [`config`]: [`LlamaConfig`] from a Hugging Face `config.json` or GGUF metadata, validated.
//! - [`safetensors`]: lazily-read single-file or sharded safetensors over memory maps.
//! - [`gguf`]: a GGUF v3 reader (and a small writer for tests), dequantizing F32/F16/BF16/Q8_0/
//!   Q4_0/Q4_1 to f32, with llama.cpp's names and Q/K permutation mapped back to Hugging Face's.
//! - [`tokenizer`]: a `tokenizers` tokenizer from `tokenizer.json` or rebuilt from GGUF metadata,
//!   and the chat templates (ChatML, Llama-2).
//! - [`weights`]: [`WeightSource`], one interface over all three model formats yielding named
//!   tensors in Hugging Face names, one at a time.
//!
//! Running:
//! - [`model`]: [`Model`], the decoder on the autograd tape (frozen dense or NF4/FP4 projections,
//!   optional LoRA, gradient checkpointing per layer, a KV cache).
//! - [`lora`]: [`LoraParams`], every adapter in one flat buffer; PEFT's file format.
//! - [`generate`]: greedy, temperature and top-p sampling, streamed token by token.

pub mod assets;
pub mod config;
mod error;
pub mod generate;
pub mod gguf;
pub mod lora;
pub mod model;
pub mod random;
pub mod safetensors;
pub mod tokenizer;
pub mod weights;

pub use config::LlamaConfig;
pub use lora::{LoraConfig, LoraParams};
pub use model::{KvCache, LoraVars, Model};

/// Label value whose position carries no loss (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;
pub use error::{Error, Result};
pub use tokenizer::{apply_chat_template, ChatMessage, ChatTemplate, Tokenizer};
pub use weights::{WeightSource, WeightSourceKind};
