//! `trainer quantize`: rewrite a safetensors file or Hugging Face model directory with every
//! Llama linear weight (names ending in `_proj.weight`) in bitsandbytes' serialized 4-bit layout
//! (`W`, `W.absmax`, `W.quant_map`, `W.nested_absmax`, `W.nested_quant_map`,
//! `W.quant_state.bitsandbytes__nf4`), every other tensor copied unchanged.
//!
//! Streaming: inputs are memory-mapped; a first pass checks every tensor (dtype, NaN/Inf) and
//! computes each weight's double-quantization offset, which fixes the output header; a second
//! pass quantizes one weight at a time and writes its parts at their planned offsets into a
//! temporary file, renamed over `--output` only when complete. At most one weight is widened
//! (only when its bytes are unaligned) and one quantized weight is held at a time.
//!
//! Reference: bitsandbytes 0.50.2 `QuantState.as_dict(packed=True)`, transformers'
//! `Bnb4BitHfQuantizer` checkpoints. Deliberately not here: GGUF input, sharded output, the
//! `quantization_config` in `config.json` (the output is one safetensors file).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use clap::Args;
use memmap2::Mmap;
use nf4::{Nf4Weight, QuantConfig, QuantType};
use safetensors::tensor::{Dtype, Metadata, SafeTensors, TensorInfo};
use tensor::{bf16, f16, DType};

/// Flags of `trainer quantize` (see `../shared/CLI.md`).
#[derive(Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// A .safetensors file, or a Hugging Face model directory (model.safetensors or
    /// model.safetensors.index.json with shards).
    #[arg(long)]
    pub input: PathBuf,
    /// The safetensors file to write (replaced atomically).
    #[arg(long)]
    pub output: PathBuf,
    /// 4-bit format: nf4 or fp4.
    #[arg(long, default_value = "nf4")]
    pub quant: String,
    /// Elements per absmax block (a power of two in 32..=4096).
    #[arg(long, default_value_t = 64)]
    pub blocksize: usize,
    /// Quantize the absmax values too (QLoRA's double quantization).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub double_quant: bool,
}

/// True for the tensors `quantize` converts: Llama linear weights.
pub fn is_quantized_name(name: &str) -> bool {
    name.ends_with("_proj.weight")
}

/// One output tensor: its dtype, shape and where its bytes come from.
type Entry = (Dtype, Vec<usize>, Source);

/// Where one output tensor's bytes come from.
enum Source {
    /// Copied from input shard `shard`, tensor `name`.
    Copy { shard: usize, name: String },
    /// A part of a quantized weight (written when that weight is quantized).
    Part,
}

/// One input weight to quantize: its shard, dtype, shape and planned offset.
struct Planned {
    name: String,
    shard: usize,
    dtype: DType,
    shape: Vec<usize>,
    offset: Option<f32>,
}

/// A tensor's raw little-endian bytes as a typed slice: borrowed when aligned, else one copy.
enum Typed<'a> {
    F32(Cow<'a, [f32]>),
    BF16(Cow<'a, [bf16]>),
    F16(Cow<'a, [f16]>),
}

fn typed<'a>(name: &str, dtype: DType, bytes: &'a [u8]) -> Result<Typed<'a>, String> {
    fn view<T: bytemuck::Pod>(bytes: &[u8]) -> Cow<'_, [T]> {
        match bytemuck::try_cast_slice::<u8, T>(bytes) {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => {
                let mut v = vec![T::zeroed(); bytes.len() / std::mem::size_of::<T>()];
                bytemuck::cast_slice_mut::<T, u8>(&mut v).copy_from_slice(bytes);
                Cow::Owned(v)
            }
        }
    }
    match dtype {
        DType::F32 => Ok(Typed::F32(view(bytes))),
        DType::BF16 => Ok(Typed::BF16(view(bytes))),
        DType::F16 => Ok(Typed::F16(view(bytes))),
        other => Err(format!("tensor '{name}': cannot quantize dtype {}", other.as_str())),
    }
}

/// Evaluate `$body` with `$x` bound to the typed slice, whatever its element type.
macro_rules! on_typed {
    ($t:expr, $x:ident => $body:expr) => {
        match $t {
            Typed::F32(c) => {
                let $x: &[f32] = &c;
                $body
            }
            Typed::BF16(c) => {
                let $x: &[bf16] = &c;
                $body
            }
            Typed::F16(c) => {
                let $x: &[f16] = &c;
                $body
            }
        }
    };
}

