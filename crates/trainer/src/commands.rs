//! The non-training subcommands of CLI.md as plain functions over typed arguments (main.rs parses
//! flags into these): `logits`, `generate`, `eval` and `merge`.
//! Not here: argument parsing and process exit codes (main.rs).

use crate::data::{self, DataOptions};
use crate::train::{self, TokenizerEncoder};
use llama::generate::{self, Sampling};
use llama::{LoraParams, LoraVars, Model, WeightSource};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A model loaded with its optional adapter.
pub struct Loaded {
    pub model: Model,
    pub adapter: Option<LoraParams>,
    pub src_path: PathBuf,
}

/// Open `model` (any format of CLI.md), quantize its linears per `quant`, and read `adapter`.
pub fn load(model: &Path, adapter: Option<&Path>, quant: Option<&nf4::QuantConfig>) -> Result<Loaded, String> {
    let src = WeightSource::open(model).map_err(|e| e.to_string())?;
    let m = Model::load(&src, quant).map_err(|e| e.to_string())?;
    let adapter = adapter.map(|d| LoraParams::load_peft(d, &m.config)).transpose().map_err(|e| e.to_string())?;
    Ok(Loaded { model: m, adapter, src_path: model.to_path_buf() })
}

/// `logits`: one forward pass over `tokens` (no BOS added) written as `logits` `(T, V)` f32.
pub fn logits(l: &Loaded, tokens: &[u32], output: &Path) -> Result<(), String> {
    let vars = l.adapter.as_ref().map(LoraVars::constants).transpose().map_err(|e| e.to_string())?;
    let out =
        autograd::no_grad(|| l.model.forward(tokens, 1, vars.as_ref(), None, false)).map_err(|e| e.to_string())?;
    let v = out.value().to_vec::<f32>().map_err(|e| e.to_string())?;
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, out.dims().to_vec(), &bytes)
        .map_err(|e| e.to_string())?;
    let file = safetensors::serialize([("logits", view)], None).map_err(|e| e.to_string())?;
    llama::lora::write_atomic(output, &file).map_err(|e| e.to_string())
}

/// `generate`: stream text after `prompt` (wrapped in the chat template with `chat`).
pub fn generate(l: &Loaded, prompt: &str, chat: bool, s: &Sampling) -> Result<String, String> {
    let tok = llama::Tokenizer::for_model(&l.src_path).map_err(|e| e.to_string())?;
    let text = if chat {
        let template = tok.chat_template().cloned().unwrap_or_else(llama::ChatTemplate::smollm2);
        let msgs = [llama::ChatMessage { role: "user".into(), content: prompt.to_string() }];
        llama::apply_chat_template(&template, &msgs, true).map_err(|e| e.to_string())?
    } else {
        prompt.to_string()
    };
    let ids = tok.encode(&text, !chat).map_err(|e| e.to_string())?;
    let mut stop: Vec<u32> = l.model.config.eos_token_ids.clone();
    stop.extend(tok.eos_id());
    let vars = l.adapter.as_ref().map(LoraVars::constants).transpose().map_err(|e| e.to_string())?;
    let mut produced: Vec<u32> = Vec::new();
    let mut printed = String::new();
    let mut stdout = std::io::stdout();
    generate::generate(&l.model, vars.as_ref(), &ids, s, &stop, &mut |id| {
        produced.push(id);
        // Decode the whole continuation and print what is new, so multi-token characters stream right.
        let now = tok.decode(&produced, false)?;
        if now.len() > printed.len() && now.starts_with(&printed) {
            let _ = write!(stdout, "{}", &now[printed.len()..]);
            let _ = stdout.flush();
            printed = now;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    let _ = writeln!(stdout);
    Ok(printed)
}

/// `eval`: mean next-token loss and perplexity over a dataset.
pub fn eval(l: &Loaded, data_path: &Path, seq_len: usize, batch_size: usize) -> Result<(f64, f64), String> {
    let tok = llama::Tokenizer::for_model(&l.src_path).map_err(|e| e.to_string())?;
    let bos = tok.bos_id().or(l.model.config.bos_token_id).unwrap_or(1);
    let eos = tok.eos_id().or(l.model.config.eos_token_ids.first().copied()).unwrap_or(2);
    let enc = TokenizerEncoder { tok, bos, eos };
    let ex = data::load_examples(data_path, &enc, DataOptions { seq_len, train_on_source: false })?;
    let loss = train::evaluate(&l.model, l.adapter.as_ref(), &ex, batch_size)?;
    Ok((loss, loss.exp()))
}

/// `merge`: dequantize the base, add `(alpha/r)·B·A` to every adapted projection, and write a
/// Hugging Face directory (`config.json`, `model.safetensors`, `tokenizer.json` when available)
/// in `dtype`. Tensors are written one at a time after a precomputed header, so only one dense
/// weight is in memory at once.
pub fn merge(l: &Loaded, output: &Path, dtype: tensor::DType) -> Result<(), String> {
    use llama::lora::{module_path, PROJECTIONS};
    let adapter = l.adapter.as_ref().ok_or("merge needs --adapter")?;
    let m = &l.model;
    std::fs::create_dir_all(output).map_err(|e| format!("{}: {e}", output.display()))?;
    let c = &m.config;
    let mut names: Vec<(String, Vec<usize>)> = vec![("model.embed_tokens.weight".into(), m.embed.dims().to_vec())];
    for (li, layer) in m.layers.iter().enumerate() {
        names.push((format!("model.layers.{li}.input_layernorm.weight"), layer.input_norm.dims().to_vec()));
        names.push((format!("model.layers.{li}.post_attention_layernorm.weight"), layer.post_norm.dims().to_vec()));
        for p in 0..PROJECTIONS.len() {
            let (o, i) = llama::lora::proj_shape(c, p);
            names.push((format!("model.layers.{li}.{}.weight", module_path(p)), vec![o, i]));
        }
    }
    names.push(("model.norm.weight".into(), m.norm.dims().to_vec()));
    if let Some(h) = &m.lm_head {
        names.push(("lm_head.weight".into(), h.dims().to_vec()));
    }
    let mut w = StreamingSafetensors::create(&output.join("model.safetensors"), &names, dtype)?;
    let scale = adapter.config.scale();
    w.write(&m.embed)?;
    for (li, layer) in m.layers.iter().enumerate() {
        w.write(&layer.input_norm)?;
        w.write(&layer.post_norm)?;
        for p in 0..PROJECTIONS.len() {
            let dense = layer.proj[p].dense().map_err(|e| e.to_string())?;
            let merged = match adapter.slot(li, p) {
                Some(s) => {
                    let a = tensor::Tensor::from_slice(&adapter.data[s.a.clone()], [adapter.config.r, s.in_features])
                        .map_err(|e| e.to_string())?;
                    let b = tensor::Tensor::from_slice(&adapter.data[s.b.clone()], [s.out_features, adapter.config.r])
                        .map_err(|e| e.to_string())?;
                    dense
                        .add(&b.matmul(&a).and_then(|d| d.scale(scale)).map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())?
                }
                None => dense,
            };
            w.write(&merged)?;
        }
    }
    w.write(&m.norm)?;
    if let Some(h) = &m.lm_head {
        w.write(h)?;
    }
    w.finish()?;
    let cfg = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "vocab_size": c.vocab_size,
        "tie_word_embeddings": c.tie_word_embeddings,
        "max_position_embeddings": c.max_position_embeddings,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_ids.first(),
        "hidden_act": "silu",
        "torch_dtype": match dtype { tensor::DType::BF16 => "bfloat16", tensor::DType::F16 => "float16", _ => "float32" },
    });
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| e.to_string())?;
    llama::lora::write_atomic(&output.join("config.json"), text.as_bytes()).map_err(|e| e.to_string())?;
    if let Ok(tok) = llama::Tokenizer::for_model(&l.src_path) {
        tok.inner()
            .save(output.join("tokenizer.json"), false)
            .map_err(|e| format!("{}: {e}", output.join("tokenizer.json").display()))?;
    }
    Ok(())
}

