//! `trainer bench-step`: time QLoRA optimizer steps on a randomly initialised model of a preset or
//! explicit shape, with no checkpoint or dataset, for the PyTorch + PEFT + bitsandbytes comparison
//! (scripts/bench-vs-torch.sh; the reference side is scripts/reference/qlora_step.py).
//!
//! A step is what `train` does for one micro-batch: random token ids (labels = ids), full
//! next-token loss, backward, clip to 0.3, optimizer step (lr 2e-4). Warm-up steps run first and
//! are not timed. Prints the memory plan, one progress line per built layer, a human summary, and
//! one machine-readable line on stdout:
//! `RESULT ours tokens_per_s=.. step_s=.. peak_rss_mib=..` (on a GPU, `--device cuda`, also
//! `mfu=.. device_peak_mib=.. device_pool_peak_mib=..`).
//!
//! On a GPU the step is timed to the end of the device's queued work, and MFU counts 6·N FLOPs per
//! token (N = the weights the step multiplies by: every projection and the head; the recompute of
//! gradient checkpointing is not credited) against the device's dense bf16 tensor-core peak
//! (`--peak-tflops`, or the datasheet figure for H100/H200/A100/L40S).
//! Not here: data loading, schedules, evaluation, checkpoints.

use crate::data::Batch;
use crate::optim::AdamWConfig;
use crate::report::{human_bytes, peak_rss_bytes};
use crate::train::activation_bytes;
use crate::trainable::Trainable;
use clap::Args;
use llama::{LlamaConfig, LoraConfig, LoraParams, Model};
use std::time::Instant;
use tensor::Rng;

#[derive(Args, Debug, Clone)]
pub struct BenchStepArgs {
    /// bench-512 or llama2-7b; the shape flags below override its fields.
    #[arg(long)]
    pub preset: Option<String>,
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long)]
    pub kv_heads: Option<usize>,
    #[arg(long)]
    pub intermediate: Option<usize>,
    #[arg(long)]
    pub vocab: Option<usize>,
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    pub warmup_steps: usize,
    #[arg(long, default_value_t = 8)]
    pub lora_r: usize,
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f32,
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub gradient_checkpointing: bool,
    /// adamw, paged-adamw or paged-adamw-8bit.
    #[arg(long, default_value = "adamw")]
    pub optimizer: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Worker threads (0: rayon's default, one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// No per-layer progress lines.
    #[arg(long, default_value_t = false)]
    pub quiet: bool,
    /// Print where the timed steps spend their time, op by op (forward and backward wall time).
    #[arg(long, default_value_t = false)]
    pub profile: bool,
    /// cpu, or cuda[:N] (a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, or bf16 / f16 on CUDA: the dtype activations are stored in.
    #[arg(long, default_value = "f32")]
    pub compute_dtype: String,
    /// The device's peak dense TFLOP/s for MFU (default: the datasheet's bf16 figure for known GPUs).
    #[arg(long)]
    pub peak_tflops: Option<f64>,
}

/// What a bench run measured.
#[derive(Debug, Clone)]
pub struct BenchResult {
    pub tokens_per_s: f64,
    /// Mean seconds per timed step.
    pub step_s: f64,
    pub build_s: f64,
    pub peak_rss: Option<u64>,
    pub losses: Vec<f64>,
    /// Model FLOPs utilisation (see the module docs), where the device's peak is known.
    pub mfu: Option<f64>,
    /// Peak device memory `(tensors, pool)` over the timed steps, on a GPU.
    pub device_peak: Option<(u64, u64)>,
}

/// FLOPs per token the MFU counts: 6 per weight of every projection and of the head.
pub fn flops_per_token(c: &LlamaConfig) -> f64 {
    let (h, kv, f) = (c.hidden_size as f64, (c.num_key_value_heads * c.head_dim) as f64, c.intermediate_size as f64);
    let per_layer = h * h * 2.0 + 2.0 * h * kv + 3.0 * h * f;
    6.0 * (per_layer * c.num_hidden_layers as f64 + h * c.vocab_size as f64)
}

