//! The Llama decoder in one file, on the autograd tape so training and inference share it.
//!
//! Legend: B batch, T new tokens, S keys (cache + new), N = B·T rows, C hidden, H query heads,
//! Hkv key/value heads, D head dim, F intermediate, V vocab.
//!
//! Reference: transformers 5.24 `modeling_llama.py`: RMSNorm in f32, half-split RoPE, causal GQA
//! attention with softmax in f32, SwiGLU MLP `down(silu(gate(x))·up(x))`, tied or untied head.
//! Each projection is frozen (dense f32 or NF4/FP4) with an optional LoRA path
//! `(alpha/r)·(dropout(x)·Aᵀ)·Bᵀ` whose A and B are the only trainable vars.
//! Deliberately not here: biases, sliding windows, RoPE scaling, bf16/f16 activations (compute is
//! f32; the weights may be stored in any format).

use crate::lora::{proj_shape, LoraParams, LoraSlot, PROJECTIONS};
use crate::{Error, LlamaConfig, Result, WeightSource};
use autograd::{ops as aops, Tape, Var};
use nf4::{Nf4Weight, QuantConfig};
use std::sync::Arc;
use tensor::{ops as tops, DType, Device, Tensor};

/// A frozen projection weight `(out, in)`.
pub enum Linear {
    Dense(Tensor),
    Quant(Arc<Nf4Weight>),
}