/// A safetensors file written tensor by tensor: the header (with every offset) first, then each
/// tensor's bytes in order. Written under a temporary name and renamed at [`finish`](Self::finish).
struct StreamingSafetensors {
    file: std::io::BufWriter<std::fs::File>,
    tmp: PathBuf,
    path: PathBuf,
    dtype: tensor::DType,
}

impl StreamingSafetensors {
    fn create(path: &Path, names: &[(String, Vec<usize>)], dtype: tensor::DType) -> Result<Self, String> {
        let (st, size) = match dtype {
            tensor::DType::F32 => ("F32", 4),
            tensor::DType::BF16 => ("BF16", 2),
            tensor::DType::F16 => ("F16", 2),
            other => return Err(format!("--dtype {} is not one of f32, bf16, f16", other.as_str())),
        };
        let mut header = serde_json::Map::new();
        header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
        let mut off = 0usize;
        for (n, shape) in names {
            let len = shape.iter().product::<usize>() * size;
            header
                .insert(n.clone(), serde_json::json!({"dtype": st, "shape": shape, "data_offsets": [off, off + len]}));
            off += len;
        }
        let mut h = serde_json::to_string(&header).map_err(|e| e.to_string())?.into_bytes();
        while h.len() % 8 != 0 {
            h.push(b' ');
        }
        let tmp = path.with_extension("safetensors.tmp");
        let f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut file = std::io::BufWriter::new(f);
        file.write_all(&(h.len() as u64).to_le_bytes())
            .and_then(|_| file.write_all(&h))
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        Ok(StreamingSafetensors { file, tmp, path: path.to_path_buf(), dtype })
    }

    fn write(&mut self, t: &tensor::Tensor) -> Result<(), String> {
        let t = t.to_dtype(self.dtype).and_then(|t| t.contiguous()).map_err(|e| e.to_string())?;
        let bytes: Vec<u8> = match self.dtype {
            tensor::DType::F32 => {
                t.as_slice::<f32>().map_err(|e| e.to_string())?.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            tensor::DType::BF16 => {
                t.as_slice::<tensor::bf16>().map_err(|e| e.to_string())?.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            _ => t.as_slice::<tensor::f16>().map_err(|e| e.to_string())?.iter().flat_map(|v| v.to_le_bytes()).collect(),
        };
        self.file.write_all(&bytes).map_err(|e| format!("{}: {e}", self.tmp.display()))
    }

    fn finish(self) -> Result<(), String> {
        let f = self.file.into_inner().map_err(|e| format!("{}: {e}", self.tmp.display()))?;
        f.sync_all().map_err(|e| format!("{}: {e}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}
