//! The command line of `../shared/CLI.md`, parsed with clap: `train` (the default), `quantize`,
//! `logits`, `eval`, `generate` and `merge`. Each subcommand validates its flags here, before any
//! heavy work, and reports a one-line reason naming the flag or file.
//! Not here: the work itself (train.rs, commands.rs, quantize.rs).

use crate::schedule::ScheduleKind;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// QLoRA fine-tuning of Llama-architecture models, on the CPU or an NVIDIA GPU (`--device cuda`, a build with `--features cuda`).
#[derive(Parser, Debug)]
#[command(name = "trainer", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// With no subcommand: train with these flags.
    #[command(flatten)]
    pub train: TrainArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Fine-tune LoRA adapters over a quantized base model (the default).
    Train(TrainArgs),
    /// Quantize a model's linear weights into bitsandbytes' serialized 4-bit layout.
    Quantize(crate::quantize::QuantizeArgs),
    /// One forward pass over token ids; writes logits to a safetensors file.
    Logits(LogitsArgs),
    /// Mean loss and perplexity of a model (and adapter) on a dataset.
    Eval(EvalArgs),
    /// Generate text from a prompt, streamed to stdout.
    Generate(GenerateArgs),
    /// Fold an adapter into the dequantized base and write a Hugging Face model directory.
    Merge(MergeArgs),
    /// Time QLoRA steps on a random model of a preset shape (the PyTorch comparison's side).
    BenchStep(crate::bench_step::BenchStepArgs),
}

/// The quantization flags shared by `train`, `logits`, `eval` and `generate`.
#[derive(Args, Debug, Clone)]
pub struct QuantArgs {
    /// nf4, fp4, or none (keep the linears dense f32).
    #[arg(long, default_value = "nf4")]
    pub quant: String,
    /// Elements per absmax block (a power of two in 32..=4096).
    #[arg(long, default_value_t = 64)]
    pub blocksize: usize,
    /// Quantize the absmax values too (QLoRA's double quantization).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub double_quant: bool,
}

impl QuantArgs {
    /// The quantization config, or `None` for `--quant none`.
    pub fn config(&self) -> Result<Option<nf4::QuantConfig>, String> {
        let quant_type = match self.quant.as_str() {
            "none" => return Ok(None),
            "nf4" => nf4::QuantType::Nf4,
            "fp4" => nf4::QuantType::Fp4,
            q => return Err(format!("--quant '{q}' is not one of nf4, fp4, none")),
        };
        let cfg = nf4::QuantConfig { quant_type, blocksize: self.blocksize, double_quant: self.double_quant };
        cfg.validate().map_err(|e| format!("--blocksize {}: {e}", self.blocksize))?;
        Ok(Some(cfg))
    }
}

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Model path (HF directory, .gguf, or a `quantize` output); default: SmolLM2-135M-Instruct.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Dataset (Alpaca JSON/JSONL, {"text"} JSONL, {"input_ids"} JSONL, or .txt); default: Alpaca demo.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output directory for the adapter, metrics, loss curve and checkpoints.
    #[arg(long, default_value = "runs/qlora")]
    pub out: PathBuf,
    /// Optimizer steps (default 30 when --epochs is not given: a quick run).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Passes over the training split (used when --steps is not given).
    #[arg(long)]
    pub epochs: Option<f64>,
    #[arg(long, default_value_t = 192)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 2)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 2)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f32,
    /// constant, linear or cosine.
    #[arg(long, default_value = "constant")]
    pub schedule: String,
    #[arg(long, default_value_t = 0.03)]
    pub warmup_ratio: f64,
    #[arg(long, default_value_t = 0.3)]
    pub max_grad_norm: f32,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 64)]
    pub lora_r: usize,
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f32,
    #[arg(long, default_value_t = 0.05)]
    pub lora_dropout: f32,
    /// Comma-separated projections (default: all seven).
    #[arg(long, default_value = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")]
    pub target_modules: String,
    #[command(flatten)]
    pub quant: QuantArgs,
    /// Activation dtype: f32, bf16 or f16 (ops compute in f32 either way; logits and the LoRA
    /// weights stay f32).
    #[arg(long, default_value = "f32")]
    pub compute_dtype: String,
    /// adamw, paged-adamw or paged-adamw-8bit.
    #[arg(long, default_value = "paged-adamw")]
    pub optimizer: String,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub gradient_checkpointing: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub shuffle: bool,
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub train_on_source: bool,
    /// Start from this PEFT adapter (r, alpha and targets from its config).
    #[arg(long)]
    pub init_adapter: Option<PathBuf>,
    /// Continue from a checkpoint-N directory written by train.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Save a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    pub save_every: usize,
    /// Evaluate on the held-out split every N steps (0: only at the end).
    #[arg(long, default_value_t = 15)]
    pub eval_every: usize,
    /// Examples held out for evaluation.
    #[arg(long, default_value_t = 16)]
    pub eval_examples: usize,
    /// cpu, or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// At a NaN/Inf loss or gradient: stop (keeping the last good checkpoint), or skip that
    /// step's update and go on (5 non-finite steps in a row still stop).
    #[arg(long, default_value = "stop")]
    pub on_nan: String,
}

