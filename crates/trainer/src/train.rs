//! The QLoRA training loop: load and quantize the base model, attach LoRA adapters, and run
//! optimizer steps over gradient-accumulated micro-batches, with clipping, a schedule, evaluation,
//! checkpoints, Ctrl-C handling, a NaN guard (`--on-nan stop|skip`) and a free-space check.
//!
//! Loss normalisation: a step's loss is the sum of token losses over all its micro-batches divided
//! by the total number of target tokens in them (not a mean of per-micro-batch means), so
//! batch 4 × accum 1 equals batch 1 × accum 4 on the same tokens.
//! Not here: multi-device data parallelism, mixed-precision activations.

use crate::checkpoint::{self, TrainerState};
use crate::data::{self, Batch, DataOptions, Encoder, Example, Loader};
use crate::optim::{AdamW, AdamW8bit, AdamWConfig, Optimizer, PagedAdamW};
use crate::report::{self, human_bytes, MetricsLog, StepMetrics};
use crate::schedule::{Schedule, ScheduleKind};
use crate::trainable::Trainable;
use autograd::Tape;
use llama::{LoraConfig, LoraParams, LoraVars, Model};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use tensor::Rng;

/// Every knob of a training run (the `train` flags of CLI.md).
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub model: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    /// Optimizer steps; `None` means `epochs` passes over the training split.
    pub steps: Option<usize>,
    pub epochs: f64,
    pub seq_len: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f32,
    pub schedule: ScheduleKind,
    pub warmup_ratio: f64,
    pub max_grad_norm: f32,
    pub weight_decay: f64,
    pub lora: LoraConfig,
    /// `None` keeps the base model dense.
    pub quant: Option<nf4::QuantConfig>,
    pub optimizer: String,
    pub gradient_checkpointing: bool,
    /// Activation dtype between ops (f32, bf16, f16).
    pub compute_dtype: tensor::DType,
    /// Where the model, the adapters and the optimizer live (`--device`).
    pub device: tensor::Device,
    pub seed: u64,
    pub shuffle: bool,
    pub train_on_source: bool,
    pub init_adapter: Option<PathBuf>,
    pub resume: Option<PathBuf>,
    /// Save a checkpoint every N steps (0: only at the end).
    pub save_every: usize,
    /// Evaluate every N steps (0: only at the end).
    pub eval_every: usize,
    /// Held-out examples for evaluation.
    pub eval_examples: usize,
    /// At a NaN/Inf loss or gradient: stop (true, `--on-nan stop`) or skip that step's update
    /// (false, `--on-nan skip`; [`MAX_CONSECUTIVE_NAN_SKIPS`] in a row still stop).
    pub stop_on_nan: bool,
    /// Print progress (false in tests).
    pub verbose: bool,
}

/// With `--on-nan skip`, this many non-finite steps in a row stop the run as `--on-nan stop` does:
/// the model has diverged, and skipping more would only burn the data.
pub const MAX_CONSECUTIVE_NAN_SKIPS: usize = 5;

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub steps: usize,
    /// Steps whose update was skipped for a non-finite loss or gradient (`--on-nan skip`).
    pub skipped: usize,
    pub losses: Vec<f64>,
    pub final_eval_loss: Option<f64>,
    pub params: LoraParams,
    pub interrupted: bool,
    pub peak_rss: Option<u64>,
}

/// Set by the Ctrl-C handler; the loop saves a checkpoint and stops at the next step boundary.
pub static STOP: AtomicBool = AtomicBool::new(false);

/// A llama tokenizer as the data pipeline's [`Encoder`].
pub struct TokenizerEncoder {
    pub tok: llama::Tokenizer,
    pub bos: u32,
    pub eos: u32,
}

impl Encoder for TokenizerEncoder {
    fn encode(&self, text: &str) -> Result<Vec<u32>, String> {
        self.tok.encode(text, false).map_err(|e| e.to_string())
    }
    fn bos(&self) -> u32 {
        self.bos
    }
    fn eos(&self) -> u32 {
        self.eos
    }
}

