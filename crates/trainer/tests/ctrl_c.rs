//! Ctrl-C during training: the trainer finishes the step it is in, writes a checkpoint, says how
//! to resume, and exits non-zero; resuming from that checkpoint completes the run.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../llama/tests/fixtures/tiny-llama")
}

#[test]
fn sigint_saves_a_checkpoint_that_resumes() {
    let dir = std::env::temp_dir().join(format!("qlora-ctrlc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data.jsonl");
    let rows: String = (0..64)
        .map(|i| {
            format!(
                "{{\"input_ids\": [{}]}}\n",
                (0..24).map(|j| ((i * 7 + j * 13) % 256).to_string()).collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    std::fs::write(&data, rows).unwrap();
    let out = dir.join("out");
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "train",
            "--model",
            tiny().to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "100000",
            "--seq-len",
            "24",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--lora-r",
            "4",
            "--lora-alpha",
            "8",
            "--lora-dropout",
            "0",
            "--eval-examples",
            "0",
            "--eval-every",
            "0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let child = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args(&[]))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for a few steps to be logged, then send SIGINT.
    let metrics = out.join("metrics.jsonl");
    let t0 = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |s| s.lines().count()) < 3 {
        assert!(t0.elapsed() < Duration::from_secs(120), "no training progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "an interrupted run exits non-zero");
    assert!(err.contains("interrupted") && err.contains("--resume"), "{err}");
    let ckpt = trainer::checkpoint::latest(&out).expect("a checkpoint was written on Ctrl-C");
    let step: usize = ckpt.file_name().unwrap().to_str().unwrap().strip_prefix("checkpoint-").unwrap().parse().unwrap();
    assert!(step >= 3);
    let logged = std::fs::read_to_string(&metrics).unwrap().lines().count();
    assert_eq!(logged, step, "the checkpoint is at the last completed step");
    // Resume to a few steps past the interruption.
    let target = (step + 2).to_string();
    let mut resume = args(&["--resume", ckpt.to_str().unwrap()]);
    let i = resume.iter().position(|a| a == "100000").unwrap();
    resume[i] = target.clone();
    let st = Command::new(env!("CARGO_BIN_EXE_trainer")).args(resume).stderr(Stdio::piped()).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    assert_eq!(std::fs::read_to_string(&metrics).unwrap().lines().count(), step + 2);
    assert!(out.join("adapter_model.safetensors").is_file());
}