/// Refuse devices and dtypes this build cannot run, with the reason; the device otherwise.
pub fn check_device_and_dtype(device: &str, compute_dtype: &str) -> Result<tensor::Device, String> {
    let dev = device.parse::<tensor::Device>().map_err(|e| format!("--device: {e}"))?;
    if let tensor::Device::Cuda(n) = dev {
        check_cuda(n)?;
    }
    match (compute_dtype, dev) {
        ("f32", _) | ("bf16" | "f16", tensor::Device::Cuda(_)) => Ok(dev),
        ("bf16" | "f16", tensor::Device::Cpu) => Err(format!(
            "--compute-dtype {compute_dtype}: only f32 compute is supported on the CPU; use f32 (or --device cuda)"
        )),
        (other, _) => Err(format!("--compute-dtype '{other}' is not one of f32, bf16, f16")),
    }
}

/// `--device cuda:N` needs this build's CUDA backend, the driver, and device N.
#[cfg(feature = "cuda")]
fn check_cuda(n: usize) -> Result<(), String> {
    let count = tensor::cuda::device_count().map_err(|e| format!("--device cuda:{n}: {e}"))?;
    if n >= count {
        return Err(format!(
            "--device cuda:{n}: this machine has {count} CUDA device(s); use cuda:0..cuda:{}",
            count.max(1) - 1
        ));
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn check_cuda(n: usize) -> Result<(), String> {
    Err(format!(
        "--device cuda:{n}: this binary was built without the CUDA backend; build it with `--features cuda` \
         (cargo run --release -p trainer --features cuda -- --device cuda ...), or use --device cpu"
    ))
}

impl TrainArgs {
    /// Validate every flag and resolve defaults (fetching the default assets if needed).
    pub fn to_config(&self) -> Result<crate::train::TrainConfig, String> {
        let device = check_device_and_dtype(&self.device, &self.compute_dtype)?;
        let schedule: ScheduleKind = self.schedule.parse().map_err(|e| format!("--schedule: {e}"))?;
        let targets: Vec<&str> = self.target_modules.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        let lora = llama::LoraConfig::new(self.lora_r, self.lora_alpha, self.lora_dropout, &targets)
            .map_err(|e| format!("--lora-*: {e}"))?;
        let quant = self.quant.config()?;
        crate::train::make_optimizer(&self.optimizer, &[1], Default::default())?;
        for (flag, v) in
            [("--seq-len", self.seq_len), ("--batch-size", self.batch_size), ("--grad-accum", self.grad_accum)]
        {
            if v == 0 {
                return Err(format!("{flag} must be at least 1"));
            }
        }
        let stop_on_nan = match self.on_nan.as_str() {
            "stop" => true,
            "skip" => false,
            other => return Err(format!("--on-nan '{other}' is not one of stop, skip")),
        };
        if self.steps == Some(0) {
            return Err("--steps must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(format!("--lr {} must be a positive number", self.lr));
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return Err(format!("--warmup-ratio {} must be in [0, 1)", self.warmup_ratio));
        }
        if self.epochs.is_some_and(|e| e.is_nan() || e <= 0.0) {
            return Err("--epochs must be positive".into());
        }
        for (flag, p) in [("--init-adapter", &self.init_adapter), ("--resume", &self.resume)] {
            if let Some(p) = p {
                if !p.is_dir() {
                    return Err(format!("{flag} {}: no such directory", p.display()));
                }
            }
        }
        let model = match &self.model {
            Some(p) if !p.exists() => return Err(format!("--model {}: no such file or directory", p.display())),
            Some(p) => p.clone(),
            None => llama::assets::ensure_default_model().map_err(|e| e.to_string())?,
        };
        let data = match &self.data {
            Some(p) if !p.is_file() => return Err(format!("--data {}: no such file", p.display())),
            Some(p) => p.clone(),
            None => llama::assets::ensure_default_data().map_err(|e| e.to_string())?,
        };
        Ok(crate::train::TrainConfig {
            model,
            data,
            out: self.out.clone(),
            steps: self.steps.or(if self.epochs.is_none() { Some(30) } else { None }),
            epochs: self.epochs.unwrap_or(1.0),
            seq_len: self.seq_len,
            batch_size: self.batch_size,
            grad_accum: self.grad_accum,
            lr: self.lr,
            schedule,
            warmup_ratio: self.warmup_ratio,
            max_grad_norm: self.max_grad_norm,
            weight_decay: self.weight_decay,
            lora,
            quant,
            optimizer: self.optimizer.clone(),
            gradient_checkpointing: self.gradient_checkpointing,
            compute_dtype: self.compute_dtype.parse().map_err(|e| format!("--compute-dtype: {e}"))?,
            device,
            seed: self.seed,
            shuffle: self.shuffle,
            train_on_source: self.train_on_source,
            init_adapter: self.init_adapter.clone(),
            resume: self.resume.clone(),
            save_every: self.save_every,
            eval_every: self.eval_every,
            eval_examples: self.eval_examples,
            stop_on_nan,
            verbose: true,
        })
    }
}

fn parse_tokens(s: &str) -> Result<Vec<u32>, String> {
    s.split(',').map(|t| t.trim().parse::<u32>().map_err(|_| format!("--tokens: '{t}' is not a token id"))).collect()
}

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[command(flatten)]
    pub quant: QuantArgs,
    /// Comma-separated token ids (no BOS is added).
    #[arg(long)]
    pub tokens: String,
    /// Output safetensors file with `logits` (f32, [T, vocab]).
    #[arg(long)]
    pub output: PathBuf,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub quant: QuantArgs,
    #[arg(long, default_value_t = 512)]
    pub seq_len: usize,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub quant: QuantArgs,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub adapter: PathBuf,
    #[arg(long)]
    pub output: PathBuf,
    /// bf16, f16 or f32.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    #[command(flatten)]
    pub quant: QuantArgs,
}

/// Run the parsed command line.
/// Runs `f` on a worker of a new rayon pool of `threads` threads (0: one per CPU), so the serial
/// code between parallel ops runs on a pool thread: each parallel op then hands work to a sibling
/// that is still spinning instead of waking sleeping workers from outside the pool (the bench-512
/// step: 0.326 -> 0.301 s). Workers get the main thread's 8 MiB stack.
pub fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> Result<T, String> + Send) -> Result<T, String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .stack_size(8 << 20)
        .thread_name(|i| format!("trainer-{i}"))
        .build()
        .map_err(|e| format!("cannot start {threads} worker threads: {e}"))?;
    pool.install(f)
}

