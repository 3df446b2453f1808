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
        device: "cpu".into(),
        compute_dtype: "f32".into(),
        peak_tflops: None,
    }
}

#[test]
fn bench_step_runs_on_a_tiny_shape() {
    for ckpt in [false, true] {
        let r = run_bench(&BenchStepArgs { gradient_checkpointing: ckpt, ..args() }, false).expect("bench");
        assert!(r.tokens_per_s.is_finite() && r.tokens_per_s > 0.0);
        assert_eq!(r.losses.len(), 2);
        assert_eq!(r.mfu, None, "no peak known for the CPU");
        assert_eq!(r.device_peak, None);
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

#[test]
fn mfu_counts_six_flops_per_projection_and_head_weight() {
    let r = run_bench(&BenchStepArgs { peak_tflops: Some(1e-3), ..args() }, false).expect("bench");
    let c = args().model_config().unwrap();
    // hidden 64, kv 2 heads of 16, intermediate 128, 2 layers, vocab 256.
    let per_layer = 2.0 * 64.0 * 64.0 + 2.0 * 64.0 * 32.0 + 3.0 * 64.0 * 128.0;
    let want = 6.0 * (2.0 * per_layer + 64.0 * 256.0);
    assert_eq!(trainer::bench_step::flops_per_token(&c), want);
    let mfu = r.mfu.expect("mfu with --peak-tflops");
    let expect = r.tokens_per_s * want / 1e9;
    assert!((mfu - expect).abs() <= 1e-12 * expect, "{mfu} vs {expect}");
}

#[test]
fn cuda_without_the_backend_or_driver_is_a_clear_error() {
    match run_bench(&BenchStepArgs { device: "cuda".into(), ..args() }, false) {
        Err(err) => assert!(err.contains("--device cuda:0"), "{err}"),
        Ok(_) if cfg!(feature = "cuda") => {} // a GPU build on a GPU machine: it ran there
        Ok(_) => panic!("ran on CUDA in a build without the backend"),
    }
    let err = run_bench(&BenchStepArgs { compute_dtype: "bf16".into(), ..args() }, false).unwrap_err();
    assert!(err.contains("only f32 compute is supported on the CPU"), "{err}");
}

#[test]
fn datasheet_peaks_by_name() {
    use trainer::bench_step::datasheet_bf16_tflops as peak;
    assert_eq!(peak("NVIDIA H200"), Some(989.4));
    assert_eq!(peak("NVIDIA A100-SXM4-80GB"), Some(312.0));
    assert_eq!(peak("Some CPU"), None);
}