/// The dense bf16 tensor-core peak of a GPU by its name (datasheet figures, SXM parts), TFLOP/s.
pub fn datasheet_bf16_tflops(name: &str) -> Option<f64> {
    let n = name.to_ascii_uppercase();
    [("H200", 989.4), ("H100", 989.4), ("GH200", 989.4), ("A100", 312.0), ("L40S", 362.1), ("A10G", 70.0)]
        .iter()
        .find(|(k, _)| n.contains(k))
        .map(|&(_, v)| v)
}

#[cfg(feature = "cuda")]
fn device_peak_tflops(device: tensor::Device) -> Option<f64> {
    match device {
        tensor::Device::Cuda(n) => datasheet_bf16_tflops(tensor::cuda::CudaDevice::get(n).ok()?.name()),
        tensor::Device::Cpu => None,
    }
}

#[cfg(not(feature = "cuda"))]
fn device_peak_tflops(_: tensor::Device) -> Option<f64> {
    None
}

impl BenchStepArgs {
    /// The model shape: the preset (if any) with explicit flags applied.
    pub fn model_config(&self) -> Result<LlamaConfig, String> {
        let mut c = match &self.preset {
            Some(p) => {
                llama::random::preset(p).ok_or_else(|| format!("--preset '{p}' is not one of bench-512, llama2-7b"))?
            }
            None => llama::random::preset("bench-512").ok_or("bench-512 preset missing")?,
        };
        if let Some(h) = self.hidden {
            c.hidden_size = h;
        }
        if let Some(l) = self.layers {
            c.num_hidden_layers = l;
        }
        if let Some(h) = self.heads {
            c.num_attention_heads = h;
            if self.kv_heads.is_none() {
                c.num_key_value_heads = h;
            }
        }
        if let Some(h) = self.kv_heads {
            c.num_key_value_heads = h;
        }
        if let Some(i) = self.intermediate {
            c.intermediate_size = i;
        }
        if let Some(v) = self.vocab {
            c.vocab_size = v;
        }
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(format!("--hidden {} must be a multiple of --heads {}", c.hidden_size, c.num_attention_heads));
        }
        c.head_dim = c.hidden_size / c.num_attention_heads;
        c.max_position_embeddings = c.max_position_embeddings.max(self.seq_len);
        Ok(c)
    }
}