/// Stands in for a missing tokenizer: pre-tokenized data never calls `encode`.
struct NoTokenizer {
    why: String,
    bos: u32,
    eos: u32,
}

impl Encoder for NoTokenizer {
    fn encode(&self, _: &str) -> Result<Vec<u32>, String> {
        Err(format!("this dataset needs a tokenizer: {}", self.why))
    }
    fn bos(&self) -> u32 {
        self.bos
    }
    fn eos(&self) -> u32 {
        self.eos
    }
}

macro_rules! say {
    ($cfg:expr, $($arg:tt)*) => { if $cfg.verbose { eprintln!($($arg)*); } };
}

/// Build the optimizer named on the command line over parameter tensors of `segments` sizes
/// (8-bit state never spans two tensors, and tensors under 4096 elements stay 32-bit).
pub fn make_optimizer(name: &str, segments: &[usize], cfg: AdamWConfig) -> Result<Box<dyn Optimizer>, String> {
    let n = segments.iter().sum();
    let host = || paged_alloc::PagedAllocator::host(paged_alloc::DEFAULT_PAGE_SIZE).map_err(|e| e.to_string());
    Ok(match name {
        "adamw" => Box::new(AdamW::new(cfg, n)),
        "paged-adamw" => Box::new(PagedAdamW::new(cfg, n, host()?).map_err(|e| e.to_string())?),
        "paged-adamw-8bit" => Box::new(AdamW8bit::paged(cfg, segments, host()?).map_err(|e| e.to_string())?),
        other => return Err(format!("--optimizer '{other}' is not one of adamw, paged-adamw, paged-adamw-8bit")),
    })
}

/// Mean next-token loss over `examples` without recording gradients.
pub fn evaluate(
    model: &Model,
    lora: Option<&LoraParams>,
    examples: &[Example],
    batch_size: usize,
) -> Result<f64, String> {
    let vars = lora.map(LoraVars::constants).transpose().map_err(|e| e.to_string())?;
    evaluate_with(model, vars.as_ref(), examples, batch_size)
}

/// [`evaluate`] with the adapters already as constants (on the model's device).
pub fn evaluate_with(
    model: &Model,
    vars: Option<&LoraVars>,
    examples: &[Example],
    batch_size: usize,
) -> Result<f64, String> {
    let (mut sum, mut count) = (0.0f64, 0usize);
    autograd::no_grad(|| -> Result<(), String> {
        for chunk in examples.chunks(batch_size.max(1)) {
            let refs: Vec<&Example> = chunk.iter().collect();
            let b = Batch::pad(&refs, 0);
            let n = b.target_count();
            if n == 0 {
                continue;
            }
            let loss = model
                .loss(&b.input_ids, &b.labels, b.batch, vars, false, Some(1.0))
                .and_then(|l| Ok(l.value().to_scalar()?))
                .map_err(|e| e.to_string())?;
            sum += loss as f64;
            count += n;
        }
        Ok(())
    })?;
    if count == 0 {
        return Err("the evaluation examples have no target tokens".into());
    }
    Ok(sum / count as f64)
}

/// Gradients of one optimizer step, accumulated over `batches` into `grads` (zeroed here).
/// Returns the step's loss (sum over tokens / total target tokens) and the token count.
pub fn accumulate_step(
    model: &Model,
    params: &LoraParams,
    batches: &[Batch],
    grads: &mut [f32],
    checkpointing: bool,
    dropout_seed: u64,
) -> Result<(f64, usize), String> {
    grads.iter_mut().for_each(|g| *g = 0.0);
    let total: usize = batches.iter().map(Batch::target_count).sum();
    if total == 0 {
        return Ok((0.0, 0));
    }
    let mut loss = 0.0f64;
    for (i, b) in batches.iter().enumerate() {
        let tape = Tape::new();
        let vars = LoraVars::leaves(&tape, params, dropout_seed.wrapping_add(i as u64 * 0x1000_0001))
            .map_err(|e| e.to_string())?;
        let l = model
            .loss(&b.input_ids, &b.labels, b.batch, Some(&vars), checkpointing, Some(total as f32))
            .map_err(|e| e.to_string())?;
        loss += l.value().to_scalar().map_err(|e| e.to_string())? as f64;
        let g = tape.backward(&l).map_err(|e| e.to_string())?;
        vars.accumulate_grads(&g, grads).map_err(|e| e.to_string())?;
    }
    Ok((loss, total))
}

