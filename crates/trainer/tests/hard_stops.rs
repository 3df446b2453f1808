//! Hard stops that are not kills: a non-finite loss (`--on-nan stop|skip`) and a full disk.
//!
//! NaN: a copy of the tiny model whose embedding row for one token is NaN, so exactly the batches
//! holding that token have a NaN loss and gradient. Disk full: the kernel's own errors, produced
//! without root. A child with `RLIMIT_FSIZE` (and SIGXFSZ ignored) gets EFBIG from any write past
//! the limit, on any Linux; where unprivileged user namespaces are allowed, a small tmpfs mounted
//! inside `unshare -rm` gives a real ENOSPC too, which also exercises the free-space check.
//! The `trainer` binary is run as users run it, and its stderr is what is checked.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use trainer::checkpoint;

const NAN_TOKEN: u32 = 255;

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../llama/tests/fixtures/tiny-llama")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qlora-hard-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_config() -> llama::LlamaConfig {
    llama::LlamaConfig::from_json_file(tiny().join("config.json")).unwrap()
}

/// The tiny model with the embedding row of [`NAN_TOKEN`] set to NaN.
fn poisoned_model(dir: &Path) -> PathBuf {
    use safetensors::{tensor::TensorView, SafeTensors};
    let m = dir.join("poisoned-model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(tiny().join("config.json"), m.join("config.json")).unwrap();
    let bytes = std::fs::read(tiny().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let hidden = tiny_config().hidden_size;
    let mut bufs: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> =
        st.tensors().into_iter().map(|(name, t)| (name, t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    let embed = bufs.iter_mut().find(|b| b.0 == "model.embed_tokens.weight").expect("embedding tensor");
    assert_eq!(embed.1, safetensors::Dtype::F32);
    let row = NAN_TOKEN as usize * hidden * 4;
    embed.3[row..row + hidden * 4].chunks_exact_mut(4).for_each(|c| c.copy_from_slice(&f32::NAN.to_le_bytes()));
    let views: Vec<(String, TensorView)> =
        bufs.iter().map(|(n, dt, shape, b)| (n.clone(), TensorView::new(*dt, shape.clone(), b).unwrap())).collect();
    std::fs::write(m.join("model.safetensors"), safetensors::serialize(views, None).unwrap()).unwrap();
    m
}

/// `n` pre-tokenized rows of 12 ids below 200; the rows in `poisoned` carry [`NAN_TOKEN`] mid-row.
fn write_ids(dir: &Path, n: usize, poisoned: &[usize]) -> PathBuf {
    let mut rng = tensor::Rng::new(7);
    let mut body = String::new();
    for r in 0..n {
        let mut ids: Vec<u32> = (0..12).map(|_| 3 + rng.below(197) as u32).collect();
        if poisoned.contains(&r) {
            ids[5] = NAN_TOKEN;
        }
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        body += &format!("{{\"input_ids\": [{}]}}\n", ids.join(", "));
    }
    let p = dir.join("data.jsonl");
    std::fs::write(&p, body).unwrap();
    p
}

/// `trainer train` on pre-tokenized data, one example per step, in file order.
fn trainer(model: &Path, data: &Path, out: &Path, steps: usize, save_every: usize) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.arg("train").arg("--model").arg(model).arg("--data").arg(data).arg("--out").arg(out);
    c.args(["--steps", &steps.to_string(), "--save-every", &save_every.to_string(), "--seq-len", "32"]);
    c.args(["--batch-size", "1", "--grad-accum", "1", "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0"]);
    c.args(["--lr", "1e-2", "--eval-examples", "0", "--eval-every", "0", "--optimizer", "adamw"]);
    c.args(["--shuffle", "false"]);
    c
}

fn run(c: &mut Command) -> (Output, String) {
    let o = c.output().expect("run trainer");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    (o, err)
}

fn run_ok(c: &mut Command) -> String {
    let (o, err) = run(c);
    assert!(o.status.success(), "trainer failed: {err}");
    err
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    v.sort();
    v
}

/// Every file of a directory, by name, with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    names(dir).into_iter().map(|n| (n.clone(), std::fs::read(dir.join(&n)).unwrap())).collect()
}

/// What a failed write must leave: no temporary checkpoint directory or file, and `latest` is
/// `want`, complete and loadable with finite parameters.
fn assert_clean_with_latest(out: &Path, want: &Path) {
    let stray: Vec<String> =
        names(out).into_iter().filter(|n| n.starts_with(".checkpoint-") || n.contains(".tmp.")).collect();
    assert!(stray.is_empty(), "partial writes left in {}: {stray:?}", out.display());
    assert_eq!(checkpoint::latest(out).as_deref(), Some(want), "latest checkpoint");
    let (p, o, s) = checkpoint::load(want, &tiny_config()).unwrap();
    assert!(p.data.iter().all(|v| v.is_finite()));
    let n: usize = want.file_name().unwrap().to_str().unwrap()["checkpoint-".len()..].parse().unwrap();
    assert_eq!((s.step, o.step as usize), (n, n), "{}", want.display());
}

#[test]
fn on_nan_skip_discards_non_finite_steps_and_goes_on() {
    let dir = tmp("skip");
    let model = poisoned_model(&dir);
    let data = write_ids(&dir, 8, &[2, 3]);
    let out = dir.join("out");
    let err = run_ok(trainer(&model, &data, &out, 6, 3).args(["--on-nan", "skip"]));
    // A warning per skipped step, naming the step and where its batch came from.
    for (step, index) in [(3, 2), (4, 3)] {
        let want = format!("warning: step {step}: non-finite loss or gradient (loss NaN) from the batch at data position epoch 0, index {index}");
        assert!(err.contains(&want), "missing '{want}' in:\n{err}");
    }
    assert_eq!(err.matches("warning: step").count(), 2, "{err}");
    assert!(err.contains("(2 skipped: non-finite)"), "{err}");
    // metrics.jsonl: the optimizer steps only, each with the running skipped count.
    let m = trainer::report::read_metrics(&out.join("metrics.jsonl")).unwrap();
    assert_eq!(m.iter().map(|m| (m.step, m.skipped)).collect::<Vec<_>>(), vec![(1, 0), (2, 0), (5, 2), (6, 2)]);
    assert!(m.iter().all(|m| m.loss.is_finite() && m.grad_norm.is_finite()));
    // No update and no optimizer step for the skipped ones: 4 AdamW steps in 6 training steps.
    let cfg = tiny_config();
    let (p3, o3, s3) = checkpoint::load(&out.join("checkpoint-3"), &cfg).unwrap();
    let (p6, o6, s6) = checkpoint::load(&out.join("checkpoint-6"), &cfg).unwrap();
    assert_eq!((o3.step, s3.skipped, s3.step), (2, 1, 3));
    assert_eq!((o6.step, s6.skipped, s6.step), (4, 2, 6));
    assert!(p3.data.iter().chain(&p6.data).all(|v| v.is_finite()));
    let adapter = llama::LoraParams::load_peft(&out, &cfg).unwrap();
    assert_eq!(adapter.data, p6.data);
    // The same data stops at the first NaN by default, with the last good checkpoint named.
    let (o, err) = run(&mut trainer(&model, &data, &dir.join("stop"), 6, 1));
    assert!(!o.status.success());
    assert!(err.contains("step 3: non-finite") && err.contains("--on-nan stop"), "{err}");
    assert!(err.contains(&format!("last good checkpoint: {}", dir.join("stop/checkpoint-2").display())), "{err}");
    assert!(!dir.join("stop/adapter_model.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn on_nan_skip_stops_after_a_run_of_non_finite_steps() {
    let n = trainer::train::MAX_CONSECUTIVE_NAN_SKIPS;
    let dir = tmp("skip-run");
    let model = poisoned_model(&dir);
    let poisoned: Vec<usize> = (1..=n).collect();
    let data = write_ids(&dir, n + 3, &poisoned);
    let out = dir.join("out");
    let (o, err) = run(trainer(&model, &data, &out, n + 3, 1).args(["--on-nan", "skip"]));
    assert!(!o.status.success(), "{err}");
    assert!(err.contains(&format!("step {}: non-finite", n + 1)), "{err}");
    assert!(err.contains(&format!("{n} non-finite steps in a row")), "{err}");
    assert_eq!(err.matches("warning: step").count(), n - 1, "{err}");
    assert!(!out.join("adapter_model.safetensors").exists(), "no adapter after a stop");
    // Checkpoints up to the last skipped step hold the parameters of step 1, all finite.
    let last = out.join(format!("checkpoint-{n}"));
    assert!(err.contains(&format!("last good checkpoint: {}", last.display())), "{err}");
    let cfg = tiny_config();
    let (p, o, s) = checkpoint::load(&last, &cfg).unwrap();
    let (p1, _, _) = checkpoint::load(&out.join("checkpoint-1"), &cfg).unwrap();
    assert_eq!((o.step, s.skipped), (1, n - 1));
    assert_eq!(p.data, p1.data);
    // --on-nan rejects anything else before loading.
    let (o, err) = run(trainer(&model, &data, &out, 2, 0).args(["--on-nan", "ignore"]));
    assert!(!o.status.success() && err.contains("--on-nan 'ignore' is not one of stop, skip"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn nan_parameters_are_never_written() {
    let cfg = tiny_config();
    let dir = tmp("nan-write");
    let lc = llama::LoraConfig::new(2, 4.0, 0.0, &["q_proj"]).unwrap();
    let mut p = llama::LoraParams::zeros(&cfg, lc);
    p.data[3] = f32::INFINITY;
    let opt = trainer::optim::OptimizerState { kind: "adamw".into(), step: 1, tensors: vec![] };
    let state = checkpoint::TrainerState {
        step: 1,
        total_steps: 2,
        data_position: trainer::data::DataPosition { epoch: 0, index: 1 },
        seed: 0,
        optimizer: "adamw".into(),
        last_loss: 1.0,
        skipped: 0,
    };
    let e = checkpoint::save(&dir, &p, &opt, &state, None).unwrap_err();
    assert!(e.contains("refusing to write checkpoint-1") && e.contains("parameter 3"), "{e}");
    assert!(names(&dir).is_empty(), "{:?}", names(&dir));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `cmd` will get EFBIG from any write that takes a file past `bytes` (SIGXFSZ, which would
/// kill it, is ignored; the disposition survives exec).
fn limit_file_size(cmd: &mut Command, bytes: u64) -> &mut Command {
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe calls.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
            match libc::setrlimit(libc::RLIMIT_FSIZE, &lim) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        })
    }
}

#[test]
fn file_too_large_while_saving_keeps_the_last_checkpoint() {
    let dir = tmp("efbig");
    let data = write_ids(&dir, 8, &[]);
    let out = dir.join("out");
    run_ok(&mut trainer(&tiny(), &data, &out, 2, 2));
    let ckpt2 = out.join("checkpoint-2");
    let (before, adapter_before) = (snapshot(&ckpt2), std::fs::read(out.join("adapter_model.safetensors")).unwrap());
    let adapter_len = adapter_before.len() as u64;
    let optimizer_len = std::fs::metadata(ckpt2.join("optimizer.safetensors")).unwrap().len();
    assert!(optimizer_len > adapter_len + 8192, "optimizer {optimizer_len} vs adapter {adapter_len}");

    // A limit between the adapter and the optimizer state: checkpoint-3 fails half-written.
    let limit = adapter_len + 4096;
    let resume = ["--resume", ckpt2.to_str().unwrap()];
    let (o, err) = run(limit_file_size(trainer(&tiny(), &data, &out, 4, 1).args(resume), limit));
    assert!(!o.status.success(), "{err}");
    let line = err.lines().last().unwrap_or_default();
    assert!(line.contains("disk full writing") && line.contains("optimizer.safetensors"), "{err}");
    assert!(line.contains("File too large") && line.contains(&format!("--resume {}", ckpt2.display())), "{err}");
    assert_clean_with_latest(&out, &ckpt2);
    assert_eq!(snapshot(&ckpt2), before, "checkpoint-2 changed");

    // A limit below the adapter: the final adapter write fails and the previous adapter stays.
    let (o, err) = run(limit_file_size(trainer(&tiny(), &data, &out, 3, 0).args(resume), adapter_len / 2));
    assert!(!o.status.success(), "{err}");
    let line = err.lines().last().unwrap_or_default();
    let target = out.join("adapter_model.safetensors");
    assert!(line.contains(&format!("disk full writing {}", target.display())), "{err}");
    assert!(line.contains(&format!("--resume {}", ckpt2.display())), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), adapter_before, "the previous adapter was touched");
    assert_clean_with_latest(&out, &ckpt2);

    // With room again, the named checkpoint resumes.
    run_ok(trainer(&tiny(), &data, &out, 4, 1).args(resume));
    assert_clean_with_latest(&out, &out.join("checkpoint-4"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `script` in bash inside a new user + mount namespace (root there, nobody outside), or
/// `None` where this kernel or its policy (AppArmor on Ubuntu 24.04) forbids them.
fn in_namespace(script: &str) -> Option<Output> {
    let probe = Command::new("unshare").args(["-rm", "true"]).output().ok()?;
    if !probe.status.success() {
        return None;
    }
    Some(Command::new("unshare").args(["-rm", "bash", "-c", script]).output().unwrap())
}

/// Bytes of the 4 KiB pages the files under `dir` take on a tmpfs, plus a page per directory.
fn pages(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            match e.file_type().unwrap().is_dir() {
                true => pages(&e.path()),
                false => e.metadata().unwrap().len().div_ceil(4096) * 4096,
            }
        })
        .sum::<u64>()
        + 4096
}

fn sh(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Needs unprivileged user namespaces, which not every runner allows, so it is ignored in the plain
/// suite (a pass there would hide that it never ran); `.ci/run` runs it with `--ignored` where
/// `unshare -rm true` works and says SKIPPED where it does not. Run by hand, it fails without them.
#[test]
#[ignore = "needs unprivileged user namespaces (unshare -rm); .ci/run runs it where allowed"]
fn no_space_on_a_small_tmpfs_refuses_early_or_keeps_the_last_checkpoint() {
    let dir = tmp("enospc");
    let data = write_ids(&dir, 8, &[]);
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let cmd = |c: Command| {
        let args: Vec<String> = c.get_args().map(|a| format!("'{}'", a.to_string_lossy())).collect();
        format!("{} {}", sh(Path::new(c.get_program())), args.join(" "))
    };

    // 64 KiB cannot hold an adapter and a checkpoint: refused before the first step.
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs {m} && {run}",
        m = sh(&mnt),
        run = cmd(trainer(&tiny(), &data, &mnt, 4, 1))
    );
    let o = in_namespace(&script)
        .expect("`unshare -rm` (unprivileged user namespaces) is not allowed here: this test cannot run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains(&format!("--out {}", mnt.display())) && err.contains("free on its filesystem"), "{err}");
    assert!(!err.contains("step 1/"), "refused only after training started: {err}");

    // Room for a few checkpoints past the free-space check, then ENOSPC mid-save.
    let out = dir.join("out");
    run_ok(&mut trainer(&tiny(), &data, &out, 2, 2));
    let size_kib = (pages(&out) + (3 << 20)) / 1024;
    let after = dir.join("after");
    let resume = mnt.join("checkpoint-2");
    let script = format!(
        "mount -t tmpfs -o size={size_kib}k tmpfs {m} && cp -a {o}/. {m}/ && {run}; rc=$?; cp -a {m} {a}; exit $rc",
        m = sh(&mnt),
        o = sh(&out),
        a = sh(&after),
        run = cmd({
            let mut c = trainer(&tiny(), &data, &mnt, 200, 1);
            c.arg("--resume").arg(&resume);
            c
        }),
    );
    let o = in_namespace(&script).expect("the namespace worked a moment ago");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "200 checkpoints fit in {size_kib} KiB? {err}");
    let line = err.lines().last().unwrap_or_default();
    assert!(line.contains("disk full writing") && line.contains("No space left on device"), "{err}");
    // The newest complete checkpoint is the one the message names, with its path inside the mount.
    let latest = checkpoint::latest(&after).expect("a checkpoint survived");
    let name = latest.file_name().unwrap().to_str().unwrap().to_string();
    assert!(line.contains(&format!("--resume {}", mnt.join(&name).display())), "{err}");
    assert_ne!(name, "checkpoint-2", "no checkpoint fitted at all: {err}");
    assert_clean_with_latest(&after, &latest);
    let _ = std::fs::remove_dir_all(&dir);
}