impl Linear {
    /// `x (N, in) -> (N, out)`; a gradient flows to `x` only.
    fn forward(&self, x: &Var) -> Result<Var> {
        Ok(match self {
            Linear::Dense(w) if x.dtype() != w.dtype() => {
                // bf16/f16 activations against an f32 weight: multiply in f32, store in x's dtype.
                x.to_dtype(w.dtype())?.matmul(&Var::constant(w.t()?))?.to_dtype(x.dtype())?
            }
            Linear::Dense(w) => x.matmul(&Var::constant(w.t()?))?,
            Linear::Quant(w) => nf4::linear::nf4_linear(x, w)?,
        })
    }
    /// The same weight on `device`: a dense weight copied, an NF4 weight with its codes and
    /// restored absmax uploaded (the host copy it keeps serves merging and export).
    pub fn to_device(&self, device: Device) -> Result<Linear> {
        Ok(match self {
            Linear::Dense(w) => Linear::Dense(w.to_device(device)?),
            Linear::Quant(w) if w.device() == device => Linear::Quant(w.clone()),
            Linear::Quant(w) => Linear::Quant(Arc::new(
                w.to_device(device).map_err(|e| Error::Model(format!("{}: to {device:?}: {e}", w.name())))?,
            )),
        })
    }
    /// The weight as a dense f32 tensor (for merging and export).
    pub fn dense(&self) -> Result<Tensor> {
        match self {
            Linear::Dense(w) => Ok(w.clone()),
            Linear::Quant(w) => w.dequantize().map_err(|e| Error::Model(e.to_string())),
        }
    }
    /// Bytes held by the weight.
    pub fn bytes(&self) -> usize {
        match self {
            Linear::Dense(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Linear::Quant(w) => {
                w.packed().len()
                    + match w.absmax() {
                        nf4::Absmax::Plain(a) => 4 * a.len(),
                        nf4::Absmax::Nested(n) => n.codes.len() + 4 * n.nested_absmax.len() + 4,
                    }
            }
        }
    }
}

/// One decoder layer's frozen weights.
pub struct Layer {
    pub input_norm: Tensor,
    pub post_norm: Tensor,
    /// In [`PROJECTIONS`] order: q, k, v, o, gate, up, down.
    pub proj: [Linear; 7],
}

impl Layer {
    /// The layer's weights on `device`.
    pub fn to_device(&self, device: Device) -> Result<Layer> {
        let mut proj = Vec::with_capacity(7);
        for p in &self.proj {
            proj.push(p.to_device(device)?);
        }
        Ok(Layer {
            input_norm: self.input_norm.to_device(device)?,
            post_norm: self.post_norm.to_device(device)?,
            proj: proj.try_into().map_err(|_| Error::Model("seven projections".into()))?,
        })
    }
}

/// The trainable adapters of one forward pass: A and B vars per slot, with scale and dropout.
pub struct LoraVars {
    /// `vars[i] = (A, B)` for `params.slots[i]`.
    pub vars: Vec<(Var, Var)>,
    pub slots: Vec<LoraSlot>,
    pub scale: f32,
    pub dropout: f32,
    /// Seeds this pass's dropout masks (mixed with layer and projection).
    pub dropout_seed: u64,
}

impl LoraVars {
    /// Leaves on `tape` holding a copy of every adapter in `params`.
    pub fn leaves(tape: &Tape, params: &LoraParams, dropout_seed: u64) -> Result<Self> {
        let r = params.config.r;
        let mut vars = Vec::with_capacity(params.slots.len());
        for s in &params.slots {
            let a = Tensor::from_slice(&params.data[s.a.clone()], [r, s.in_features])?;
            let b = Tensor::from_slice(&params.data[s.b.clone()], [s.out_features, r])?;
            vars.push((tape.leaf(a), tape.leaf(b)));
        }
        Ok(LoraVars {
            vars,
            slots: params.slots.clone(),
            scale: params.config.scale(),
            dropout: params.config.dropout,
            dropout_seed,
        })
    }
    /// Leaves on `tape` that are views of `flat`, the adapters' flat parameter buffer `(n,)` f32
    /// laid out like `params.data` (on any device; nothing is copied). `params` gives the layout
    /// and config; its `data` is not read.
    pub fn leaves_of(tape: &Tape, params: &LoraParams, flat: &Tensor, dropout_seed: u64) -> Result<Self> {
        Self::views_of(params, flat, dropout_seed, params.config.dropout, |t| tape.leaf(t))
    }
    /// Constants (no gradient, no dropout) that are views of `flat` (see
    /// [`leaves_of`](Self::leaves_of)), for evaluation and generation on `flat`'s device.
    pub fn constants_of(params: &LoraParams, flat: &Tensor) -> Result<Self> {
        Self::views_of(params, flat, 0, 0.0, Var::constant)
    }
    fn views_of(
        params: &LoraParams,
        flat: &Tensor,
        dropout_seed: u64,
        dropout: f32,
        mut make: impl FnMut(Tensor) -> Var,
    ) -> Result<Self> {
        if flat.dims() != [params.len()] || flat.dtype() != DType::F32 {
            return Err(Error::Model(format!(
                "flat LoRA parameters: got {:?} {:?}, expected [{}] F32",
                flat.dims(),
                flat.dtype(),
                params.len()
            )));
        }
        let r = params.config.r;
        let view = |range: &std::ops::Range<usize>, shape: [usize; 2]| -> Result<Tensor> {
            Ok(flat.narrow(0, range.start, range.len())?.reshape(shape)?)
        };
        let mut vars = Vec::with_capacity(params.slots.len());
        for s in &params.slots {
            let (a, b) = (view(&s.a, [r, s.in_features])?, view(&s.b, [s.out_features, r])?);
            vars.push((make(a), make(b)));
        }
        Ok(LoraVars { vars, slots: params.slots.clone(), scale: params.config.scale(), dropout, dropout_seed })
    }
    /// Every slot's A and B gradient as one flat `(n,)` f32 tensor laid out like the params, on
    /// the device of the gradients (`device` when no adapter got one); zeros where an adapter got
    /// no gradient. The slots must tile `0..n` in order, as [`LoraParams::zeros`] lays them out.
    pub fn flat_grads(&self, grads: &autograd::Grads, n: usize, device: Device) -> Result<Tensor> {
        let mut pieces = Vec::with_capacity(2 * self.slots.len());
        let mut off = 0;
        for ((a, b), s) in self.vars.iter().zip(&self.slots) {
            for (v, range) in [(a, &s.a), (b, &s.b)] {
                if range.start != off {
                    return Err(Error::Model(format!(
                        "LoRA slot of layer {} at {}..{} does not follow the previous one (ends at {off})",
                        s.layer, range.start, range.end
                    )));
                }
                off = range.end;
                pieces.push(match grads.get(v) {
                    Some(g) if g.dtype() == DType::F32 => g.flatten_all()?,
                    Some(g) => g.to_dtype(DType::F32)?.flatten_all()?,
                    None => Tensor::zeros([range.len()], DType::F32).to_device(device)?,
                });
            }
        }
        if off != n {
            return Err(Error::Model(format!("LoRA slots cover {off} parameters, expected {n}")));
        }
        if pieces.is_empty() {
            return Ok(Tensor::zeros([0], DType::F32).to_device(device)?);
        }
        let refs: Vec<&Tensor> = pieces.iter().collect();
        Ok(Tensor::cat(&refs, 0)?)
    }
    /// Constants (no gradient) holding the adapters, for inference.
    pub fn constants(params: &LoraParams) -> Result<Self> {
        let r = params.config.r;
        let mut vars = Vec::with_capacity(params.slots.len());
        for s in &params.slots {
            let a = Tensor::from_slice(&params.data[s.a.clone()], [r, s.in_features])?;
            let b = Tensor::from_slice(&params.data[s.b.clone()], [s.out_features, r])?;
            vars.push((Var::constant(a), Var::constant(b)));
        }
        Ok(LoraVars { vars, slots: params.slots.clone(), scale: params.config.scale(), dropout: 0.0, dropout_seed: 0 })
    }
    /// Add every slot's A and B gradient into `flat` (laid out like the params).
    pub fn accumulate_grads(&self, grads: &autograd::Grads, flat: &mut [f32]) -> Result<()> {
        for ((a, b), s) in self.vars.iter().zip(&self.slots) {
            for (v, range) in [(a, &s.a), (b, &s.b)] {
                if let Some(g) = grads.get(v) {
                    let g = g.contiguous()?;
                    for (d, x) in flat[range.clone()].iter_mut().zip(g.as_slice::<f32>()?) {
                        *d += x;
                    }
                }
            }
        }
        Ok(())
    }
    /// The per-layer `(A, B)` pairs in projection order, for layer `l`.
    fn layer(&self, l: usize) -> [Option<(Var, Var)>; 7] {
        let mut out: [Option<(Var, Var)>; 7] = Default::default();
        for ((a, b), s) in self.vars.iter().zip(&self.slots) {
            if s.layer == l {
                out[s.proj] = Some((a.clone(), b.clone()));
            }
        }
        out
    }
}

/// Per-layer key/value cache for generation: `(B, Hkv, S, D)` each.
#[derive(Default)]
pub struct KvCache {
    kv: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.kv.first().and_then(|o| o.as_ref()).map_or(0, |(k, _)| k.dims()[2])
    }
    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A Llama model with frozen weights.
pub struct Model {
    pub config: LlamaConfig,
    /// `(V, C)`.
    pub embed: Tensor,
    pub layers: Vec<Arc<Layer>>,
    pub norm: Tensor,
    /// `(V, C)`; `None` when tied to the embedding.
    pub lm_head: Option<Tensor>,
    /// The dtype activations are stored in between ops (every op computes in f32 and rounds once
    /// to it); the logits are always f32. F32 by default; BF16/F16 halve activation memory.
    pub compute_dtype: DType,
}

/// Shape constants a layer needs, copied into checkpointed closures.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    h: usize,
    hkv: usize,
    d: usize,
    eps: f32,
}

