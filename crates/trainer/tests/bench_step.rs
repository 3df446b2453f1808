//! `bench-step` on a tiny random shape: it runs, reports finite numbers, and its loss is near
//! ln(vocab) for a random model.

use trainer::bench_step::{run_bench, BenchStepArgs};

fn args() -> BenchStepArgs {
    BenchStepArgs {
        preset: None,
        hidden: Some(64),
        layers: Some(2),
        heads: Some(4),
        kv_heads: Some(2),
        intermediate: Some(128),
        vocab: Some(256),
        seq_len: 16,
        batch_size: 2,
        steps: 2,
        warmup_steps: 1,
        lora_r: 4,
        lora_alpha: 8.0,
        gradient_checkpointing: false,
        optimizer: "adamw".into(),
        seed: 1,
        threads: 0,
        quiet: true,
        profile: false,
    }
}

#[test]
fn bench_step_runs_on_a_tiny_shape() {
    for ckpt in [false, true] {
        let r = run_bench(&BenchStepArgs { gradient_checkpointing: ckpt, ..args() }, false).expect("bench");
        assert!(r.tokens_per_s.is_finite() && r.tokens_per_s > 0.0);
        assert_eq!(r.losses.len(), 2);
        for l in &r.losses {
            assert!((l - (256f64).ln()).abs() < 0.5, "loss {l}");
        }
    }
}

#[test]
fn bench_step_rejects_bad_shapes() {
    assert!(run_bench(&BenchStepArgs { preset: Some("nope".into()), ..args() }, false).is_err());
    assert!(run_bench(&BenchStepArgs { heads: Some(5), ..args() }, false).is_err());
    assert!(run_bench(&BenchStepArgs { steps: 0, ..args() }, false).is_err());
}
