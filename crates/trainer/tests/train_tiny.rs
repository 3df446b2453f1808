//! Training end to end on the tiny reference Llama (crates/llama/tests/fixtures/tiny-llama) with
//! pre-tokenized data: gradient accumulation, exact resume, export round trips, merge, NaN guard.

use llama::{LoraConfig, LoraParams, LoraVars, Model, WeightSource};
use std::path::{Path, PathBuf};
use tensor::Rng;
use trainer::data::{Batch, Example};
use trainer::schedule::ScheduleKind;
use trainer::train::{accumulate_step, train, TrainConfig};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../llama/tests/fixtures/tiny-llama")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qlora-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `n` pre-tokenized rows of varied length, as JSONL.
fn write_ids(dir: &Path, n: usize, seed: u64) -> PathBuf {
    let mut rng = Rng::new(seed);
    let mut body = String::new();
    for _ in 0..n {
        let len = 6 + rng.below(20);
        let ids: Vec<String> = (0..len).map(|_| rng.below(256).to_string()).collect();
        body += &format!("{{\"input_ids\": [{}]}}\n", ids.join(", "));
    }
    let p = dir.join("data.jsonl");
    std::fs::write(&p, body).unwrap();
    p
}

fn config(data: PathBuf, out: PathBuf, steps: usize) -> TrainConfig {
    TrainConfig {
        model: tiny(),
        data,
        out,
        steps: Some(steps),
        epochs: 1.0,
        seq_len: 32,
        batch_size: 2,
        grad_accum: 2,
        lr: 1e-2,
        schedule: ScheduleKind::Cosine,
        warmup_ratio: 0.1,
        max_grad_norm: 0.3,
        weight_decay: 0.01,
        lora: LoraConfig::new(4, 8.0, 0.1, &llama::lora::PROJECTIONS).unwrap(),
        quant: Some(nf4::QuantConfig::default()),
        optimizer: "paged-adamw".into(),
        gradient_checkpointing: true,
        compute_dtype: tensor::DType::F32,
        device: tensor::Device::Cpu,
        seed: 3,
        shuffle: true,
        train_on_source: false,
        init_adapter: None,
        resume: None,
        save_every: 0,
        eval_every: 0,
        eval_examples: 4,
        stop_on_nan: true,
        verbose: false,
    }
}

fn model() -> Model {
    Model::load(&WeightSource::open(tiny()).unwrap(), Some(&nf4::QuantConfig::default())).unwrap()
}

fn examples(n: usize) -> Vec<Example> {
    let mut rng = Rng::new(11);
    (0..n)
        .map(|_| {
            let len = 5 + rng.below(12);
            let ids: Vec<u32> = (0..len).map(|_| rng.below(256) as u32).collect();
            let mut labels: Vec<i32> = ids.iter().map(|&t| t as i32).collect();
            labels[..2].iter_mut().for_each(|l| *l = -100); // a masked prompt
            Example { input_ids: ids, labels }
        })
        .collect()
}

#[test]
fn batch_of_four_equals_four_accumulated_micro_batches() {
    let m = model();
    let mut p =
        LoraParams::init(&m.config, LoraConfig::new(4, 8.0, 0.0, &llama::lora::PROJECTIONS).unwrap(), &mut Rng::new(1));
    p.data.iter_mut().enumerate().for_each(|(i, v)| *v += ((i % 7) as f32 - 3.0) * 1e-3); // B ≠ 0
    let ex = examples(4);
    let refs: Vec<&Example> = ex.iter().collect();
    let one = [Batch::pad(&refs, 0)];
    let four: Vec<Batch> = ex.iter().map(|e| Batch::pad(&[e], 0)).collect();
    let (mut g1, mut g4) = (vec![0.0; p.len()], vec![0.0; p.len()]);
    let (l1, n1) = accumulate_step(&m, &p, &one, &mut g1, false, 0).unwrap();
    let (l4, n4) = accumulate_step(&m, &p, &four, &mut g4, true, 0).unwrap();
    assert_eq!(n1, n4);
    assert!((l1 - l4).abs() <= 1e-5 * l1.abs(), "loss {l1} vs {l4}");
    let scale = g1.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    for (a, b) in g1.iter().zip(&g4) {
        assert!((a - b).abs() <= 1e-5 * scale, "grad {a} vs {b} (scale {scale})");
    }
}

