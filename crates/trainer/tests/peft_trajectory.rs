//! Our trainer against a 10-step QLoRA run made with PyTorch + PEFT (fixture
//! tests/fixtures/peft_trajectory/, made by scripts/reference/trajectory.py): the same tiny Llama
//! with spec NF4 + double-quant weights, the same starting adapter, data, batches, AdamW, clipping
//! and constant learning rate. Every step's loss must agree within 1e-3 (absolute).

use llama::{LoraConfig, LoraParams, WeightSource};
use std::path::PathBuf;
use trainer::schedule::ScheduleKind;
use trainer::train::{train, TrainConfig};

/// The tolerance on each step's loss (absolute).
const LOSS_TOL: f64 = 1e-3;
/// Final adapter: max |ours − PEFT| of each A or B tensor, relative to that tensor's max |PEFT|.
const ADAPTER_REL_TOL: f32 = 1e-3;
/// Pre-clip gradient norm of each step, relative.
const GRAD_NORM_REL_TOL: f64 = 1e-3;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny() -> PathBuf {
    manifest().join("../llama/tests/fixtures/tiny-llama")
}

fn fixture() -> PathBuf {
    manifest().join("tests/fixtures/peft_trajectory")
}

fn f64s(v: &serde_json::Value, key: &str) -> Vec<f64> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("trajectory.json: no '{key}'"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn ten_steps_match_peft() {
    let traj: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("trajectory.json")).unwrap()).unwrap();
    let want_loss = f64s(&traj, "losses");
    let want_norm = f64s(&traj, "grad_norms");
    assert_eq!(want_loss.len(), 10);

    let out = std::env::temp_dir().join(format!("qlora-peft-trajectory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let cfg = TrainConfig {
        model: tiny(),
        data: fixture().join("data.jsonl"),
        out: out.clone(),
        steps: Some(10),
        epochs: 1.0,
        seq_len: 16,
        batch_size: 2,
        grad_accum: 1,
        lr: 1e-3,
        schedule: ScheduleKind::Constant,
        warmup_ratio: 0.0,
        max_grad_norm: 0.3,
        weight_decay: 0.0,
        lora: LoraConfig::new(8, 16.0, 0.0, &llama::lora::PROJECTIONS).unwrap(),
        quant: Some(nf4::QuantConfig::default()),
        optimizer: "adamw".into(),
        gradient_checkpointing: false,
        compute_dtype: tensor::DType::F32,
        device: tensor::Device::Cpu,
        seed: 0,
        shuffle: false,
        train_on_source: false,
        init_adapter: Some(tiny().join("adapter")),
        resume: None,
        save_every: 0,
        eval_every: 0,
        eval_examples: 0,
        stop_on_nan: true,
        verbose: false,
    };
    let s = train(&cfg).unwrap();
    assert_eq!(s.steps, 10);

    // Losses (before each step's update).
    let mut max_loss = 0f64;
    println!("step  peft loss    our loss     diff");
    for (i, (o, w)) in s.losses.iter().zip(&want_loss).enumerate() {
        println!("{:>4}  {w:.7}  {o:.7}  {:+.2e}", i + 1, o - w);
        max_loss = max_loss.max((o - w).abs());
    }
    println!("max |loss diff| = {max_loss:.3e} (tolerance {LOSS_TOL:e})");

    // Pre-clip gradient norms, from our metrics log.
    let metrics = trainer::report::read_metrics(&out.join("metrics.jsonl")).unwrap();
    let mut max_norm = 0f64;
    for (m, w) in metrics.iter().zip(&want_norm) {
        max_norm = max_norm.max((m.grad_norm - w).abs() / w.abs());
    }
    println!("max relative grad-norm diff = {max_norm:.3e}");

    // Final adapter, tensor by tensor.
    let mcfg = WeightSource::open(tiny()).unwrap().config().clone();
    let peft = LoraParams::load_peft(&fixture().join("final_adapter"), &mcfg).unwrap();
    assert_eq!(peft.slots, s.params.slots);
    let mut max_rel = 0f32;
    let mut worst = String::new();
    for slot in &peft.slots {
        for (which, r) in [('A', slot.a.clone()), ('B', slot.b.clone())] {
            let (w, o) = (&peft.data[r.clone()], &s.params.data[r]);
            let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
            let diff = w.iter().zip(o).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            if diff / scale > max_rel {
                max_rel = diff / scale;
                worst = slot.peft_key(which);
            }
        }
    }
    println!("final adapter: max |ours - peft| / max|peft| per tensor = {max_rel:.3e} ({worst})");
    let _ = std::fs::remove_dir_all(&out);

    assert_eq!(s.losses.len(), want_loss.len());
    assert!(max_loss <= LOSS_TOL, "loss differs from PEFT by {max_loss:e} > {LOSS_TOL:e}");
    assert_eq!(metrics.len(), want_norm.len());
    assert!(max_norm <= GRAD_NORM_REL_TOL, "grad norm differs from PEFT by {max_norm:e} (relative)");
    assert!(max_rel <= ADAPTER_REL_TOL, "final adapter differs from PEFT by {max_rel:e} (relative, {worst})");
}
