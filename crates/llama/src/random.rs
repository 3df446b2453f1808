//! Randomly initialised models for benchmarks: no checkpoint needed, any shape, built layer by
//! layer so a 7B base never holds all its f32 weights at once (each projection is quantized as
//! soon as it is drawn, and only one f32 projection lives at a time).
//!
//! Initialisation: every weight ~ N(0, 0.02²) (transformers' `initializer_range`), norms = 1.
//! Values come from [`tensor::Rng`] streams seeded per tensor and per 64 Ki-element chunk, so the
//! result depends only on `seed` and the shape, not on the thread count.
//! Presets: [`preset`] names the shapes the benchmarks use.

use crate::lora::{module_path, proj_shape, PROJECTIONS};
use crate::model::{Layer, Linear};
use crate::{Error, LlamaConfig, Model, Result};
use nf4::{Nf4Weight, QuantConfig};
use rayon::prelude::*;
use std::sync::Arc;
use tensor::{DType, Device, Rng, Tensor};

/// Standard deviation of every random weight.
pub const INIT_STD: f32 = 0.02;
const CHUNK: usize = 1 << 16;

/// A named benchmark shape: `bench-512` (hidden 512, 8 layers, ~46 M parameters) or `llama2-7b`.
pub fn preset(name: &str) -> Option<LlamaConfig> {
    let (hidden, layers, heads, inter) = match name {
        "bench-512" => (512, 8, 8, 1376),
        "llama2-7b" => (4096, 32, 32, 11008),
        _ => return None,
    };
    Some(config(hidden, layers, heads, heads, inter, 32000))
}

/// A Llama config of the given shape with Llama-2 numerics (rope θ 10000, eps 1e-5, untied head,
/// context 4096).
pub fn config(
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    intermediate: usize,
    vocab: usize,
) -> LlamaConfig {
    LlamaConfig {
        hidden_size: hidden,
        intermediate_size: intermediate,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim: hidden / heads.max(1),
        rms_norm_eps: 1e-5,
        rope_theta: 10000.0,
        vocab_size: vocab,
        tie_word_embeddings: false,
        max_position_embeddings: 4096,
        bos_token_id: Some(1),
        eos_token_ids: vec![2],
    }
}

/// `rows × cols` f32 values ~ N(0, std²), from a stream keyed by `(seed, key)`; filled in parallel.
fn normal(rows: usize, cols: usize, std: f32, seed: u64, key: u64) -> Result<Tensor> {
    let mut data = vec![0.0f32; rows * cols];
    let base = seed ^ key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    data.par_chunks_mut(CHUNK).enumerate().for_each(|(i, chunk)| {
        let mut rng = Rng::new(base ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        for v in chunk {
            *v = rng.normal() * std;
        }
    });
    Ok(Tensor::from_vec(data, [rows, cols])?)
}

impl Model {
    /// A random model of shape `config` (see the module docs); projections quantized with `quant`
    /// when given, else dense f32. The embedding, head and norms stay f32.
    pub fn random(config: &LlamaConfig, quant: Option<&QuantConfig>, seed: u64) -> Result<Model> {
        Self::random_with_progress(config, quant, seed, &mut |_, _| {})
    }

    /// [`random`](Self::random), calling `progress(done, total)` after each layer.
    pub fn random_with_progress(
        config: &LlamaConfig,
        quant: Option<&QuantConfig>,
        seed: u64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        Self::random_on(config, quant, seed, Device::Cpu, progress)
    }

    /// [`random_with_progress`](Self::random_with_progress) onto `device`, layer by layer (the
    /// host holds one layer's float weights at a time). The same seed gives the same weights on
    /// every device.
    pub fn random_on(
        config: &LlamaConfig,
        quant: Option<&QuantConfig>,
        seed: u64,
        device: Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let cfg = config.clone();
        if cfg.hidden_size == 0
            || cfg.num_attention_heads == 0
            || cfg.num_key_value_heads == 0
            || !cfg.num_attention_heads.is_multiple_of(cfg.num_key_value_heads)
            || cfg.head_dim * cfg.num_attention_heads != cfg.hidden_size
            || !cfg.head_dim.is_multiple_of(2)
            || cfg.vocab_size == 0
            || cfg.intermediate_size == 0
        {
            return Err(Error::Model(format!(
                "random model: inconsistent shape (hidden {}, heads {}, kv heads {}, head dim {}, intermediate {}, vocab {})",
                cfg.hidden_size,
                cfg.num_attention_heads,
                cfg.num_key_value_heads,
                cfg.head_dim,
                cfg.intermediate_size,
                cfg.vocab_size
            )));
        }
        let (v, c) = (cfg.vocab_size, cfg.hidden_size);
        let embed = normal(v, c, INIT_STD, seed, 1)?;
        let ones = || Tensor::ones([c], DType::F32);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let mut proj = Vec::with_capacity(PROJECTIONS.len());
            for i in 0..PROJECTIONS.len() {
                let (out_f, in_f) = proj_shape(&cfg, i);
                let w = normal(out_f, in_f, INIT_STD, seed, 16 + (l * PROJECTIONS.len() + i) as u64)?;
                proj.push(match quant {
                    Some(q) => {
                        let name = format!("model.layers.{l}.{}.weight", module_path(i));
                        let qw = Nf4Weight::quantize(&name, &w, q).map_err(|e| Error::Model(format!("{name}: {e}")))?;
                        drop(w);
                        Linear::Quant(Arc::new(qw))
                    }
                    None => Linear::Dense(w),
                });
            }
            let proj: [Linear; 7] = proj.try_into().map_err(|_| Error::Model("seven projections".into()))?;
            layers.push(Arc::new(Layer { input_norm: ones(), post_norm: ones(), proj }.to_device(device)?));
            progress(l + 1, cfg.num_hidden_layers);
        }
        let lm_head =
            if cfg.tie_word_embeddings { None } else { Some(normal(v, c, INIT_STD, seed, 2)?.to_device(device)?) };
        Ok(Model {
            config: cfg,
            embed: embed.to_device(device)?,
            layers,
            norm: ones().to_device(device)?,
            lm_head,
            compute_dtype: DType::F32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_documented_shapes() {
        let b = preset("bench-512").expect("preset");
        assert_eq!((b.hidden_size, b.num_hidden_layers, b.head_dim, b.intermediate_size), (512, 8, 64, 1376));
        let s = preset("llama2-7b").expect("preset");
        assert_eq!((s.hidden_size, s.num_hidden_layers, s.head_dim, s.intermediate_size), (4096, 32, 128, 11008));
        assert!(preset("nope").is_none());
    }

    #[test]
    fn random_model_is_deterministic_and_runs() {
        let cfg = config(64, 2, 4, 2, 96, 100);
        let q = QuantConfig::default();
        let mut calls = 0;
        let a = Model::random_with_progress(&cfg, Some(&q), 3, &mut |_, _| calls += 1).expect("model");
        let b = Model::random(&cfg, Some(&q), 3).expect("model");
        assert_eq!(calls, 2);
        assert_eq!(a.embed.as_slice::<f32>().expect("f32"), b.embed.as_slice::<f32>().expect("f32"));
        let ids: Vec<u32> = (0..8).collect();
        let la = a.forward(&ids, 1, None, None, false).expect("forward");
        let lb = b.forward(&ids, 1, None, None, false).expect("forward");
        assert_eq!(la.value().as_slice::<f32>().expect("f32"), lb.value().as_slice::<f32>().expect("f32"));
        assert!(Model::random(&config(64, 1, 3, 3, 8, 10), None, 0).is_err());
    }
}