impl Model {
    /// Load from any [`WeightSource`], quantizing each projection as it is read (one f32 weight in
    /// memory at a time) when `quant` is given; pre-quantized bnb 4-bit weights are kept as they are.
    pub fn load(src: &WeightSource, quant: Option<&QuantConfig>) -> Result<Model> {
        Self::load_with_progress(src, quant, &mut |_, _| {})
    }

    /// [`load`](Self::load), calling `progress(done, total)` after each layer.
    pub fn load_with_progress(
        src: &WeightSource,
        quant: Option<&QuantConfig>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        Self::load_on(src, quant, Device::Cpu, progress)
    }

    /// [`load_with_progress`](Self::load_with_progress) onto `device`: each layer is read,
    /// quantized and moved to the device before the next is read, so the host holds one layer's
    /// float weights at a time.
    pub fn load_on(
        src: &WeightSource,
        quant: Option<&QuantConfig>,
        device: Device,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Model> {
        let cfg = src.config().clone();
        let expect = |name: &str, t: &Tensor, shape: &[usize]| -> Result<()> {
            if t.dims() != shape {
                return Err(Error::tensor(
                    src.path(),
                    name,
                    format!("shape {:?} does not match the config's {:?}", t.dims(), shape),
                ));
            }
            Ok(())
        };
        let (v, c) = (cfg.vocab_size, cfg.hidden_size);
        let embed = src.tensor_f32("model.embed_tokens.weight")?;
        expect("model.embed_tokens.weight", &embed, &[v, c])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let input_norm = src.tensor_f32(&format!("{p}.input_layernorm.weight"))?;
            expect(&format!("{p}.input_layernorm.weight"), &input_norm, &[c])?;
            let post_norm = src.tensor_f32(&format!("{p}.post_attention_layernorm.weight"))?;
            expect(&format!("{p}.post_attention_layernorm.weight"), &post_norm, &[c])?;
            let mut proj = Vec::with_capacity(7);
            for (i, _) in PROJECTIONS.iter().enumerate() {
                let name = format!("{p}.{}.weight", crate::lora::module_path(i));
                let (out_f, in_f) = proj_shape(&cfg, i);
                let lin = if src.is_bnb_quantized(&name) {
                    let w = src.nf4_weight(&name)?;
                    if w.shape() != [out_f, in_f] {
                        return Err(Error::tensor(
                            src.path(),
                            &name,
                            format!("shape {:?} does not match the config's {:?}", w.shape(), [out_f, in_f]),
                        ));
                    }
                    Linear::Quant(Arc::new(w))
                } else {
                    let w = src.tensor_f32(&name)?;
                    expect(&name, &w, &[out_f, in_f])?;
                    match quant {
                        Some(q) => Linear::Quant(Arc::new(
                            Nf4Weight::quantize(&name, &w, q)
                                .map_err(|e| Error::tensor(src.path(), &name, e.to_string()))?,
                        )),
                        None => Linear::Dense(w),
                    }
                };
                proj.push(lin);
            }
            let proj: [Linear; 7] = proj.try_into().map_err(|_| Error::Model("seven projections".into()))?;
            layers.push(Arc::new(Layer { input_norm, post_norm, proj }.to_device(device)?));
            progress(l + 1, cfg.num_hidden_layers);
        }
        let norm = src.tensor_f32("model.norm.weight")?;
        expect("model.norm.weight", &norm, &[c])?;
        let lm_head = if src.contains("lm_head.weight") && !cfg.tie_word_embeddings {
            let h = src.tensor_f32("lm_head.weight")?;
            expect("lm_head.weight", &h, &[v, c])?;
            Some(h)
        } else if cfg.tie_word_embeddings {
            None
        } else {
            return Err(Error::tensor(src.path(), "lm_head.weight", "missing and tie_word_embeddings is false"));
        };
        let lm_head = lm_head.map(|h| h.to_device(device)).transpose()?;
        Ok(Model {
            config: cfg,
            embed: embed.to_device(device)?,
            layers,
            norm: norm.to_device(device)?,
            lm_head,
            compute_dtype: DType::F32,
        })
    }

