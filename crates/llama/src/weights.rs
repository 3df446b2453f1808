//! One interface over every model format we load: a Hugging Face safetensors model (single file or
//! shards), a GGUF file, or a bitsandbytes 4-bit safetensors model written by `quantize`. It yields
//! the config and named tensors in Hugging Face names and layout, one at a time, so the caller can
//! quantize each linear as it arrives and never hold the whole model in f32.
//!
//! Reference: CLI.md ("A model path is any of ..."), ASSETS.md (GGUF names, Q/K permutation), the
//! bitsandbytes serialized layout as read by `nf4::Nf4Weight::from_bnb_with`. Deliberately absent:
//! the model itself, device placement, and dtype policy (everything comes out as f32, except the
//! still-quantized bnb weights, which come out as `nf4::Nf4Weight`).

use crate::config::LlamaConfig;
use crate::gguf::{gguf_to_hf_name, unpermute_qk, GgufFile};
use crate::safetensors::{SafetensorsSource, StDType};
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tensor::Tensor;

/// Which format a [`WeightSource`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightSourceKind {
    /// `config.json` + `model.safetensors` (or an index with shards).
    Safetensors,
    /// A `.gguf` file (config and tokenizer in its metadata).
    Gguf,
    /// Safetensors whose `*_proj.weight`s are in bitsandbytes' serialized 4-bit layout.
    Bnb4bit,
}

enum Inner {
    St(SafetensorsSource),
    /// The file and the map from Hugging Face names to GGUF names.
    Gguf(GgufFile, BTreeMap<String, String>),
}

/// A model's config and weights, read lazily.
pub struct WeightSource {
    path: PathBuf,
    kind: WeightSourceKind,
    config: LlamaConfig,
    inner: Inner,
}

impl std::fmt::Debug for WeightSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WeightSource({:?}, {})", self.kind, self.path.display())
    }
}

/// Suffixes of the auxiliary tensors bitsandbytes stores beside a 4-bit weight.
const BNB_AUX: [&str; 4] = [".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"];

fn bnb_base(name: &str) -> Option<&str> {
    if let Some(i) = name.find(".quant_state.bitsandbytes__") {
        return Some(&name[..i]);
    }
    BNB_AUX.iter().find_map(|s| name.strip_suffix(s))
}

