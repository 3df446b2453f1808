//! The real default model and data (fetched by scripts/fetch-assets.sh, which CI runs first): a
//! short QLoRA run on SmolLM2-135M-Instruct over four Alpaca demo records must lower the loss on
//! them, through the same `train` the CLI's default run uses.

use llama::LoraConfig;
use trainer::schedule::ScheduleKind;
use trainer::train::{train, TrainConfig};

#[test]
fn short_default_run_lowers_the_loss() {
    let model = llama::assets::default_model_path().unwrap_or_else(|e| panic!("{e}"));
    let data = llama::assets::default_data_path().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("qlora-real-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let rows: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&data).unwrap()).unwrap();
    let subset = dir.join("four.json");
    std::fs::write(&subset, serde_json::to_string(&rows[..4]).unwrap()).unwrap();
    let cfg = TrainConfig {
        model,
        data: subset,
        out: dir.join("out"),
        steps: Some(8),
        epochs: 1.0,
        seq_len: 96,
        batch_size: 2,
        grad_accum: 1,
        lr: 1e-3,
        schedule: ScheduleKind::Constant,
        warmup_ratio: 0.0,
        max_grad_norm: 0.3,
        weight_decay: 0.0,
        lora: LoraConfig::new(8, 16.0, 0.0, &llama::lora::PROJECTIONS).unwrap(),
        quant: Some(nf4::QuantConfig::default()),
        optimizer: "paged-adamw".into(),
        gradient_checkpointing: true,
        compute_dtype: tensor::DType::F32,
        device: tensor::Device::Cpu,
        seed: 1,
        shuffle: false,
        train_on_source: false,
        init_adapter: None,
        resume: None,
        save_every: 0,
        eval_every: 0,
        eval_examples: 0,
        stop_on_nan: true,
        verbose: false,
    };
    let s = train(&cfg).unwrap();
    assert_eq!(s.losses.len(), 8);
    // Four passes over the same two batches: compare the first pass with the last.
    let first = (s.losses[0] + s.losses[1]) / 2.0;
    let last = (s.losses[6] + s.losses[7]) / 2.0;
    assert!(last < 0.9 * first, "loss should fall by over 10% on four memorisable records: {:?}", s.losses);
    assert!(dir.join("out/adapter_model.safetensors").is_file());
}
