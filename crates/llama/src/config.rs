//! The Llama hyper-parameters, read from a Hugging Face `config.json` or from GGUF `llama.*`
//! metadata, and validated once so the model code can trust them.
//!
//! Reference: transformers `LlamaConfig` (defaults: `num_key_value_heads = num_attention_heads`,
//! `head_dim = hidden_size / num_attention_heads`; transformers 5 keeps `rope_theta` inside
//! `rope_parameters`) and llama.cpp's GGUF key names (`llama.embedding_length`, ...).
//! Deliberately refused rather than half-supported: biases, activations other than SiLU, and
//! RoPE scaling other than the default.

use crate::gguf::GgufFile;
use crate::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The shape and numerics of a Llama-architecture model.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    /// Every end-of-sequence id (HF allows a list).
    pub eos_token_ids: Vec<u32>,
}

impl LlamaConfig {
    /// Read and validate a Hugging Face `config.json`.
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parse and validate config JSON; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let file = origin.as_ref().to_path_buf();
        let v: Value = serde_json::from_str(text).map_err(|e| Error::format(&file, format!("invalid JSON: {e}")))?;
        let j = Json { v: &v, file: &file };
        if let Some(mt) = v.get("model_type").and_then(Value::as_str) {
            if !matches!(mt, "llama" | "mistral") {
                return Err(Error::config(&file, "model_type", format!("'{mt}' is not a Llama-architecture model")));
            }
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(Error::config(&file, "hidden_act", format!("'{act}' is not supported (silu only)")));
            }
        }
        for key in ["attention_bias", "mlp_bias"] {
            if v.get(key).and_then(Value::as_bool) == Some(true) {
                return Err(Error::config(&file, key, "biases are not supported"));
            }
        }
        for key in ["rope_scaling", "rope_parameters"] {
            if let Some(t) =
                v.get(key).and_then(|r| r.get("rope_type").or_else(|| r.get("type"))).and_then(Value::as_str)
            {
                if t != "default" {
                    return Err(Error::config(&file, key, format!("rope_type '{t}' is not supported (default only)")));
                }
            }
        }
        let hidden_size = j.usize("hidden_size")?;
        let num_attention_heads = j.usize("num_attention_heads")?;
        let rope_theta = match v.get("rope_theta") {
            Some(_) => j.f64("rope_theta")?,
            None => match v.get("rope_parameters").and_then(|r| r.get("rope_theta")) {
                Some(t) => {
                    t.as_f64().ok_or_else(|| Error::config(&file, "rope_parameters.rope_theta", "expected a number"))?
                }
                None => 10000.0,
            },
        };
        let cfg = LlamaConfig {
            hidden_size,
            intermediate_size: j.usize("intermediate_size")?,
            num_hidden_layers: j.usize("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads: j.opt_usize("num_key_value_heads")?.unwrap_or(num_attention_heads),
            head_dim: j.opt_usize("head_dim")?.unwrap_or(hidden_size.checked_div(num_attention_heads).unwrap_or(0)),
            rms_norm_eps: j.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta,
            vocab_size: j.usize("vocab_size")?,
            tie_word_embeddings: match v.get("tie_word_embeddings") {
                None | Some(Value::Null) => false,
                Some(b) => {
                    b.as_bool().ok_or_else(|| Error::config(&file, "tie_word_embeddings", "expected true or false"))?
                }
            },
            max_position_embeddings: j.opt_usize("max_position_embeddings")?.unwrap_or(2048),
            bos_token_id: j.opt_token_id("bos_token_id")?,
            eos_token_ids: match v.get("eos_token_id") {
                None | Some(Value::Null) => vec![],
                Some(Value::Array(a)) => a.iter().map(|x| j.token_id("eos_token_id", x)).collect::<Result<_>>()?,
                Some(_) => j.opt_token_id("eos_token_id")?.into_iter().collect(),
            },
        };
        cfg.validate(&file)?;
        Ok(cfg)
    }

    /// Build from GGUF `llama.*` metadata. `tie_word_embeddings` is true when the file has no
    /// `output.weight`.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.get_str("general.architecture")?;
        if arch != "llama" {
            return Err(Error::config(
                g.path(),
                "general.architecture",
                format!("'{arch}' is not supported (llama only)"),
            ));
        }
        let key = |k: &str| format!("llama.{k}");
        let hidden_size = g.get_usize(&key("embedding_length"))?;
        let heads = g.get_usize(&key("attention.head_count"))?;
        let head_dim = match g.get(&key("attention.key_length")) {
            Some(_) => g.get_usize(&key("attention.key_length"))?,
            None => hidden_size.checked_div(heads).unwrap_or(0),
        };
        let vocab_size = match g.get(&key("vocab_size")) {
            Some(_) => g.get_usize(&key("vocab_size"))?,
            None => match g.get("tokenizer.ggml.tokens").and_then(|t| t.as_array()) {
                Some(t) => t.len(),
                None => g.tensor_info("token_embd.weight").and_then(|t| t.ne.get(1).copied()).unwrap_or(0) as usize,
            },
        };
        let cfg = LlamaConfig {
            hidden_size,
            intermediate_size: g.get_usize(&key("feed_forward_length"))?,
            num_hidden_layers: g.get_usize(&key("block_count"))?,
            num_attention_heads: heads,
            num_key_value_heads: match g.get(&key("attention.head_count_kv")) {
                Some(_) => g.get_usize(&key("attention.head_count_kv"))?,
                None => heads,
            },
            head_dim,
            rms_norm_eps: g.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: match g.get(&key("rope.freq_base")) {
                Some(_) => g.get_f64(&key("rope.freq_base"))?,
                None => 10000.0,
            },
            vocab_size,
            tie_word_embeddings: g.tensor_info("output.weight").is_none(),
            max_position_embeddings: g.get_usize(&key("context_length"))?,
            bos_token_id: g.get_token_id("tokenizer.ggml.bos_token_id")?,
            eos_token_ids: g.get_token_id("tokenizer.ggml.eos_token_id")?.into_iter().collect(),
        };
        if let Some(rd) = g.get(&key("rope.dimension_count")).and_then(|v| v.as_int()) {
            if rd != cfg.head_dim as i128 {
                return Err(Error::config(
                    g.path(),
                    &key("rope.dimension_count"),
                    format!("{rd} != head_dim {} (partial RoPE is not supported)", cfg.head_dim),
                ));
            }
        }
        cfg.validate(g.path())?;
        Ok(cfg)
    }

    /// Check the invariants the model relies on; errors name `file` and the offending key.
    pub fn validate(&self, file: &Path) -> Result<()> {
        let err = |k: &str, m: String| Err(Error::config(file, k, m));
        for (k, v) in [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return err(k, "must be positive".into());
            }
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return err(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return err("head_dim", format!("{} is odd (RoPE rotates pairs)", self.head_dim));
        }
        if !(self.rms_norm_eps > 0.0 && self.rms_norm_eps.is_finite()) {
            return err("rms_norm_eps", format!("{} must be positive", self.rms_norm_eps));
        }
        if !(self.rope_theta > 0.0 && self.rope_theta.is_finite()) {
            return err("rope_theta", format!("{} must be positive", self.rope_theta));
        }
        if self.checked_num_parameters().is_none() {
            return err(
                "hidden_size",
                format!(
                    "hidden {}, intermediate {}, {} heads of {}, vocabulary {} and {} layers make more parameters \
                     than fit in usize",
                    self.hidden_size,
                    self.intermediate_size,
                    self.num_attention_heads,
                    self.head_dim,
                    self.vocab_size,
                    self.num_hidden_layers
                ),
            );
        }
        for id in self.bos_token_id.iter().chain(&self.eos_token_ids) {
            if *id as usize >= self.vocab_size {
                return err(
                    "bos_token_id/eos_token_id",
                    format!("id {id} is outside the vocabulary of {}", self.vocab_size),
                );
            }
        }
        Ok(())
    }

    /// Parameters of the model (embeddings, layers, final norm, and `lm_head` unless tied);
    /// `usize::MAX` for sizes whose count overflows, which [`validate`](Self::validate) refuses.
    pub fn num_parameters(&self) -> usize {
        self.checked_num_parameters().unwrap_or(usize::MAX)
    }

    /// [`num_parameters`](Self::num_parameters), or `None` when the count does not fit in `usize`
    /// (sizes from a hostile file: every product here is checked).
    pub fn checked_num_parameters(&self) -> Option<usize> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let mul = |a: usize, b: usize| a.checked_mul(b);
        let q = mul(self.num_attention_heads, self.head_dim)?;
        let kv = mul(self.num_key_value_heads, self.head_dim)?;
        // q, k, v, o; gate, up, down; two norms.
        let layer = [mul(h, q)?, mul(mul(2, h)?, kv)?, mul(q, h)?, mul(mul(3, h)?, i)?, mul(2, h)?]
            .into_iter()
            .try_fold(0usize, usize::checked_add)?;
        let embed = mul(v, h)?;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        [embed, mul(self.num_hidden_layers, layer)?, h, head].into_iter().try_fold(0usize, usize::checked_add)
    }
}