/// Run training end to end as configured.
pub fn train(cfg: &TrainConfig) -> Result<TrainSummary, String> {
    let t_load = Instant::now();
    std::fs::create_dir_all(&cfg.out)
        .map_err(|e| format!("{}: cannot create output directory: {e}", cfg.out.display()))?;
    let probe = cfg.out.join(".write-test");
    std::fs::write(&probe, b"ok").map_err(|e| match crate::disk::is_disk_full(&e) {
        true => crate::disk::write_error(&probe, &e, &cfg.out),
        false => format!("{}: output directory is not writable: {e}", cfg.out.display()),
    })?;
    let _ = std::fs::remove_file(&probe);
    checkpoint::recover(&cfg.out)?;

    let src = llama::WeightSource::open(&cfg.model).map_err(|e| e.to_string())?;
    let mcfg = src.config().clone();
    if cfg.seq_len > mcfg.max_position_embeddings && mcfg.max_position_embeddings > 0 {
        return Err(format!(
            "--seq-len {} exceeds the model's context of {} positions",
            cfg.seq_len, mcfg.max_position_embeddings
        ));
    }
    // Pre-tokenized data needs no tokenizer; anything else reports the missing one when it asks.
    let enc: Box<dyn Encoder> = match src.tokenizer() {
        Ok(tok) => {
            let bos = tok.bos_id().or(mcfg.bos_token_id).unwrap_or(1);
            let eos = tok.eos_id().or(mcfg.eos_token_ids.first().copied()).unwrap_or(2);
            Box::new(TokenizerEncoder { tok, bos, eos })
        }
        Err(e) => Box::new(NoTokenizer {
            why: e.to_string(),
            bos: mcfg.bos_token_id.unwrap_or(1),
            eos: mcfg.eos_token_ids.first().copied().unwrap_or(2),
        }),
    };
    let examples = data::load_examples(
        &cfg.data,
        enc.as_ref(),
        DataOptions { seq_len: cfg.seq_len, train_on_source: cfg.train_on_source },
    )?;
    let (train_ex, eval_ex) = data::split(examples, cfg.eval_examples, cfg.seed);
    say!(cfg, "data: {} training and {} held-out examples from {}", train_ex.len(), eval_ex.len(), cfg.data.display());

    say!(
        cfg,
        "model: {} ({} layers, hidden {}) on {}, quantizing linears to {}",
        cfg.model.display(),
        mcfg.num_hidden_layers,
        mcfg.hidden_size,
        crate::report::device_name(cfg.device),
        cfg.quant.as_ref().map_or("dense f32".to_string(), |q| format!(
            "{:?} blocksize {} double-quant {}",
            q.quant_type, q.blocksize, q.double_quant
        ))
    );
    let bar = progress_bar(cfg.verbose, mcfg.num_hidden_layers as u64, "loading");
    let mut model = Model::load_on(&src, cfg.quant.as_ref(), cfg.device, &mut |d, _| bar.set_position(d as u64))
        .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    model.compute_dtype = cfg.compute_dtype;
    drop(src);

    let mut rng = Rng::new(cfg.seed);
    let (params, resumed) = match (&cfg.resume, &cfg.init_adapter) {
        (Some(dir), _) => {
            let (p, o, s) = checkpoint::load(dir, &mcfg)?;
            if p.config != cfg.lora {
                say!(cfg, "resume: using the checkpoint's LoRA config r={} alpha={}", p.config.r, p.config.alpha);
            }
            (p, Some((o, s)))
        }
        (None, Some(dir)) => (LoraParams::load_peft(dir, &mcfg).map_err(|e| e.to_string())?, None),
        (None, None) => (LoraParams::init(&mcfg, cfg.lora.clone(), &mut rng), None),
    };
    let n = params.len();
    let per_step = cfg.batch_size * cfg.grad_accum;
    let total_steps =
        cfg.steps.unwrap_or_else(|| ((cfg.epochs * train_ex.len() as f64) / per_step as f64).ceil().max(1.0) as usize);
    let schedule = Schedule::new(cfg.schedule, cfg.lr, cfg.warmup_ratio, total_steps);
    let adam = AdamWConfig { weight_decay: cfg.weight_decay, ..AdamWConfig::default() };
    let mut state = Trainable::new(params, &cfg.optimizer, adam, cfg.device)?;
    let mut loader = Loader::new(train_ex, cfg.shuffle, cfg.seed);
    let mut start = 0;
    let mut skipped = 0;
    if let Some((o, s)) = &resumed {
        state.load_state(o).map_err(|e| format!("resume: {e}"))?;
        loader.seek(s.data_position);
        start = s.step;
        skipped = s.skipped;
        say!(cfg, "resumed from step {} (loss {:.4})", s.step, s.last_loss);
    }

    // The memory plan, before any step runs.
    let act = activation_bytes(&mcfg, cfg.batch_size, cfg.seq_len, cfg.compute_dtype.size_in_bytes() as u64);
    say!(cfg, "memory plan:\n  quantized base weights {}\n  LoRA parameters {} ({} params) + gradients {}\n  optimizer state ({}) {}\n  activations at seq {} x batch {}: {} without checkpointing, {} with{}",
        human_bytes(model.weight_bytes() as u64), human_bytes(4 * n as u64), n, human_bytes(4 * n as u64), cfg.optimizer,
        human_bytes(state.state_bytes() as u64), cfg.seq_len, cfg.batch_size, human_bytes(act.0), human_bytes(act.1),
        if cfg.gradient_checkpointing { " (on)" } else { " (off)" });
    // Refuse now, not after hours of training, when the adapter and a checkpoint cannot fit.
    let plan = crate::disk::WritePlan {
        adapter: 4 * n as u64,
        optimizer: state.state_bytes() as u64,
        checkpoints: match cfg.save_every {
            0 => 1,
            k => (total_steps / k - start.min(total_steps) / k + 1) as u64,
        },
    };
    if let Some(free) = crate::disk::free_bytes(&cfg.out) {
        if let Some(warning) = plan.check(free, &cfg.out)? {
            eprintln!("{warning}");
        }
    }
    say!(
        cfg,
        "loaded in {:.1}s; training {} steps of {} sequences (batch {} x accum {}), lr {} {:?}",
        t_load.elapsed().as_secs_f64(),
        total_steps,
        per_step,
        cfg.batch_size,
        cfg.grad_accum,
        cfg.lr,
        cfg.schedule
    );

    let metrics_path = cfg.out.join("metrics.jsonl");
    let write_err = |path: &std::path::Path, e: std::io::Error| crate::disk::write_error(path, &e, &cfg.out);
    let mut log = MetricsLog::open(&metrics_path, start).map_err(|e| write_err(&metrics_path, e))?;
    let mut losses = Vec::new();
    let mut last_loss = resumed.as_ref().map_or(f64::NAN, |(_, s)| s.last_loss);
    let mut last_eval = None;
    if cfg.verbose && start == 0 && !eval_ex.is_empty() && total_steps > 0 {
        // The baseline the run's eval losses are compared against.
        let ev = evaluate_with(&model, Some(&state.eval_vars()?), &eval_ex, cfg.batch_size)?;
        say!(cfg, "before training: eval loss {ev:.4}, perplexity {:.2}", ev.exp());
    }
    let bar = progress_bar(cfg.verbose, total_steps as u64, "training");
    bar.set_position(start as u64);
    let base_name = cfg.model.to_string_lossy().to_string();
    let save = |state: &mut Trainable,
                step: usize,
                loader: &Loader,
                last_loss: f64,
                skipped: usize|
     -> Result<PathBuf, String> {
        let ts = TrainerState {
            step,
            total_steps,
            data_position: loader.position(),
            seed: cfg.seed,
            optimizer: cfg.optimizer.clone(),
            last_loss,
            skipped,
        };
        let opt = state.save_state()?;
        checkpoint::save(&cfg.out, state.host_params()?, &opt, &ts, Some(&base_name))
    };
    // A checkpoint is due after loop step `s` (skipped steps included) at multiples of --save-every.
    let due = |s: usize| cfg.save_every > 0 && s.is_multiple_of(cfg.save_every);
    let mut interrupted = false;
    let mut nan_run = 0; // consecutive non-finite steps
    let mut done = start; // loop steps completed, skipped ones included (what a checkpoint resumes after)
    for step in start..total_steps {
        if STOP.load(Ordering::SeqCst) {
            interrupted = true;
            let dir = save(&mut state, step, &loader, last_loss, skipped)?;
            bar.finish_and_clear();
            eprintln!("interrupted: saved {} (resume with --resume {})", dir.display(), dir.display());
            break;
        }
        done = step + 1;
        let t0 = Instant::now();
        let position = loader.position();
        let batches: Vec<Batch> =
            (0..cfg.grad_accum).map(|_| Batch::pad(&loader.next_examples(cfg.batch_size), 0)).collect();
        let dropout_seed = cfg.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (step as u64);
        let (loss, tokens) = state.accumulate(&model, &batches, cfg.gradient_checkpointing, dropout_seed)?;
        if tokens == 0 {
            say!(cfg, "step {}: no target tokens in this batch (all labels masked); skipped", step + 1);
            if due(step + 1) {
                save(&mut state, step + 1, &loader, last_loss, skipped)?;
            }
            continue;
        }
        // The norm before clipping; a NaN/Inf gradient makes it non-finite and leaves them as they are.
        let grad_norm = state.clip(cfg.max_grad_norm)?;
        let finite = loss.is_finite() && grad_norm.is_finite();
        if !finite {
            let what = format!(
                "step {}: non-finite loss or gradient (loss {loss}) from the batch at data position epoch {}, \
                 index {} ({per_step} example{} from there)",
                step + 1,
                position.epoch,
                position.index,
                if per_step == 1 { "" } else { "s" }
            );
            nan_run += 1;
            if cfg.stop_on_nan || nan_run >= MAX_CONSECUTIVE_NAN_SKIPS {
                bar.finish_and_clear();
                let last = checkpoint::latest(&cfg.out).map_or("none".to_string(), |p| p.display().to_string());
                let why = match cfg.stop_on_nan {
                    true => "--on-nan stop".to_string(),
                    false => format!(
                        "{nan_run} non-finite steps in a row (--on-nan skip gives up at {MAX_CONSECUTIVE_NAN_SKIPS})"
                    ),
                };
                return Err(format!(
                    "{what}; {why}: stopped without writing the NaN adapter (last good checkpoint: {last})"
                ));
            }
            // Discard the step: no parameter or optimizer-state update, the optimizer's step counter
            // stays; the data and the schedule move on.
            skipped += 1;
            let line = format!("warning: {what}; update skipped (--on-nan skip, {skipped} skipped so far)");
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
            bar.inc(1);
            if due(step + 1) {
                save(&mut state, step + 1, &loader, last_loss, skipped)?;
            }
            continue;
        }
        nan_run = 0;
        let lr = schedule.lr(step);
        state.step(lr)?;
        let dt = t0.elapsed().as_secs_f64();
        let seq_tokens: usize = batches.iter().map(|b| b.batch * b.seq).sum();
        last_loss = loss;
        losses.push(loss);
        let mut m = StepMetrics {
            step: step + 1,
            loss,
            lr: lr as f64,
            grad_norm: grad_norm as f64,
            tokens_per_s: seq_tokens as f64 / dt,
            tokens: seq_tokens,
            eval_loss: None,
            eval_ppl: None,
            skipped,
        };
        let is_last = step + 1 == total_steps;
        if !eval_ex.is_empty() && ((cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0) || is_last) {
            let ev = evaluate_with(&model, Some(&state.eval_vars()?), &eval_ex, cfg.batch_size)?;
            m.eval_loss = Some(ev);
            m.eval_ppl = Some(ev.exp());
            last_eval = Some(ev);
            let line = format!("step {}: eval loss {ev:.4}, perplexity {:.2}", step + 1, ev.exp());
            if bar.is_hidden() {
                say!(cfg, "{line}");
            } else {
                bar.println(line);
            }
        }
        log.write(&m).map_err(|e| write_err(&metrics_path, e))?;
        bar.set_message(format!("loss {loss:.4} lr {lr:.2e} {:.0} tok/s", m.tokens_per_s));
        bar.inc(1);
        if cfg.verbose && bar.is_hidden() {
            // No terminal (a log file, CI): one line per step instead of a bar.
            eprintln!(
                "step {}/{total_steps}: loss {loss:.4} lr {lr:.3e} grad-norm {grad_norm:.4} {:.0} tok/s",
                step + 1,
                m.tokens_per_s
            );
        }
        if due(step + 1) {
            save(&mut state, step + 1, &loader, loss, skipped)?;
        }
    }
    bar.finish_and_clear();
    let steps_done = done;
    if !interrupted {
        let params = state.host_params()?;
        checkpoint::ensure_finite(params, "the adapter")?;
        params.save_peft(&cfg.out, Some(&base_name)).map_err(|e| crate::disk::llama_write_error(e, &cfg.out))?;
        // Every path through the loop saved at the multiples of --save-every.
        if !due(steps_done) {
            save(&mut state, steps_done, &loader, last_loss, skipped)?;
        }
    }
    let params = state.into_params()?;
    let all = report::read_metrics(&metrics_path).unwrap_or_default();
    let svg = cfg.out.join("loss_curve.svg");
    llama::lora::write_atomic(&svg, report::loss_curve_svg(&all).as_bytes())
        .map_err(|e| crate::disk::llama_write_error(e, &cfg.out))?;
    let peak_rss = report::peak_rss_bytes();
    let on_device = report::device_peak_bytes(cfg.device)
        .map_or(String::new(), |(used, pool)| format!(", device {} (pool {})", human_bytes(used), human_bytes(pool)));
    say!(cfg, "done: {} steps{}, final loss {:.4}{}; peak memory {}{on_device} (plan above); wrote {}/adapter_model.safetensors, metrics.jsonl, loss_curve.svg",
        steps_done, if skipped > 0 { format!(" ({skipped} skipped: non-finite)") } else { String::new() }, last_loss, last_eval.map_or(String::new(), |e| format!(", eval loss {e:.4}")),
        peak_rss.map_or("unknown".into(), human_bytes), cfg.out.display());
    Ok(TrainSummary { steps: steps_done, skipped, losses, final_eval_loss: last_eval, params, interrupted, peak_rss })
}