impl WeightSource {
    /// Open a model path: a directory with `config.json` and safetensors, a `.safetensors` or
    /// `.index.json` file with `config.json` beside it, or a `.gguf` file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::format(path, "model path does not exist"));
        }
        if path.extension().is_some_and(|e| e == "gguf") {
            return Self::open_gguf(path);
        }
        let dir = if path.is_dir() { path } else { path.parent().unwrap_or(Path::new(".")) };
        let cfg_path = dir.join("config.json");
        if !cfg_path.is_file() {
            return Err(Error::format(
                path,
                format!("no config.json at {} (a Hugging Face model directory needs one)", cfg_path.display()),
            ));
        }
        let config = LlamaConfig::from_json_file(&cfg_path)?;
        let st = SafetensorsSource::open(path)?;
        let kind = if st.names().iter().any(|n| n.contains(".quant_state.bitsandbytes__")) {
            WeightSourceKind::Bnb4bit
        } else {
            WeightSourceKind::Safetensors
        };
        Ok(WeightSource { path: path.to_path_buf(), kind, config, inner: Inner::St(st) })
    }

    fn open_gguf(path: &Path) -> Result<Self> {
        let g = GgufFile::open(path)?;
        let config = LlamaConfig::from_gguf(&g)?;
        let mut map = BTreeMap::new();
        for t in &g.tensors {
            let hf = gguf_to_hf_name(&t.name).ok_or_else(|| {
                Error::tensor(path, &t.name, "has no Hugging Face Llama equivalent (unsupported tensor)")
            })?;
            map.insert(hf, t.name.clone());
        }
        Ok(WeightSource { path: path.to_path_buf(), kind: WeightSourceKind::Gguf, config, inner: Inner::Gguf(g, map) })
    }

    /// The model path given to [`WeightSource::open`].
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The format.
    pub fn kind(&self) -> WeightSourceKind {
        self.kind
    }
    /// The validated config.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }
    /// The safetensors source, for formats that have one.
    pub fn safetensors(&self) -> Option<&SafetensorsSource> {
        match &self.inner {
            Inner::St(s) => Some(s),
            Inner::Gguf(..) => None,
        }
    }
    /// The GGUF file, for the GGUF format.
    pub fn gguf(&self) -> Option<&GgufFile> {
        match &self.inner {
            Inner::Gguf(g, _) => Some(g),
            Inner::St(_) => None,
        }
    }

    /// The model's tokenizer (GGUF metadata, or `tokenizer.json` beside the weights).
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        match &self.inner {
            Inner::Gguf(g, _) => Tokenizer::from_gguf(g),
            Inner::St(_) => Tokenizer::for_model(&self.path),
        }
    }

    /// Every weight in Hugging Face names, sorted. bnb auxiliary tensors (`.absmax`,
    /// `.quant_state.*`, ...) are folded into their weight's name.
    pub fn names(&self) -> Vec<String> {
        match &self.inner {
            Inner::Gguf(_, map) => map.keys().cloned().collect(),
            Inner::St(s) => s.names().into_iter().filter(|n| bnb_base(n).is_none()).map(str::to_string).collect(),
        }
    }

    /// True when `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        match &self.inner {
            Inner::Gguf(_, map) => map.contains_key(name),
            Inner::St(s) => s.info(name).is_some(),
        }
    }

    /// True when `name` is stored in bitsandbytes' 4-bit layout (read it with [`Self::nf4_weight`]).
    pub fn is_bnb_quantized(&self, name: &str) -> bool {
        let Inner::St(s) = &self.inner else {
            return false;
        };
        ["nf4", "fp4"].iter().any(|q| s.info(&format!("{name}.quant_state.bitsandbytes__{q}")).is_some())
    }

    /// The Hugging Face shape of `name` without reading its data.
    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        match &self.inner {
            Inner::Gguf(g, map) => {
                let gname = map.get(name).ok_or_else(|| Error::tensor(&self.path, name, "not in the model"))?;
                g.tensor_info(gname)
                    .map(|t| t.shape())
                    .ok_or_else(|| Error::tensor(&self.path, name, "not in the model"))
            }
            Inner::St(s) if self.is_bnb_quantized(name) => bnb_shape(s, name),
            Inner::St(s) => s
                .info(name)
                .map(|i| i.shape.clone())
                .ok_or_else(|| Error::tensor(s.file_of(name), name, "not in the model")),
        }
    }

    /// `name` as an owned f32 tensor in Hugging Face layout (GGUF: dequantized, Q/K rows
    /// un-permuted; bnb 4-bit: dequantized by the nf4 crate).
    pub fn tensor_f32(&self, name: &str) -> Result<Tensor> {
        match &self.inner {
            Inner::Gguf(g, map) => {
                let gname = map.get(name).ok_or_else(|| Error::tensor(&self.path, name, "not in the model"))?;
                let t = g.tensor_f32(gname)?;
                let heads = if name.ends_with("self_attn.q_proj.weight") {
                    self.config.num_attention_heads
                } else if name.ends_with("self_attn.k_proj.weight") {
                    self.config.num_key_value_heads
                } else {
                    return Ok(t);
                };
                let [out, inp] = t.dims_n::<2>("unpermute_qk")?;
                let w = unpermute_qk(t.as_slice::<f32>()?, out, inp, heads)
                    .map_err(|m| Error::tensor(&self.path, gname, m))?;
                Ok(Tensor::from_vec(w, [out, inp])?)
            }
            Inner::St(s) => {
                if self.is_bnb_quantized(name) {
                    let w = self
                        .nf4_weight(name)?
                        .dequantize()
                        .map_err(|e| Error::tensor(s.file_of(name), name, e.to_string()))?;
                    if w.dtype() == tensor::DType::F32 {
                        return Ok(w);
                    }
                    return Ok(Tensor::from_vec(w.to_vec_f32()?, w.shape().clone())?);
                }
                s.get_f32(name)
            }
        }
    }

    /// A bitsandbytes 4-bit weight, read by the nf4 crate (`Nf4Weight::from_bnb_with`).
    pub fn nf4_weight(&self, name: &str) -> Result<nf4::Nf4Weight> {
        let Inner::St(s) = &self.inner else {
            return Err(Error::tensor(&self.path, name, "not a bitsandbytes 4-bit weight (GGUF model)"));
        };
        let view = |n: &str| -> Option<safetensors::tensor::TensorView<'_>> {
            let info = s.info(n)?;
            let dtype = match info.dtype {
                StDType::F32 => safetensors::Dtype::F32,
                StDType::F16 => safetensors::Dtype::F16,
                StDType::BF16 => safetensors::Dtype::BF16,
                StDType::U8 => safetensors::Dtype::U8,
                _ => return None,
            };
            safetensors::tensor::TensorView::new(dtype, info.shape.clone(), s.bytes(n).ok()?).ok()
        };
        nf4::Nf4Weight::from_bnb_with(name, view).map_err(|e| Error::tensor(s.file_of(name), name, e.to_string()))
    }

    /// Every tensor in [`Self::names`] order, read one at a time as f32.
    pub fn iter_f32(&self) -> impl Iterator<Item = (String, Result<Tensor>)> + '_ {
        self.names().into_iter().map(move |n| {
            let t = self.tensor_f32(&n);
            (n, t)
        })
    }

    /// Check that every tensor the config implies is present with the right shape (and nothing
    /// unexpected is there), without reading data. Errors name the file and the tensor.
    pub fn check_complete(&self) -> Result<()> {
        let c = &self.config;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let (q, kv) = (c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim);
        let mut want: Vec<(String, Vec<usize>)> =
            vec![("model.embed_tokens.weight".into(), vec![c.vocab_size, h]), ("model.norm.weight".into(), vec![h])];
        if !c.tie_word_embeddings || self.contains("lm_head.weight") {
            want.push(("lm_head.weight".into(), vec![c.vocab_size, h]));
        }
        for l in 0..c.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}.weight");
            want.extend([
                (p("self_attn.q_proj"), vec![q, h]),
                (p("self_attn.k_proj"), vec![kv, h]),
                (p("self_attn.v_proj"), vec![kv, h]),
                (p("self_attn.o_proj"), vec![h, q]),
                (p("mlp.gate_proj"), vec![i, h]),
                (p("mlp.up_proj"), vec![i, h]),
                (p("mlp.down_proj"), vec![h, i]),
                (p("input_layernorm"), vec![h]),
                (p("post_attention_layernorm"), vec![h]),
            ]);
        }
        for (name, shape) in &want {
            if !self.contains(name) {
                return Err(Error::tensor(&self.path, name, "missing (the config implies it)"));
            }
            let got = self.shape(name)?;
            if &got != shape {
                return Err(Error::tensor(&self.path, name, format!("shape {got:?}, the config implies {shape:?}")));
            }
        }
        let known: std::collections::HashSet<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(extra) =
            self.names().into_iter().find(|n| !known.contains(n.as_str()) && !n.ends_with("rotary_emb.inv_freq"))
        {
            return Err(Error::tensor(&self.path, &extra, "unexpected in a Llama model"));
        }
        Ok(())
    }
}

/// The logical shape of a bnb 4-bit weight, from its quant-state JSON (`"shape": [out, in]`).
fn bnb_shape(s: &SafetensorsSource, name: &str) -> Result<Vec<usize>> {
    let bad = |m: &str| Error::tensor(s.file_of(name), name, m.to_string());
    let key = ["nf4", "fp4"]
        .iter()
        .map(|q| format!("{name}.quant_state.bitsandbytes__{q}"))
        .find(|k| s.info(k).is_some())
        .ok_or_else(|| bad("no quant state"))?;
    let json: serde_json::Value =
        serde_json::from_slice(s.bytes(&key)?).map_err(|_| bad("quant state is not valid JSON"))?;
    json.get("shape")
        .and_then(|v| v.as_array())
        .and_then(|a| a.iter().map(|d| d.as_u64().map(|d| d as usize)).collect::<Option<Vec<_>>>())
        .ok_or_else(|| bad("quant state has no integer \"shape\""))
}