/// Typed access to a config JSON object; errors name the file and the key.
struct Json<'a> {
    v: &'a Value,
    file: &'a PathBuf,
}

impl Json<'_> {
    fn opt_usize(&self, k: &str) -> Result<Option<usize>> {
        match self.v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_u64()
                .and_then(|x| usize::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| Error::config(self.file, k, format!("expected a non-negative integer, got {x}"))),
        }
    }
    /// A token id: an integer in `0..=u32::MAX`, never truncated into some other token.
    fn token_id(&self, k: &str, x: &Value) -> Result<u32> {
        x.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .ok_or_else(|| Error::config(self.file, k, format!("expected a token id in 0..={}, got {x}", u32::MAX)))
    }
    fn opt_token_id(&self, k: &str) -> Result<Option<u32>> {
        match self.v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => self.token_id(k, x).map(Some),
        }
    }
    fn usize(&self, k: &str) -> Result<usize> {
        self.opt_usize(k)?.ok_or_else(|| Error::config(self.file, k, "missing"))
    }
    fn opt_f64(&self, k: &str) -> Result<Option<f64>> {
        match self.v.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => {
                x.as_f64().map(Some).ok_or_else(|| Error::config(self.file, k, format!("expected a number, got {x}")))
            }
        }
    }
    fn f64(&self, k: &str) -> Result<f64> {
        self.opt_f64(k)?.ok_or_else(|| Error::config(self.file, k, "missing"))
    }
}