/// Activation bytes of one micro-batch, `(without, with)` gradient checkpointing: tensors of `elem` bytes
/// saved for backward per token per layer (norm outputs, q/k/v and their rotations, attention
/// output, MLP gate/up/product), plus the logits and their gradient.
pub fn activation_bytes(m: &llama::LlamaConfig, batch: usize, seq: usize, elem: u64) -> (u64, u64) {
    let tokens = (batch * seq) as u64;
    let (c, f) = (m.hidden_size as u64, m.intermediate_size as u64);
    let qkv = ((m.num_attention_heads + 2 * m.num_key_value_heads) * m.head_dim) as u64;
    let per_layer = elem * tokens * (6 * c + 2 * qkv + 4 * f);
    // The logits and their gradient are f32 whatever the activation dtype.
    let head = 4 * tokens * 2 * m.vocab_size as u64;
    let layers = m.num_hidden_layers as u64;
    (per_layer * layers + head, elem * tokens * c * layers + per_layer + head)
}

fn progress_bar(visible: bool, len: u64, what: &str) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} [{{bar:30}}] {{pos}}/{{len}} {{elapsed_precise}} eta {{eta}} {{msg}}"
        ))
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Install the Ctrl-C handler that asks the loop to save and stop (idempotent).
pub fn install_ctrlc() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: finishing this step, saving a checkpoint, then stopping (Ctrl-C again to quit now)");
        });
    });
}