    /// The device holding the weights (and where every activation is computed).
    pub fn device(&self) -> Device {
        self.embed.device()
    }

    /// The model on `device`, layer by layer (each host layer is released once moved, unless
    /// shared elsewhere).
    pub fn to_device(self, device: Device) -> Result<Model> {
        if device == self.device() {
            return Ok(self);
        }
        let Model { config, embed, layers, norm, lm_head, compute_dtype } = self;
        let mut moved = Vec::with_capacity(layers.len());
        for l in layers {
            moved.push(Arc::new(l.to_device(device)?));
        }
        Ok(Model {
            config,
            embed: embed.to_device(device)?,
            layers: moved,
            norm: norm.to_device(device)?,
            lm_head: lm_head.map(|h| h.to_device(device)).transpose()?,
            compute_dtype,
        })
    }

    /// Bytes held by the frozen weights (quantized where quantized).
    pub fn weight_bytes(&self) -> usize {
        let t = |x: &Tensor| x.elem_count() * x.dtype().size_in_bytes();
        t(&self.embed)
            + t(&self.norm)
            + self.lm_head.as_ref().map_or(0, t)
            + self
                .layers
                .iter()
                .map(|l| t(&l.input_norm) + t(&l.post_norm) + l.proj.iter().map(Linear::bytes).sum::<usize>())
                .sum::<usize>()
    }

