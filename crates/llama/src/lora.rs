//! LoRA adapters over the frozen projections: `y = base(x) + (alpha/r) · (x·Aᵀ)·Bᵀ`, A `(r, in)`,
//! B `(out, r)`. Every trainable number lives in one flat `Vec<f32>` with named slots (llm.c's
//! `malloc_and_point_parameters`), so the optimizer, the gradient norm and checkpoints are one pass
//! over one buffer. Reads and writes PEFT's `adapter_model.safetensors` + `adapter_config.json`.
//!
//! Reference: peft 0.21 `tuners/lora/layer.py` (init: A ~ kaiming_uniform(a=√5) = U(±1/√in),
//! B = 0, so step 0 equals the base model; scaling alpha/r) and its saved key names.
//! Not here: rsLoRA, DoRA, biases, per-module rank patterns (refused on load).

use crate::{Error, LlamaConfig, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use tensor::Rng;

/// The seven Llama projections, in the order the model applies them.
pub const PROJECTIONS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// Module path of projection `p` inside a decoder layer (`self_attn.q_proj`, `mlp.down_proj`).
pub fn module_path(p: usize) -> String {
    let group = if p < 4 { "self_attn" } else { "mlp" };
    format!("{group}.{}", PROJECTIONS[p])
}

/// `(out_features, in_features)` of projection `p` for a model.
pub fn proj_shape(cfg: &LlamaConfig, p: usize) -> (usize, usize) {
    let (c, hd) = (cfg.hidden_size, cfg.head_dim);
    match p {
        0 => (cfg.num_attention_heads * hd, c),
        1 | 2 => (cfg.num_key_value_heads * hd, c),
        3 => (c, cfg.num_attention_heads * hd),
        4 | 5 => (cfg.intermediate_size, c),
        _ => (c, cfg.intermediate_size),
    }
}

/// Rank, scaling, dropout and which projections get adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f32,
    pub dropout: f32,
    /// Indices into [`PROJECTIONS`], ascending.
    pub targets: Vec<usize>,
}

impl LoraConfig {
    /// A config from projection names (`q_proj`, …); errors on unknown names or a zero rank.
    pub fn new(r: usize, alpha: f32, dropout: f32, targets: &[&str]) -> std::result::Result<Self, String> {
        if r == 0 {
            return Err("LoRA rank r must be at least 1".into());
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(format!("LoRA dropout {dropout} must be in [0, 1)"));
        }
        let mut idx = Vec::new();
        for t in targets {
            let i = PROJECTIONS
                .iter()
                .position(|p| p == t)
                .ok_or_else(|| format!("unknown target module '{t}' (expected some of {})", PROJECTIONS.join(",")))?;
            if !idx.contains(&i) {
                idx.push(i);
            }
        }
        if idx.is_empty() {
            return Err("no LoRA target modules".into());
        }
        idx.sort();
        Ok(LoraConfig { r, alpha, dropout, targets: idx })
    }
    /// The multiplier of the adapter path, `alpha / r`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.r as f32
    }
}

/// Where one adapter's A and B sit in the flat buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSlot {
    pub layer: usize,
    /// Index into [`PROJECTIONS`].
    pub proj: usize,
    pub in_features: usize,
    pub out_features: usize,
    /// A `(r, in)`, row-major.
    pub a: Range<usize>,
    /// B `(out, r)`, row-major.
    pub b: Range<usize>,
}

impl LoraSlot {
    /// PEFT's saved key for A (`which = 'A'`) or B.
    pub fn peft_key(&self, which: char) -> String {
        format!("base_model.model.model.layers.{}.{}.lora_{which}.weight", self.layer, module_path(self.proj))
    }
}

/// All adapters of a model in one flat f32 buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraParams {
    pub config: LoraConfig,
    pub slots: Vec<LoraSlot>,
    pub data: Vec<f32>,
}

impl LoraParams {
    /// Zeroed adapters laid out for `model` (layer-major, projections in model order, A then B).
    pub fn zeros(model: &LlamaConfig, config: LoraConfig) -> Self {
        let mut slots = Vec::new();
        let mut off = 0;
        for layer in 0..model.num_hidden_layers {
            for &proj in &config.targets {
                let (out_f, in_f) = proj_shape(model, proj);
                let a = off..off + config.r * in_f;
                let b = a.end..a.end + out_f * config.r;
                off = b.end;
                slots.push(LoraSlot { layer, proj, in_features: in_f, out_features: out_f, a, b });
            }
        }
        LoraParams { config, slots, data: vec![0.0; off] }
    }

