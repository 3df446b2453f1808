//! Llama-architecture models: config, weights, tokenizer, forward pass, LoRA and generation.
//!
//! Empty for now: issue 4 ("The Llama model") fills it.