/// Run the benchmark (see the module docs); `verbose` prints the plan and progress to stderr.
pub fn run_bench(a: &BenchStepArgs, verbose: bool) -> Result<BenchResult, String> {
    for (flag, v) in [("--seq-len", a.seq_len), ("--batch-size", a.batch_size), ("--steps", a.steps)] {
        if v == 0 {
            return Err(format!("{flag} must be at least 1"));
        }
    }
    if a.seq_len < 2 {
        return Err("--seq-len must be at least 2 (next-token loss)".into());
    }
    let mcfg = a.model_config()?;
    let device = crate::cli::check_device_and_dtype(&a.device, &a.compute_dtype)?;
    let compute_dtype: tensor::DType = a.compute_dtype.parse().map_err(|e| format!("--compute-dtype: {e}"))?;
    let all = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    let lora = LoraConfig::new(a.lora_r, a.lora_alpha, 0.0, &all).map_err(|e| format!("--lora-*: {e}"))?;
    let quant = nf4::QuantConfig::default();
    let mut rng = Rng::new(a.seed ^ 0x5EED);
    let params = LoraParams::init(&mcfg, lora, &mut rng);
    let n = params.len();
    let mut state = Trainable::new(params, &a.optimizer, AdamWConfig::default(), device)?;

    // The memory plan, before the model exists (NF4 double quant: 4.127 bits per parameter).
    let linears = mcfg.num_parameters()
        - mcfg.vocab_size * mcfg.hidden_size * if mcfg.tie_word_embeddings { 1 } else { 2 }
        - mcfg.hidden_size * (2 * mcfg.num_hidden_layers + 1);
    let quant_bytes = (linears as f64 * quant.bits_per_param() / 8.0) as u64;
    let f32_bytes = 4 * (mcfg.num_parameters() - linears) as u64;
    let act = activation_bytes(&mcfg, a.batch_size, a.seq_len, compute_dtype.size_in_bytes() as u64);
    if verbose {
        eprintln!(
            "bench-step: hidden {} layers {} heads {}/{} intermediate {} vocab {}; seq {} batch {}; LoRA r {} alpha {} on all 7 projections; {}; checkpointing {}; {} threads; on {} computing in {:?}",
            mcfg.hidden_size, mcfg.num_hidden_layers, mcfg.num_attention_heads, mcfg.num_key_value_heads,
            mcfg.intermediate_size, mcfg.vocab_size, a.seq_len, a.batch_size, a.lora_r, a.lora_alpha,
            a.optimizer, a.gradient_checkpointing, rayon::current_num_threads(), crate::report::device_name(device), compute_dtype
        );
        eprintln!(
            "memory plan:\n  NF4 linears {} ({} params) + f32 embed/head/norms {}\n  LoRA parameters {} ({} params) + gradients {}\n  optimizer state ({}) {}\n  activations at seq {} x batch {}: {} without checkpointing, {} with{}",
            human_bytes(quant_bytes), linears, human_bytes(f32_bytes), human_bytes(4 * n as u64), n,
            human_bytes(4 * n as u64), a.optimizer, human_bytes(state.state_bytes() as u64), a.seq_len, a.batch_size,
            human_bytes(act.0), human_bytes(act.1), if a.gradient_checkpointing { " (on)" } else { " (off)" }
        );
    }

    let t_build = Instant::now();
    let mut model = Model::random_on(&mcfg, Some(&quant), a.seed, device, &mut |d, total| {
        if verbose && !a.quiet {
            eprintln!(
                "  built layer {d}/{total} ({:.1}s, rss peak {})",
                t_build.elapsed().as_secs_f64(),
                peak_rss_bytes().map_or("?".into(), human_bytes)
            );
        }
    })
    .map_err(|e| e.to_string())?;
    model.compute_dtype = compute_dtype;
    let build_s = t_build.elapsed().as_secs_f64();
    if verbose {
        eprintln!(
            "built the random model in {build_s:.1}s: weights {}, peak RSS so far {}",
            human_bytes(model.weight_bytes() as u64),
            peak_rss_bytes().map_or("unknown".into(), human_bytes)
        );
    }

    let tokens = a.seq_len * a.batch_size;
    let mut data_rng = Rng::new(a.seed.wrapping_add(1));
    let (mut timed, mut losses) = (0.0f64, Vec::new());
    let mut opt_s = 0.0f64;
    for step in 0..a.warmup_steps + a.steps {
        if step == a.warmup_steps {
            if a.profile {
                autograd::profile::enable();
            }
            crate::report::synchronize(device)?;
            crate::report::reset_device_peak(device);
        }
        let ids: Vec<u32> = (0..tokens).map(|_| data_rng.below(mcfg.vocab_size) as u32).collect();
        let labels: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let batch = Batch { input_ids: ids, labels, batch: a.batch_size, seq: a.seq_len };
        let t0 = Instant::now();
        autograd::profile::mark();
        let (loss, _) = state.accumulate(&model, &[batch], a.gradient_checkpointing, step as u64)?;
        let t_opt = Instant::now();
        let norm = state.clip(0.3)?;
        state.step(2e-4)?;
        crate::report::synchronize(device)?;
        let dt = t0.elapsed().as_secs_f64();
        let warm = step < a.warmup_steps;
        if !warm {
            opt_s += t_opt.elapsed().as_secs_f64();
            timed += dt;
            losses.push(loss);
        }
        if verbose {
            eprintln!(
                "{} {}: loss {loss:.4} grad-norm {norm:.4} {dt:.3}s {:.1} tok/s",
                if warm { "warmup" } else { "step" },
                if warm { step + 1 } else { step + 1 - a.warmup_steps },
                tokens as f64 / dt
            );
        }
    }
    let step_s = timed / a.steps as f64;
    if a.profile && verbose {
        print_profile(autograd::profile::take(), a.steps, step_s, opt_s / a.steps as f64);
    }
    let tokens_per_s = tokens as f64 / step_s;
    let mfu = a
        .peak_tflops
        .or_else(|| device_peak_tflops(device))
        .map(|p| tokens_per_s * flops_per_token(&mcfg) / (p * 1e12));
    Ok(BenchResult {
        tokens_per_s,
        step_s,
        build_s,
        peak_rss: peak_rss_bytes(),
        losses,
        mfu,
        device_peak: crate::report::device_peak_bytes(device),
    })
}

