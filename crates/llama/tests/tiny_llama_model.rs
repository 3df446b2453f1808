//! The end-to-end oracle: the tiny random Llama of `shared/reference/tiny-llama` (transformers +
//! PEFT + bitsandbytes on the CPU, copied into tests/fixtures). Logits in fp32, with NF4 + double
//! quantization, and with the PEFT adapter; the QLoRA loss; and every LoRA gradient.

use autograd::Tape;
use llama::{LoraParams, LoraVars, Model, WeightSource};
use safetensors::SafeTensors;
use std::path::PathBuf;

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama").join(p)
}

struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn load() -> Self {
        Reference { bytes: std::fs::read(fixture("reference.safetensors")).unwrap() }
    }
    fn f32(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
    }
    fn tokens(&self) -> Vec<u32> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor("tokens").unwrap();
        t.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32).collect()
    }
}

/// The bound for logits: 1e-5 relative to the largest reference logit (plus 1e-5 absolute).
const LOGIT_REL: f32 = 1e-5;
const LOGIT_ABS: f32 = 1e-5;

fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32, abs: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = (0.0f32, 0usize);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs();
        if d > worst.0 {
            worst = (d, i);
        }
    }
    let bound = rel * scale + abs;
    assert!(
        worst.0 <= bound,
        "{what}: max |diff| {} at {} (got {}, want {}) exceeds {bound}",
        worst.0,
        worst.1,
        got[worst.1],
        want[worst.1]
    );
}

fn nf4_cfg() -> nf4::QuantConfig {
    nf4::QuantConfig::default()
}

#[test]
fn fp32_logits_match_transformers() {
    let r = Reference::load();
    let src = WeightSource::open(fixture("")).unwrap();
    let model = Model::load(&src, None).unwrap();
    let logits = model.forward(&r.tokens(), 1, None, None, false).unwrap();
    assert_eq!(logits.dims(), &[32, 256]);
    assert_close("fp32 logits", &logits.value().to_vec::<f32>().unwrap(), &r.f32("logits_fp32"), LOGIT_REL, LOGIT_ABS);
}

#[test]
fn nf4_logits_match_bitsandbytes_spec() {
    let r = Reference::load();
    let src = WeightSource::open(fixture("")).unwrap();
    let model = Model::load(&src, Some(&nf4_cfg())).unwrap();
    let logits = model.forward(&r.tokens(), 1, None, None, false).unwrap();
    assert_close(
        "nf4 logits",
        &logits.value().to_vec::<f32>().unwrap(),
        &r.f32("logits_nf4_spec"),
        LOGIT_REL,
        LOGIT_ABS,
    );
}

#[test]
fn qlora_logits_loss_and_every_gradient_match_peft() {
    let r = Reference::load();
    let src = WeightSource::open(fixture("")).unwrap();
    let model = Model::load(&src, Some(&nf4_cfg())).unwrap();
    let adapter = LoraParams::load_peft(&fixture("adapter"), &model.config).unwrap();
    assert_eq!((adapter.config.r, adapter.config.alpha), (8, 16.0));
    let tokens = r.tokens();
    let logits = model.forward(&tokens, 1, Some(&LoraVars::constants(&adapter).unwrap()), None, false).unwrap();
    assert_close(
        "qlora logits",
        &logits.value().to_vec::<f32>().unwrap(),
        &r.f32("logits_qlora_spec"),
        LOGIT_REL,
        LOGIT_ABS,
    );

    let labels: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    for ckpt in [false, true] {
        let tape = Tape::new();
        let vars = LoraVars::leaves(&tape, &adapter, 0).unwrap();
        let loss = model.loss(&tokens, &labels, 1, Some(&vars), ckpt, None).unwrap();
        let l = loss.value().to_scalar().unwrap() as f64;
        assert!((l - 5.647463).abs() <= 1e-5, "QLoRA loss {l} vs PEFT 5.647463 (checkpointing {ckpt})");
        let grads = tape.backward(&loss).unwrap();
        let mut flat = vec![0.0f32; adapter.len()];
        vars.accumulate_grads(&grads, &mut flat).unwrap();
        for s in &adapter.slots {
            for (which, range) in [('A', &s.a), ('B', &s.b)] {
                let name = format!("grad.{}", s.peft_key(which));
                // The bound for gradients: 1e-4 relative to the tensor's largest entry.
                assert_close(
                    &format!("{name} (checkpointing {ckpt})"),
                    &flat[range.clone()],
                    &r.f32(&name),
                    1e-4,
                    1e-7,
                );
            }
        }
    }
}