/// Run `trainer quantize`; the error is a one-line reason naming the flag, file or tensor.
pub fn run(args: &QuantizeArgs) -> Result<(), String> {
    let quant_type: QuantType = match args.quant.as_str() {
        "nf4" => QuantType::Nf4,
        "fp4" => QuantType::Fp4,
        q => return Err(format!("--quant '{q}' is not one of nf4, fp4")),
    };
    nf4::check_blocksize(args.blocksize).map_err(|e| format!("--blocksize: {e}"))?;
    let cfg = QuantConfig { quant_type, blocksize: args.blocksize, double_quant: args.double_quant };
    let shards = input_files(&args.input)?;
    let out_dir = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !out_dir.is_dir() {
        return Err(format!("--output {}: directory {} does not exist", args.output.display(), out_dir.display()));
    }
    if args.output.is_dir() {
        return Err(format!("--output {}: is a directory, expected a file path", args.output.display()));
    }
    if shards.iter().any(|s| same_file(s, &args.output)) {
        return Err(format!("--output {}: would overwrite the input", args.output.display()));
    }
    let maps = shards
        .iter()
        .map(|p| {
            let f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
            // SAFETY: the map is read-only and the file is not modified while we hold it.
            unsafe { Mmap::map(&f) }.map_err(|e| format!("{}: cannot map: {e}", p.display()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let files = maps
        .iter()
        .zip(&shards)
        .map(|(m, p)| SafeTensors::deserialize(m).map_err(|e| format!("{}: not a safetensors file: {e}", p.display())))
        .collect::<Result<Vec<_>, String>>()?;

    // Pass 1: plan every output tensor (checks dtypes, NaN/Inf, name clashes; computes offsets).
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut weights: Vec<Planned> = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (si, st) in files.iter().enumerate() {
        let mut names: Vec<&str> = st.names().into_iter().collect();
        names.sort();
        for name in names {
            if let Some(prev) = seen.insert(name.to_string(), si) {
                return Err(format!(
                    "tensor '{name}' appears in both {} and {}",
                    shards[prev].display(),
                    shards[si].display()
                ));
            }
            let view = st.tensor(name).map_err(|e| format!("tensor '{name}': {e}"))?;
            if !is_quantized_name(name) {
                entries.insert(
                    name.to_string(),
                    (view.dtype(), view.shape().to_vec(), Source::Copy { shard: si, name: name.into() }),
                );
                continue;
            }
            let dtype = match view.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::BF16 => DType::BF16,
                Dtype::F16 => DType::F16,
                d => {
                    return Err(format!(
                        "tensor '{name}' has dtype {d:?}; only F32, BF16 and F16 weights can be quantized"
                    ))
                }
            };
            let offset = if cfg.double_quant {
                let absmax =
                    on_typed!(typed(name, dtype, view.data())?, x => nf4::block_absmax(name, x, cfg.blocksize))
                        .map_err(|e| e.to_string())?;
                Some(nf4::mean_offset(&absmax))
            } else {
                None
            };
            let layout = nf4::bnb_layout(
                name,
                quant_type,
                cfg.blocksize,
                dtype,
                view.shape(),
                offset.map(|o| (nf4::NESTED_BLOCKSIZE, o)),
            )
            .map_err(|e| format!("tensor '{name}': {e}"))?;
            for (part, pd, ps) in layout {
                entries.insert(part, (pd, ps, Source::Part));
            }
            weights.push(Planned { name: name.to_string(), shard: si, dtype, shape: view.shape().to_vec(), offset });
        }
    }
    for w in &weights {
        for suffix in ["absmax", "quant_map", "nested_absmax", "nested_quant_map"] {
            if seen.contains_key(&format!("{}.{suffix}", w.name)) {
                return Err(format!("tensor '{}.{suffix}' exists: the input is already quantized", w.name));
            }
        }
    }

    // Header: safetensors' canonical order (larger dtypes first, then by name) keeps every
    // tensor aligned; offsets are fixed before any data is written.
    let mut order: Vec<(&String, &Entry)> = entries.iter().collect();
    order.sort_by(|(ln, l), (rn, r)| r.0.cmp(&l.0).then(ln.cmp(rn)));
    let mut infos = Vec::with_capacity(order.len());
    let mut at = 0usize;
    let mut offsets: HashMap<&str, usize> = HashMap::new();
    for (name, (dtype, shape, _)) in &order {
        let len = shape.iter().product::<usize>() * dtype.bitsize() / 8;
        offsets.insert(name.as_str(), at);
        infos
            .push((name.to_string(), TensorInfo { dtype: *dtype, shape: shape.clone(), data_offsets: (at, at + len) }));
        at += len;
    }
    let meta = Metadata::new(Some(HashMap::from([("format".to_string(), "pt".to_string())])), infos)
        .map_err(|e| format!("--output {}: {e}", args.output.display()))?;
    let mut header =
        serde_json::to_string(&meta).map_err(|e| format!("--output {}: {e}", args.output.display()))?.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let base = 8 + header.len();

    // Pass 2: write into a temporary file next to the output, then rename.
    let tmp = out_dir.join(format!(
        ".{}.tmp-{}",
        args.output.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "quantize".into()),
        std::process::id()
    ));
    let result = (|| -> Result<(usize, usize), String> {
        let io = |e: std::io::Error| format!("{}: {e}", tmp.display());
        let f = File::create(&tmp).map_err(io)?;
        f.set_len((base + at) as u64).map_err(io)?;
        f.write_all_at(&(header.len() as u64).to_le_bytes(), 0).map_err(io)?;
        f.write_all_at(&header, 8).map_err(io)?;
        let mut copied = 0;
        for (name, (_, _, src)) in &order {
            if let Source::Copy { shard, name: src_name } = src {
                let v = files[*shard].tensor(src_name).map_err(|e| format!("tensor '{src_name}': {e}"))?;
                f.write_all_at(v.data(), (base + offsets[name.as_str()]) as u64).map_err(io)?;
                copied += 1;
            }
        }
        for w in &weights {
            let v = files[w.shard].tensor(&w.name).map_err(|e| format!("tensor '{}': {e}", w.name))?;
            let q = on_typed!(typed(&w.name, w.dtype, v.data())?, x => Nf4Weight::quantize_slice(&w.name, x, &w.shape, &cfg, w.offset))
                .map_err(|e| e.to_string())?;
            for part in q.to_bnb_tensors(&w.name).map_err(|e| e.to_string())? {
                let off = offsets
                    .get(part.name.as_str())
                    .ok_or_else(|| format!("tensor '{}': not in the planned layout", part.name))?;
                f.write_all_at(&part.data, (base + off) as u64).map_err(io)?;
            }
        }
        f.sync_all().map_err(io)?;
        Ok((weights.len(), copied))
    })();
    match result {
        Ok((quantized, copied)) => {
            std::fs::rename(&tmp, &args.output).map_err(|e| format!("--output {}: {e}", args.output.display()))?;
            eprintln!(
                "quantized {quantized} weights ({quant_type}, blocksize {}, double quant {}, {:.3} bits/param), copied {copied} tensors, wrote {} ({} bytes)",
                cfg.blocksize,
                cfg.double_quant,
                cfg.bits_per_param(),
                args.output.display(),
                base + at
            );
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Paths of the safetensors shards behind `--input`.
fn input_files(input: &Path) -> Result<Vec<PathBuf>, String> {
    if input.is_file() {
        return Ok(vec![input.to_path_buf()]);
    }
    if !input.is_dir() {
        return Err(format!("--input {}: no such file or directory", input.display()));
    }
    let single = input.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = input.join("model.safetensors.index.json");
    if !index.is_file() {
        return Err(format!(
            "--input {}: no model.safetensors or model.safetensors.index.json in this directory",
            input.display()
        ));
    }
    let text = std::fs::read_to_string(&index).map_err(|e| format!("{}: {e}", index.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: invalid JSON: {e}", index.display()))?;
    let map = json
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| format!("{}: no \"weight_map\" object", index.display()))?;
    let mut shards: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
    shards.sort();
    shards.dedup();
    if shards.is_empty() {
        return Err(format!("{}: \"weight_map\" names no shard files", index.display()));
    }
    shards
        .into_iter()
        .map(|s| {
            let p = input.join(&s);
            if p.is_file() {
                Ok(p)
            } else {
                Err(format!("{}: shard {s} does not exist", index.display()))
            }
        })
        .collect()
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}