/// The `--profile` table: per op, milliseconds per step in forward and backward and the share of
/// the step; the optimizer (clip + update) and what no op accounts for close it.
fn print_profile(rows: Vec<autograd::profile::OpTime>, steps: usize, step_s: f64, opt_s: f64) {
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e3 / steps as f64;
    let step_ms = step_s * 1e3;
    eprintln!("profile (ms per step; forward includes the glue since the previous op):");
    eprintln!("  {:<24} {:>9} {:>9} {:>9} {:>6} {:>7}", "op", "forward", "backward", "total", "share", "calls");
    let mut seen = 0.0;
    for r in &rows {
        let (f, b) = (per(r.forward), per(r.backward));
        seen += f + b;
        let calls = (r.forward_calls + r.backward_calls) / steps as u64;
        let share = 100.0 * (f + b) / step_ms;
        eprintln!("  {:<24} {f:>9.2} {b:>9.2} {:>9.2} {share:>5.1}% {calls:>7}", r.op, f + b);
    }
    let opt_ms = opt_s * 1e3;
    eprintln!("  {:<24} {:>9} {:>9} {opt_ms:>9.2} {:>5.1}%", "clip + optimizer", "", "", 100.0 * opt_ms / step_ms);
    let rest = step_ms - seen - opt_ms;
    eprintln!("  {:<24} {:>9} {:>9} {rest:>9.2} {:>5.1}%", "other", "", "", 100.0 * rest / step_ms);
}

/// The `bench-step` subcommand: run, print the summary and the RESULT line.
pub fn run(a: &BenchStepArgs) -> Result<(), String> {
    // The worker pool of `--threads` threads is set up by `cli::run`.
    let r = run_bench(a, true)?;
    let rss_mib = r.peak_rss.map_or(f64::NAN, |b| b as f64 / (1024.0 * 1024.0));
    eprintln!(
        "summary: {:.1} tokens/s, {:.3} s/step over {} steps (after {} warm-up), model built in {:.1}s, peak RSS {}",
        r.tokens_per_s,
        r.step_s,
        a.steps,
        a.warmup_steps,
        r.build_s,
        r.peak_rss.map_or("unknown".into(), human_bytes)
    );
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut extra = String::new();
    if let Some(m) = r.mfu {
        eprintln!("MFU {:.1} % (6N FLOPs per token, N = projections + head)", 100.0 * m);
        extra += &format!(" mfu={m:.4}");
    }
    if let Some((used, pool)) = r.device_peak {
        eprintln!(
            "peak device memory over the timed steps: {} in tensors, {} held by the pool",
            human_bytes(used),
            human_bytes(pool)
        );
        extra += &format!(" device_peak_mib={:.1} device_pool_peak_mib={:.1}", mib(used), mib(pool));
    }
    println!(
        "RESULT ours tokens_per_s={:.3} step_s={:.4} peak_rss_mib={:.1}{extra}",
        r.tokens_per_s, r.step_s, rss_mib
    );
    Ok(())
}