#[test]
fn fresh_adapter_equals_base_model_at_step_zero() {
    let r = Reference::load();
    let src = WeightSource::open(fixture("")).unwrap();
    let model = Model::load(&src, Some(&nf4_cfg())).unwrap();
    let cfg = llama::LoraConfig::new(4, 8.0, 0.0, &llama::lora::PROJECTIONS).unwrap();
    let fresh = LoraParams::init(&model.config, cfg, &mut tensor::Rng::new(5));
    let tokens = r.tokens();
    let base = model.forward(&tokens, 1, None, None, false).unwrap().value().to_vec::<f32>().unwrap();
    let with = model.forward(&tokens, 1, Some(&LoraVars::constants(&fresh).unwrap()), None, false).unwrap();
    assert_eq!(with.value().to_vec::<f32>().unwrap(), base, "B = 0 makes the adapter path exactly zero");
}

#[test]
fn kv_cache_generation_matches_full_forward() {
    let r = Reference::load();
    let src = WeightSource::open(fixture("")).unwrap();
    let model = Model::load(&src, None).unwrap();
    let tokens = r.tokens();
    let full = model.forward(&tokens, 1, None, None, false).unwrap().value().to_vec::<f32>().unwrap();
    let mut cache = llama::KvCache::default();
    let mut got = Vec::new();
    let first = model.forward(&tokens[..20], 1, None, Some(&mut cache), false).unwrap();
    got.extend(first.value().to_vec::<f32>().unwrap());
    for &t in &tokens[20..] {
        got.extend(model.forward(&[t], 1, None, Some(&mut cache), false).unwrap().value().to_vec::<f32>().unwrap());
    }
    assert_eq!(cache.len(), 32);
    assert_close("cached logits", &got, &full, 1e-5, 1e-5);
}

#[test]
fn bad_ids_and_lengths_are_errors() {
    let src = WeightSource::open(fixture("")).unwrap();
    let model = Model::load(&src, None).unwrap();
    assert!(model.forward(&[1, 2, 300], 1, None, None, false).unwrap_err().to_string().contains("300"));
    assert!(model.forward(&[1, 2, 3], 2, None, None, false).is_err());
    let long = vec![1u32; 129];
    assert!(model.forward(&long, 1, None, None, false).unwrap_err().to_string().contains("context"));
}

#[test]
fn bf16_and_f16_activations_stay_close_to_f32_and_train() {
    let r = Reference::load();
    let src = WeightSource::open(fixture("")).unwrap();
    let mut model = Model::load(&src, Some(&nf4_cfg())).unwrap();
    let adapter = LoraParams::load_peft(&fixture("adapter"), &model.config).unwrap();
    let tokens = r.tokens();
    let labels: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let want = r.f32("logits_qlora_spec");
    // Rounding every activation to 8 (bf16) or 11 (f16) mantissa bits moves the logits by a few
    // ulps of that format relative to their scale; the loss and gradients must stay usable.
    for (dtype, rel) in [(tensor::DType::BF16, 3e-2f32), (tensor::DType::F16, 4e-3)] {
        model.compute_dtype = dtype;
        let logits = model.forward(&tokens, 1, Some(&LoraVars::constants(&adapter).unwrap()), None, false).unwrap();
        assert_eq!(logits.dtype(), tensor::DType::F32, "logits are f32 whatever the activations");
        assert_close(&format!("{dtype:?} logits"), &logits.value().to_vec::<f32>().unwrap(), &want, rel, 0.0);
        let tape = Tape::new();
        let vars = LoraVars::leaves(&tape, &adapter, 0).unwrap();
        let loss = model.loss(&tokens, &labels, 1, Some(&vars), true, None).unwrap();
        let l = loss.value().to_scalar().unwrap() as f64;
        assert!((l - 5.647463).abs() <= 10.0 * rel as f64, "{dtype:?} loss {l}");
        let grads = tape.backward(&loss).unwrap();
        let mut flat = vec![0.0f32; adapter.len()];
        vars.accumulate_grads(&grads, &mut flat).unwrap();
        for s in &adapter.slots {
            let name = format!("grad.{}", s.peft_key('B'));
            assert_close(&format!("{dtype:?} {name}"), &flat[s.b.clone()], &r.f32(&name), 10.0 * rel, 1e-6);
        }
    }
}
