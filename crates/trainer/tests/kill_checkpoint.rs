//! Hard stops: the `trainer` binary is SIGKILLed at many moments of a run (loading, mid-step,
//! inside checkpoint writes, during the final save); after every kill the newest complete
//! `checkpoint-N/` must load and equal, bit for bit, the checkpoint an uninterrupted run wrote at
//! step N, and resuming (`--resume`) again and again must end with the same adapter and the same
//! per-step losses in metrics.jsonl. Also: an output path that cannot be created fails at once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trainer::checkpoint;
use trainer::optim::StateTensor;

const STEPS: usize = 10;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../llama/tests/fixtures/tiny-llama")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qlora-kill-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Pre-tokenized rows of varied length, as JSONL.
fn write_ids(dir: &Path) -> PathBuf {
    let mut rng = tensor::Rng::new(5);
    let mut body = String::new();
    for _ in 0..16 {
        let len = 6 + rng.below(20);
        let ids: Vec<String> = (0..len).map(|_| rng.below(256).to_string()).collect();
        body += &format!("{{\"input_ids\": [{}]}}\n", ids.join(", "));
    }
    let p = dir.join("data.jsonl");
    std::fs::write(&p, body).unwrap();
    p
}

fn spawn(data: &Path, out: &Path, resume: Option<&Path>) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.arg("train").arg("--model").arg(tiny()).arg("--data").arg(data).arg("--out").arg(out);
    c.args(["--steps", &STEPS.to_string(), "--save-every", "1", "--seq-len", "32", "--batch-size", "2"]);
    c.args(["--grad-accum", "1", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0", "--lr", "1e-2"]);
    c.args(["--eval-examples", "0", "--eval-every", "0", "--optimizer", "adamw", "--shuffle", "false"]);
    if let Some(r) = resume {
        c.arg("--resume").arg(r);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped());
    c.spawn().expect("spawn trainer")
}

fn run_to_end(data: &Path, out: &Path, resume: Option<&Path>) {
    let o = spawn(data, out, resume).wait_with_output().unwrap();
    assert!(o.status.success(), "trainer failed: {}", String::from_utf8_lossy(&o.stderr));
}

/// `(step, loss bits)` of every line of metrics.jsonl.
fn losses(out: &Path) -> Vec<(usize, u64)> {
    trainer::report::read_metrics(&out.join("metrics.jsonl"))
        .unwrap()
        .iter()
        .map(|m| (m.step, m.loss.to_bits()))
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn sigkill_at_any_moment_then_resume_is_exact() {
    let t_all = Instant::now();
    let cfg = llama::LlamaConfig::from_json_file(tiny().join("config.json")).unwrap();
    let dir = tmp("sigkill");
    let data = write_ids(&dir);

    // The uninterrupted reference, which also keeps every checkpoint-N to compare against.
    let reference = dir.join("reference");
    let t0 = Instant::now();
    run_to_end(&data, &reference, None);
    let t_ref = t0.elapsed();
    let ref_losses = losses(&reference);
    assert_eq!(ref_losses.iter().map(|l| l.0).collect::<Vec<_>>(), (1..=STEPS).collect::<Vec<_>>());
    let ref_final = llama::LoraParams::load_peft(&reference, &cfg).unwrap();
    let ref_ckpt: Vec<_> =
        (1..=STEPS).map(|n| checkpoint::load(&reference.join(format!("checkpoint-{n}")), &cfg).unwrap()).collect();

    // Kill after a random delay over the whole run, resume from the newest checkpoint, repeat;
    // a chain that finishes is checked and a new one starts, until enough kills have landed.
    let mut rng = tensor::Rng::new(0x5EED);
    let span = t_ref.as_secs_f64() * 1.1;
    let (mut kills, mut mid_save, mut chains) = (0, 0, 0);
    while kills < 40 {
        let out = dir.join(format!("chain-{chains}"));
        chains += 1;
        loop {
            let resume = checkpoint::latest(&out);
            let mut child = spawn(&data, &out, resume.as_deref());
            let deadline = Instant::now() + Duration::from_secs_f64(span * rng.uniform() as f64);
            let finished = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "trainer failed on its own (resume {resume:?})");
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(1));
            };
            if finished {
                break;
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            kills += 1;
            // Killed inside checkpoint::save: its temporary directory (named by pid) is left.
            let tmp_suffix = format!(".tmp-{}", child.id());
            let names: Vec<String> = std::fs::read_dir(&out)
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
                .unwrap_or_default();
            if names.iter().any(|n| n.starts_with(".checkpoint-") && n.ends_with(&tmp_suffix)) {
                mid_save += 1;
            }
            // The newest complete checkpoint loads and is exactly the reference's of that step.
            if let Some(latest) = checkpoint::latest(&out) {
                let n: usize = latest.file_name().unwrap().to_str().unwrap()["checkpoint-".len()..].parse().unwrap();
                let (p, o, s) = checkpoint::load(&latest, &cfg)
                    .unwrap_or_else(|e| panic!("kill {kills}: {} does not load: {e}", latest.display()));
                let (rp, ro, rs) = &ref_ckpt[n - 1];
                assert_eq!(bits(&p.data), bits(&rp.data), "kill {kills}: adapter of checkpoint-{n}");
                assert_eq!(&s, rs, "kill {kills}: trainer state of checkpoint-{n}");
                assert_eq!(o.step, ro.step);
                assert_eq!(o.tensors.len(), ro.tensors.len());
                for ((na, a), (nb, b)) in o.tensors.iter().zip(&ro.tensors) {
                    assert_eq!(na, nb);
                    let same = match (a, b) {
                        (StateTensor::F32(a), StateTensor::F32(b)) => bits(a) == bits(b),
                        (a, b) => a == b,
                    };
                    assert!(same, "kill {kills}: optimizer tensor {na} of checkpoint-{n} differs");
                }
            }
        }
        // The chain finished: same per-step losses and the same final adapter as the reference.
        assert_eq!(losses(&out), ref_losses, "chain {chains}: per-step losses differ after kills and resumes");
        let fin = llama::LoraParams::load_peft(&out, &cfg).unwrap();
        assert_eq!(bits(&fin.data), bits(&ref_final.data), "chain {chains}: final adapter differs");
    }
    eprintln!(
        "{kills} kills ({mid_save} with a checkpoint being written) over {chains} chains; reference run {:.2}s, total {:.1}s",
        t_ref.as_secs_f64(),
        t_all.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unwritable_output_fails_before_training() {
    let dir = tmp("unwritable");
    let data = write_ids(&dir);
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    // A path under a regular file (root ignores permission bits, not this), the file itself,
    // and a character device.
    for out in [file.join("run"), file.clone(), PathBuf::from("/dev/full")] {
        let t0 = Instant::now();
        let o = spawn(&data, &out, None).wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{}: training into it succeeded", out.display());
        assert!(err.contains(&*out.to_string_lossy()) && err.contains("output directory"), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{}: failed only after {:?}", out.display(), t0.elapsed());
    }
    assert!(!file.join("run").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