#[test]
fn resume_continues_bit_identically() {
    let dir = tmp("resume");
    let data = write_ids(&dir, 24, 5);
    let straight = train(&config(data.clone(), dir.join("a"), 6)).unwrap();
    assert_eq!(straight.steps, 6);
    // The same run saving checkpoint-3 on the way; then a fresh process resumes from it.
    let mut saving = config(data.clone(), dir.join("b"), 6);
    saving.save_every = 3;
    let saving_run = train(&saving).unwrap();
    assert_eq!(saving_run.losses, straight.losses, "save_every must not change the run");
    let mut resumed = config(data, dir.join("c"), 6);
    resumed.resume = Some(dir.join("b/checkpoint-3"));
    let r = train(&resumed).unwrap();
    assert_eq!(r.losses, straight.losses[3..].to_vec(), "resumed losses");
    assert_eq!(r.params.data, straight.params.data, "resumed adapter");
    assert!(straight.losses.iter().all(|l| l.is_finite()));
    // The written adapter reloads exactly and gives identical logits.
    let m = model();
    let back = LoraParams::load_peft(&dir.join("a"), &m.config).unwrap();
    assert_eq!(back.data, straight.params.data);
    let toks: Vec<u32> = (0..16).map(|i| (i * 13 % 256) as u32).collect();
    let a = m.forward(&toks, 1, Some(&LoraVars::constants(&back).unwrap()), None, false).unwrap();
    let b = m.forward(&toks, 1, Some(&LoraVars::constants(&straight.params).unwrap()), None, false).unwrap();
    assert_eq!(a.value().to_vec::<f32>().unwrap(), b.value().to_vec::<f32>().unwrap());
    // Metrics and the loss curve are there.
    let metrics = trainer::report::read_metrics(&dir.join("a/metrics.jsonl")).unwrap();
    assert_eq!(metrics.iter().map(|m| m.step).collect::<Vec<_>>(), (1..=6).collect::<Vec<_>>());
    assert!(std::fs::read_to_string(dir.join("a/loss_curve.svg")).unwrap().contains("polyline"));
}

#[test]
fn loss_goes_down_and_merge_matches_base_plus_adapter() {
    let dir = tmp("merge");
    let data = write_ids(&dir, 8, 9);
    let mut c = config(data, dir.join("out"), 12);
    c.lora.dropout = 0.0;
    c.shuffle = false;
    c.eval_examples = 0;
    let s = train(&c).unwrap();
    let first = s.losses[0];
    let last = *s.losses.last().unwrap();
    assert!(last < first, "loss should fall on 8 memorisable rows: {first} -> {last}");

    let loaded = trainer::commands::load(&tiny(), Some(&dir.join("out")), Some(&nf4::QuantConfig::default())).unwrap();
    trainer::commands::merge(&loaded, &dir.join("merged"), tensor::DType::F32).unwrap();
    let merged = Model::load(&WeightSource::open(dir.join("merged")).unwrap(), None).unwrap();
    let toks: Vec<u32> = (0..20).map(|i| (i * 29 % 256) as u32).collect();
    let want = loaded
        .model
        .forward(&toks, 1, Some(&LoraVars::constants(loaded.adapter.as_ref().unwrap()).unwrap()), None, false)
        .unwrap()
        .value()
        .to_vec::<f32>()
        .unwrap();
    let got = merged.forward(&toks, 1, None, None, false).unwrap().value().to_vec::<f32>().unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-4 * scale, "merged logit {g} vs {w}");
    }
}

#[test]
fn nan_adapter_stops_without_writing_an_adapter() {
    let dir = tmp("nan");
    let data = write_ids(&dir, 6, 2);
    let m = model();
    let mut p =
        LoraParams::init(&m.config, LoraConfig::new(4, 8.0, 0.0, &llama::lora::PROJECTIONS).unwrap(), &mut Rng::new(1));
    p.data[p.slots[0].b.start] = f32::NAN;
    p.save_peft(&dir.join("bad"), None).unwrap();
    let mut c = config(data, dir.join("out"), 3);
    c.init_adapter = Some(dir.join("bad"));
    let e = train(&c).unwrap_err();
    assert!(e.contains("non-finite") && e.contains("step 1"), "{e}");
    assert!(!dir.join("out/adapter_model.safetensors").exists(), "no NaN adapter is written");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dir = tmp("bad");
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let e = train(&config(empty, dir.join("o1"), 1)).unwrap_err();
    assert!(e.contains("empty.jsonl"), "{e}");
    let text = dir.join("t.jsonl");
    std::fs::write(&text, "{\"text\": \"hello\"}\n").unwrap();
    let e = train(&config(text, dir.join("o2"), 1)).unwrap_err();
    assert!(e.contains("tokenizer"), "the tiny model has no tokenizer: {e}");
    let data = write_ids(&dir, 4, 1);
    let mut c = config(data, dir.join("o3"), 1);
    c.seq_len = 4096;
    assert!(train(&c).unwrap_err().contains("context"));
}

#[test]
fn quantize_output_loads_to_the_same_logits_as_quantizing_on_load() {
    let dir = tmp("quantized");
    let args = trainer::quantize::QuantizeArgs {
        input: tiny().join("model.safetensors"),
        output: dir.join("model.safetensors"),
        quant: "nf4".into(),
        blocksize: 64,
        double_quant: true,
    };
    trainer::quantize::run(&args).unwrap();
    std::fs::copy(tiny().join("config.json"), dir.join("config.json")).unwrap();
    let src = WeightSource::open(&dir).unwrap();
    assert_eq!(src.kind(), llama::WeightSourceKind::Bnb4bit);
    let from_file = Model::load(&src, None).unwrap();
    let on_load = model();
    let toks: Vec<u32> = (0..24).map(|i| (i * 37 % 256) as u32).collect();
    let a = from_file.forward(&toks, 1, None, None, false).unwrap().value().to_vec::<f32>().unwrap();
    let b = on_load.forward(&toks, 1, None, None, false).unwrap().value().to_vec::<f32>().unwrap();
    assert_eq!(a, b, "the same NF4 bits either way");
}