    /// The hidden states after the final norm, `(N, C)`, for `ids` `(B, T)` row-major, whose first
    /// position is `pos0` (the cache length when a cache is given).
    pub fn hidden(
        &self,
        ids: &[u32],
        batch: usize,
        lora: Option<&LoraVars>,
        mut cache: Option<&mut KvCache>,
        checkpointing: bool,
    ) -> Result<Var> {
        let cfg = &self.config;
        if batch == 0 || !ids.len().is_multiple_of(batch) || ids.is_empty() {
            return Err(Error::Model(format!("{} token ids do not split into {batch} equal rows", ids.len())));
        }
        let t = ids.len() / batch;
        let pos0 = cache.as_ref().map_or(0, |c| c.len());
        if pos0 + t > cfg.max_position_embeddings.max(1) && cfg.max_position_embeddings > 0 {
            return Err(Error::Model(format!(
                "sequence of {} positions exceeds the model's context of {}",
                pos0 + t,
                cfg.max_position_embeddings
            )));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= cfg.vocab_size) {
            return Err(Error::Model(format!("token id {bad} is out of range for vocab {}", cfg.vocab_size)));
        }
        let dims = Dims {
            b: batch,
            t,
            h: cfg.num_attention_heads,
            hkv: cfg.num_key_value_heads,
            d: cfg.head_dim,
            eps: cfg.rms_norm_eps as f32,
        };
        let device = self.device();
        let ids_t =
            Tensor::from_vec(ids.iter().map(|&i| i as i32).collect::<Vec<_>>(), [ids.len()])?.to_device(device)?;
        let mut x = Var::constant(tops::index::embedding(&self.embed, &ids_t)?.to_dtype(self.compute_dtype)?); // (N, C)
        let (cos, sin) = tops::rope::tables(cfg.head_dim, cfg.rope_theta, pos0, t)?;
        let (cos, sin) = (cos.to_device(device)?, sin.to_device(device)?);
        if let Some(c) = cache.as_deref_mut() {
            c.kv.resize_with(self.layers.len(), || None);
        }
        for (l, layer) in self.layers.iter().enumerate() {
            let adapters = match lora {
                Some(lv) => on_device(lv.layer(l), device)?,
                None => Default::default(),
            };
            let (scale, p, seed) = lora.map_or((0.0, 0.0, 0), |lv| {
                (lv.scale, lv.dropout, lv.dropout_seed ^ (l as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
            });
            let lora_cfg = LayerLora { scale, dropout: p, seed, dtype: self.compute_dtype };
            match cache.as_deref_mut() {
                Some(c) => {
                    let slot = &mut c.kv[l];
                    x = layer_forward(layer, &x, &adapters, lora_cfg, dims, &cos, &sin, Some(slot))?;
                }
                None if checkpointing && (x.requires_grad() || adapters.iter().any(Option::is_some)) => {
                    let params: Vec<Var> =
                        adapters.iter().flatten().flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
                    let present: Vec<bool> = adapters.iter().map(Option::is_some).collect();
                    let (layer, cos, sin) = (layer.clone(), cos.clone(), sin.clone());
                    let prefs: Vec<&Var> = params.iter().collect();
                    x = autograd::checkpoint(&[&x], &prefs, move |xs, ps| {
                        let mut it = ps.chunks(2);
                        let ad: [Option<(Var, Var)>; 7] = std::array::from_fn(|i| {
                            if present[i] {
                                it.next().map(|c| (c[0].clone(), c[1].clone()))
                            } else {
                                None
                            }
                        });
                        layer_forward(&layer, &xs[0], &ad, lora_cfg, dims, &cos, &sin, None)
                            .map_err(|e| tensor::Error::invalid("decoder layer", e.to_string()))
                    })?;
                }
                None => x = layer_forward(layer, &x, &adapters, lora_cfg, dims, &cos, &sin, None)?,
            }
        }
        let h = aops::rmsnorm(&x, &Var::constant(self.norm.clone()), dims.eps)?;
        Ok(if h.dtype() == DType::F32 { h } else { h.to_dtype(DType::F32)? })
    }

    /// Logits `(N, V)` for `ids` `(B, T)`.
    pub fn forward(
        &self,
        ids: &[u32],
        batch: usize,
        lora: Option<&LoraVars>,
        cache: Option<&mut KvCache>,
        checkpointing: bool,
    ) -> Result<Var> {
        let h = self.hidden(ids, batch, lora, cache, checkpointing)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        Ok(h.matmul(&Var::constant(head.t()?))?)
    }

    /// Mean next-token cross-entropy of a `(B, T)` batch whose labels are −100 where no loss, or
    /// the sum divided by `normaliser` when given (gradient accumulation over micro-batches).
    pub fn loss(
        &self,
        ids: &[u32],
        labels: &[i32],
        batch: usize,
        lora: Option<&LoraVars>,
        checkpointing: bool,
        normaliser: Option<f32>,
    ) -> Result<Var> {
        if labels.len() != ids.len() {
            return Err(Error::Model(format!("{} labels for {} token ids", labels.len(), ids.len())));
        }
        let logits = self.forward(ids, batch, lora, None, checkpointing)?;
        let targets = Tensor::from_vec(shift_labels(labels, batch), [labels.len()])?.to_device(self.device())?;
        Ok(aops::cross_entropy(&logits, &targets, crate::IGNORE_INDEX, normaliser)?)
    }
}

/// Adapters on the model's `device`: constants on another device are copied there (inference with
/// host adapters); a trainable leaf elsewhere is an error, since its gradient would be lost.
fn on_device(ad: [Option<(Var, Var)>; 7], device: Device) -> Result<[Option<(Var, Var)>; 7]> {
    let mv = |v: Var| -> Result<Var> {
        let d = v.value().device();
        if d == device {
            Ok(v)
        } else if v.requires_grad() {
            Err(Error::Model(format!(
                "a trainable LoRA adapter is on {d:?} but the model is on {device:?}: build the leaves on the model's device (LoraVars::leaves_of)"
            )))
        } else {
            Ok(Var::constant(v.value().to_device(device)?))
        }
    };
    let mut out: [Option<(Var, Var)>; 7] = Default::default();
    for (o, a) in out.iter_mut().zip(ad) {
        if let Some((a, b)) = a {
            *o = Some((mv(a)?, mv(b)?));
        }
    }
    Ok(out)
}

/// Targets for next-token prediction: position t of each row predicts label t+1; the last
/// position of each row predicts nothing (−100).
pub fn shift_labels(labels: &[i32], batch: usize) -> Vec<i32> {
    let t = labels.len() / batch.max(1);
    let mut out = vec![crate::IGNORE_INDEX; labels.len()];
    for b in 0..batch {
        for i in 0..t.saturating_sub(1) {
            out[b * t + i] = labels[b * t + i + 1];
        }
    }
    out
}

#[derive(Clone, Copy)]
struct LayerLora {
    scale: f32,
    dropout: f32,
    seed: u64,
    /// Activation dtype; the f32 adapters are cast to it (differentiably) when it differs.
    dtype: DType,
}

/// `x (N, in)` through projection `i` of `layer` plus its adapter, if any.
fn proj(layer: &Layer, i: usize, x: &Var, ad: &Option<(Var, Var)>, lc: LayerLora) -> Result<Var> {
    let base = layer.proj[i].forward(x)?;
    let Some((a, b)) = ad else { return Ok(base) };
    let xin = if lc.dropout > 0.0 {
        // Inverted dropout with a mask that depends only on (seed, projection), so a checkpointed
        // layer's recompute draws the same mask; made on x's device (element j is the j-th draw
        // of `Rng::new(seed)`, the same on every device).
        let seed = lc.seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
        let mask = tops::dropout::mask(x.dims().to_vec(), 1.0 - lc.dropout, seed, x.dtype(), x.value().device())?;
        x.mul(&Var::constant(mask))?
    } else {
        x.clone()
    };
    let (a, b) =
        if a.dtype() == lc.dtype { (a.clone(), b.clone()) } else { (a.to_dtype(lc.dtype)?, b.to_dtype(lc.dtype)?) };
    Ok(aops::lora(base, &xin, &a, &b, lc.scale)?)
}

#[allow(clippy::too_many_arguments)]
fn layer_forward(
    layer: &Layer,
    x: &Var,
    ad: &[Option<(Var, Var)>; 7],
    lc: LayerLora,
    dm: Dims,
    cos: &Tensor,
    sin: &Tensor,
    cache: Option<&mut Option<(Tensor, Tensor)>>,
) -> Result<Var> {
    let Dims { b, t, h, hkv, d, eps } = dm;
    let hn = aops::rmsnorm(x, &Var::constant(layer.input_norm.clone()), eps)?; // (N, C)
    let heads = |v: Var, n: usize| -> Result<Var> { Ok(v.reshape([b, t, n, d])?.transpose(1, 2)?) }; // (B, n, T, D)
    let q = aops::rope(&heads(proj(layer, 0, &hn, &ad[0], lc)?, h)?, cos, sin)?;
    let mut k = aops::rope(&heads(proj(layer, 1, &hn, &ad[1], lc)?, hkv)?, cos, sin)?;
    let mut v = heads(proj(layer, 2, &hn, &ad[2], lc)?, hkv)?;
    if let Some(slot) = cache {
        if let Some((pk, pv)) = slot.take() {
            k = Var::constant(Tensor::cat(&[&pk, k.value()], 2)?);
            v = Var::constant(Tensor::cat(&[&pv, v.value()], 2)?);
        }
        *slot = Some((k.value().contiguous()?, v.value().contiguous()?));
    }
    let att = aops::attention(&q, &k, &v, 1.0 / (d as f32).sqrt())?; // (B, H, T, D)
    let att = att.transpose(1, 2)?.reshape([b * t, h * d])?;
    let x = x.add(&proj(layer, 3, &att, &ad[3], lc)?)?;
    let hn = aops::rmsnorm(&x, &Var::constant(layer.post_norm.clone()), eps)?;
    let gate = proj(layer, 4, &hn, &ad[4], lc)?;
    let up = proj(layer, 5, &hn, &ad[5], lc)?;
    let mlp = proj(layer, 6, &aops::swiglu(&gate, &up)?, &ad[6], lc)?;
    Ok(x.add(&mlp)?)
}