/// Runs the command line's subcommand inside a worker pool ([`in_pool`]; `bench-step --threads`
/// sizes it, every other command uses one thread per CPU).
pub fn run(cli: Cli) -> Result<(), String> {
    let threads = match &cli.command {
        Some(Command::BenchStep(a)) => a.threads,
        _ => 0,
    };
    in_pool(threads, move || dispatch(cli))
}

fn dispatch(cli: Cli) -> Result<(), String> {
    use crate::commands;
    let check_model = |p: &PathBuf| {
        if p.exists() {
            Ok(())
        } else {
            Err(format!("--model {}: no such file or directory", p.display()))
        }
    };
    match cli.command {
        None => run_train(&cli.train),
        Some(Command::Train(a)) => run_train(&a),
        Some(Command::Quantize(a)) => crate::quantize::run(&a),
        Some(Command::BenchStep(a)) => crate::bench_step::run(&a),
        Some(Command::Logits(a)) => {
            check_model(&a.model)?;
            let tokens = parse_tokens(&a.tokens)?;
            let l = commands::load(&a.model, a.adapter.as_deref(), a.quant.config()?.as_ref())?;
            commands::logits(&l, &tokens, &a.output)?;
            eprintln!("wrote logits [{}, {}] to {}", tokens.len(), l.model.config.vocab_size, a.output.display());
            Ok(())
        }
        Some(Command::Eval(a)) => {
            check_model(&a.model)?;
            let l = commands::load(&a.model, a.adapter.as_deref(), a.quant.config()?.as_ref())?;
            let (loss, ppl) = commands::eval(&l, &a.data, a.seq_len, a.batch_size)?;
            println!("loss {loss:.4} perplexity {ppl:.3}");
            Ok(())
        }
        Some(Command::Generate(a)) => {
            check_model(&a.model)?;
            if !(a.top_p > 0.0 && a.top_p <= 1.0) || a.temperature < 0.0 {
                return Err("--top-p must be in (0, 1] and --temperature at least 0".into());
            }
            let l = commands::load(&a.model, a.adapter.as_deref(), a.quant.config()?.as_ref())?;
            let s = llama::generate::Sampling {
                temperature: a.temperature,
                top_p: a.top_p,
                seed: a.seed,
                max_new_tokens: a.max_new_tokens,
            };
            commands::generate(&l, &a.prompt, a.chat, &s)?;
            Ok(())
        }
        Some(Command::Merge(a)) => {
            check_model(&a.model)?;
            let dtype: tensor::DType = a.dtype.parse().map_err(|e| format!("--dtype: {e}"))?;
            let l = commands::load(&a.model, Some(&a.adapter), a.quant.config()?.as_ref())?;
            commands::merge(&l, &a.output, dtype)?;
            eprintln!("wrote merged model to {}", a.output.display());
            Ok(())
        }
    }
}

fn run_train(a: &TrainArgs) -> Result<(), String> {
    let cfg = a.to_config()?;
    crate::train::install_ctrlc();
    let summary = crate::train::train(&cfg)?;
    if summary.interrupted {
        return Err(format!("interrupted after step {}; the checkpoint above resumes it", summary.steps));
    }
    Ok(())
}