    /// PEFT's initialisation: A ~ U(−1/√in, 1/√in) (kaiming_uniform with a = √5), B = 0.
    pub fn init(model: &LlamaConfig, config: LoraConfig, rng: &mut Rng) -> Self {
        let mut p = Self::zeros(model, config);
        for s in &p.slots {
            let bound = 1.0 / (s.in_features as f32).sqrt();
            for v in &mut p.data[s.a.clone()] {
                *v = (2.0 * rng.uniform() - 1.0) * bound;
            }
        }
        p
    }

    /// Number of trainable parameters.
    pub fn len(&self) -> usize {
        self.data.len()
    }
    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    /// The slot of `(layer, proj)`, if that projection has an adapter.
    pub fn slot(&self, layer: usize, proj: usize) -> Option<&LoraSlot> {
        self.slots.iter().find(|s| s.layer == layer && s.proj == proj)
    }

    /// Write `adapter_model.safetensors` and `adapter_config.json` into `dir` (each via a temporary
    /// file and a rename, so a crash never leaves a half-written file under the real name).
    pub fn save_peft(&self, dir: &Path, base_model: Option<&str>) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut bufs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for s in &self.slots {
            let bytes =
                |r: &Range<usize>| self.data[r.clone()].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
            bufs.push((s.peft_key('A'), vec![self.config.r, s.in_features], bytes(&s.a)));
            bufs.push((s.peft_key('B'), vec![s.out_features, self.config.r], bytes(&s.b)));
        }
        let views = bufs
            .iter()
            .map(|(k, shape, b)| TensorView::new(Dtype::F32, shape.clone(), b).map(|v| (k.clone(), v)))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::format(dir, format!("building adapter tensors: {e}")))?;
        let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        let bytes = safetensors::serialize(views, Some(meta))
            .map_err(|e| Error::format(dir, format!("serializing adapter: {e}")))?;
        write_atomic(&dir.join("adapter_model.safetensors"), &bytes)?;
        let targets: Vec<&str> = self.config.targets.iter().map(|&i| PROJECTIONS[i]).collect();
        let cfg = serde_json::json!({
            "base_model_name_or_path": base_model,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "lora_alpha": self.config.alpha,
            "lora_dropout": self.config.dropout,
            "modules_to_save": null,
            "peft_type": "LORA",
            "r": self.config.r,
            "rank_pattern": {},
            "alpha_pattern": {},
            "target_modules": targets,
            "task_type": "CAUSAL_LM",
            "use_dora": false,
            "use_rslora": false,
        });
        let text = serde_json::to_string_pretty(&cfg).map_err(|e| Error::format(dir, e.to_string()))?;
        write_atomic(&dir.join("adapter_config.json"), text.as_bytes())
    }

    /// Read a PEFT adapter directory written for `model` (by PEFT or by [`save_peft`](Self::save_peft)).
    pub fn load_peft(dir: &Path, model: &LlamaConfig) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::format(&cfg_path, format!("invalid JSON: {e}")))?;
        let num = |k: &str| {
            v.get(k).and_then(|x| x.as_f64()).ok_or_else(|| Error::config(&cfg_path, k, "missing or not a number"))
        };
        for (k, bad) in [("use_rslora", true), ("use_dora", true)] {
            if v.get(k).and_then(|x| x.as_bool()) == Some(bad) {
                return Err(Error::config(&cfg_path, k, "is not supported"));
            }
        }
        for k in ["rank_pattern", "alpha_pattern"] {
            if v.get(k).and_then(|x| x.as_object()).is_some_and(|o| !o.is_empty()) {
                return Err(Error::config(&cfg_path, k, "per-module patterns are not supported"));
            }
        }
        let targets: Vec<String> = match v.get("target_modules") {
            Some(serde_json::Value::Array(a)) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
            Some(serde_json::Value::String(s)) => vec![s.clone()],
            _ => return Err(Error::config(&cfg_path, "target_modules", "missing or not a list of module names")),
        };
        let names: Vec<&str> = targets.iter().map(String::as_str).collect();
        let r = num("r")?;
        if !(r >= 1.0 && r.fract() == 0.0 && r <= u32::MAX as f64) {
            return Err(Error::config(&cfg_path, "r", format!("{r} is not a positive integer rank")));
        }
        let config =
            LoraConfig::new(r as usize, num("lora_alpha")? as f32, num("lora_dropout").unwrap_or(0.0) as f32, &names)
                .map_err(|e| Error::config(&cfg_path, "target_modules", e))?;
        let st_path = dir.join("adapter_model.safetensors");
        let bytes = std::fs::read(&st_path).map_err(|e| Error::io(&st_path, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::format(&st_path, format!("invalid safetensors: {e}")))?;
        // Size the adapter before allocating it: every parameter takes at least 2 bytes on disk,
        // so a rank the file cannot hold is refused here rather than allocated.
        let per_layer = config.targets.iter().try_fold(0usize, |acc, &t| {
            let (out_f, in_f) = proj_shape(model, t);
            in_f.checked_add(out_f).and_then(|s| s.checked_mul(config.r)).and_then(|s| acc.checked_add(s))
        });
        let fits = per_layer
            .and_then(|n| n.checked_mul(model.num_hidden_layers))
            .and_then(|n| n.checked_mul(2))
            .is_some_and(|need| need <= bytes.len());
        if !fits {
            return Err(Error::config(
                &cfg_path,
                "r",
                format!(
                    "rank {} needs more parameters than {} holds ({} bytes)",
                    config.r,
                    st_path.display(),
                    bytes.len()
                ),
            ));
        }
        let mut p = Self::zeros(model, config);
        let slots = p.slots.clone();
        for s in &slots {
            for (which, range, shape) in
                [('A', &s.a, [p.config.r, s.in_features]), ('B', &s.b, [s.out_features, p.config.r])]
            {
                let key = s.peft_key(which);
                let alt = key.replace(".weight", ".default.weight");
                let t = st
                    .tensor(&key)
                    .or_else(|_| st.tensor(&alt))
                    .map_err(|_| Error::tensor(&st_path, &key, "missing from the adapter"))?;
                if t.shape() != shape {
                    return Err(Error::tensor(
                        &st_path,
                        &key,
                        format!("shape {:?} does not match the model's {:?} (r = {})", t.shape(), shape, p.config.r),
                    ));
                }
                let dst = &mut p.data[range.clone()];
                let data = t.data();
                match t.dtype() {
                    Dtype::F32 => dst
                        .iter_mut()
                        .zip(data.chunks_exact(4))
                        .for_each(|(d, c)| *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    Dtype::BF16 => dst
                        .iter_mut()
                        .zip(data.chunks_exact(2))
                        .for_each(|(d, c)| *d = tensor::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
                    Dtype::F16 => dst
                        .iter_mut()
                        .zip(data.chunks_exact(2))
                        .for_each(|(d, c)| *d = tensor::f16::from_le_bytes([c[0], c[1]]).to_f32()),
                    other => {
                        return Err(Error::tensor(&st_path, &key, format!("dtype {other:?} is not f32, bf16 or f16")))
                    }
                }
            }
        }
        Ok(p)
    }
}

/// Write `bytes` to `path` through a temporary file in the same directory, fsynced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    // Errors name `path`, the file the user asked for, not the temporary name; the temporary file
    // is removed on any failure (a full disk keeps its space).
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> LlamaConfig {
        LlamaConfig::from_json_str(
            r#"{"hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 1, "vocab_size": 16, "rms_norm_eps": 1e-5, "max_position_embeddings": 32}"#,
            "tiny.json",
        )
        .unwrap()
    }

    #[test]
    fn layout_init_and_peft_round_trip() {
        let cfg = LoraConfig::new(2, 4.0, 0.0, &["q_proj", "down_proj", "q_proj"]).unwrap();
        assert_eq!(cfg.targets, vec![0, 6]);
        assert_eq!(cfg.scale(), 2.0);
        let p = LoraParams::init(&tiny(), cfg, &mut Rng::new(3));
        assert_eq!(p.slots.len(), 4);
        let down = p.slot(1, 6).unwrap();
        assert_eq!((down.out_features, down.in_features), (8, 12));
        assert_eq!(p.len(), 2 * (2 * 8 + 8 * 2 + 2 * 12 + 8 * 2));
        for s in &p.slots {
            let bound = 1.0 / (s.in_features as f32).sqrt();
            assert!(
                p.data[s.a.clone()].iter().all(|v| v.abs() <= bound) && p.data[s.a.clone()].iter().any(|&v| v != 0.0)
            );
            assert!(p.data[s.b.clone()].iter().all(|&v| v == 0.0), "B starts at zero");
        }
        let mut q = p.clone();
        q.data.iter_mut().enumerate().for_each(|(i, v)| *v += i as f32 * 1e-3);
        let dir = std::env::temp_dir().join(format!("qlora-lora-{}", std::process::id()));
        q.save_peft(&dir, Some("tiny")).unwrap();
        let back = LoraParams::load_peft(&dir, &tiny()).unwrap();
        assert_eq!(back, q);
        // A model of another width refuses the adapter with the tensor named.
        let mut other = tiny();
        other.hidden_size = 16;
        other.head_dim = 8;
        let e = LoraParams::load_peft(&dir, &other).unwrap_err().to_string();
        assert!(e.contains("lora_A.weight") && e.contains("shape"), "{e}");
    }

    #[test]
    fn bad_configs() {
        assert!(LoraConfig::new(0, 1.0, 0.0, &["q_proj"]).is_err());
        assert!(LoraConfig::new(4, 1.0, 0.0, &["qkv"]).unwrap_err().contains("qkv"));
        assert!(LoraConfig::new(4, 1.0, 1.5, &["q_proj"]).is_err());
    }
}
