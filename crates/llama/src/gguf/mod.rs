//! A GGUF v3 reader: header, metadata key/values (every value type, arrays included), the tensor
//! info table, alignment and the data section, over a memory map. Tensors are dequantized to f32
//! one at a time on request.
//!
//! Reference: the GGUF spec, ggml `docs/gguf.md` (v3, little-endian). Every count, length and
//! offset read from the file is checked with checked arithmetic against the bytes that remain
//! BEFORE anything is allocated, so a header claiming a 1 TB tensor or 2^60 array entries is an
//! error, not an allocation. Deliberately absent: big-endian files, GGUF v1 (32-bit counts),
//! writing in place, and any model semantics (see `hf.rs` for the Llama name mapping).

mod hf;
mod meta;
mod quant;
mod writer;

pub use hf::{gguf_to_hf_name, unpermute_qk};
pub use meta::MetaValue;
pub use quant::{dequantize, quantize, GgmlType, QK};
pub use writer::GgufWriter;

use crate::{Error, Result};
use meta::Cursor;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// "GGUF" read as a little-endian u32.
pub const MAGIC: u32 = 0x4655_4747;
/// Alignment of the data section and of each tensor when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Tensors of more dimensions than this are refused (the spec uses at most 4).
const MAX_DIMS: u32 = 8;

/// One entry of the tensor info table, with its data range already checked against the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `ne[0]` is the fastest-varying (the input features of a linear weight).
    pub ne: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Bytes of data (`None` for a type we cannot size).
    pub nbytes: Option<u64>,
}

impl TensorInfo {
    /// Our row-major shape: `ne` reversed, so a linear weight is `[out, in]`.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
    /// Number of elements.
    pub fn elem_count(&self) -> u64 {
        self.ne.iter().product()
    }
}

enum Backing {
    Mmap(memmap2::Mmap),
    Bytes(Vec<u8>),
}

/// A parsed GGUF file over its bytes (mapped or owned).
pub struct GgufFile {
    path: PathBuf,
    bytes: Backing,
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    meta_index: HashMap<String, usize>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GgufFile({}, v{}, {} keys, {} tensors)",
            self.path.display(),
            self.version,
            self.metadata.len(),
            self.tensors.len()
        )
    }
}

impl GgufFile {
    /// Map and parse a file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; like every mmap loader we assume nobody truncates or
        // rewrites the model file while it is open.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Self::parse(path, Backing::Mmap(mmap))
    }

    /// Parse bytes already in memory (tests; `origin` names them in errors).
    pub fn from_bytes(bytes: Vec<u8>, origin: impl AsRef<Path>) -> Result<Self> {
        Self::parse(origin.as_ref(), Backing::Bytes(bytes))
    }

    fn data(&self) -> &[u8] {
        match &self.bytes {
            Backing::Mmap(m) => m,
            Backing::Bytes(v) => v,
        }
    }

    /// The file path (or the origin given to [`GgufFile::from_bytes`]).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn parse(path: &Path, bytes: Backing) -> Result<Self> {
        let buf: &[u8] = match &bytes {
            Backing::Mmap(m) => m,
            Backing::Bytes(v) => v,
        };
        let mut c = Cursor { buf, pos: 0, path };
        let magic = c.u32("magic")?;
        if magic != MAGIC {
            return Err(Error::format(path, format!("not a GGUF file (magic {magic:#010x}, expected \"GGUF\")")));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::format(path, format!("GGUF version {version} is not supported (2 or 3)")));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // Smallest possible entries: a kv is key length (8) + type (4) + a 1-byte value; a tensor
        // info is name length (8) + n_dims (4) + type (4) + offset (8).
        c.check_count(n_kv, 13, "metadata entries")?;
        c.check_count(n_tensors, 24, "tensor infos")?;

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut meta_index = HashMap::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata value type")?;
            let value = c.value(ty, &key, 0)?;
            if meta_index.insert(key.clone(), metadata.len()).is_some() {
                return Err(Error::config(path, &key, "duplicate metadata key"));
            }
            metadata.push((key, value));
        }

        let alignment = match meta_index.get("general.alignment").map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_int() {
                Some(a) if a > 0 && a <= 1 << 30 && (a as u64).is_power_of_two() => a as u64,
                _ => return Err(Error::config(path, "general.alignment", format!("{v:?} is not a power of two"))),
            },
        };

        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor n_dims")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::tensor(path, &name, format!("{n_dims} dimensions (expected 1..={MAX_DIMS})")));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(c.u64("tensor dimension")?);
            }
            let ty = GgmlType::from_id(c.u32("tensor type")?);
            let rel = c.u64("tensor offset")?;
            raw.push((name, ne, ty, rel));
        }
        let data_offset = align_up(c.pos as u64, alignment).filter(|&o| o <= buf.len() as u64).ok_or_else(|| {
            Error::format(
                path,
                format!("data section at {} (aligned to {alignment}) lies past the end ({} bytes)", c.pos, buf.len()),
            )
        })?;

        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::with_capacity(raw.len());
        for (name, ne, ty, rel) in raw {
            let bad = |msg: String| Error::tensor(path, &name, msg);
            // Zero dims aside, the product must fit: [0, 2^40, 2^40] holds nothing but its
            // strides overflow.
            let nonzero = ne
                .iter()
                .filter(|&&d| d != 0)
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .filter(|&n| usize::try_from(n).is_ok())
                .ok_or_else(|| bad(format!("element count of {ne:?} overflows")))?;
            let n = if ne.contains(&0) { 0 } else { nonzero };
            if rel % alignment != 0 {
                return Err(bad(format!("offset {rel} is not a multiple of the alignment {alignment}")));
            }
            let offset = data_offset.checked_add(rel).ok_or_else(|| bad(format!("offset {rel} overflows")))?;
            let nbytes = match ty.block_layout() {
                None => None,
                Some(_) => {
                    if ty.block_layout().map(|(b, _)| ne[0] % b as u64 != 0).unwrap_or(false) {
                        return Err(bad(format!("row length {} is not a whole number of {} blocks", ne[0], ty.name())));
                    }
                    let nb = ty.bytes_for(n).map_err(bad)?;
                    match offset.checked_add(nb) {
                        Some(end) if end <= buf.len() as u64 => Some(nb),
                        _ => {
                            return Err(bad(format!(
                                "{} data of {nb} bytes at offset {offset} runs past the end of the file ({} bytes)",
                                ty.name(),
                                buf.len()
                            )))
                        }
                    }
                }
            };
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(bad("duplicate tensor name".into()));
            }
            tensors.push(TensorInfo { name, ne, ty, offset, nbytes });
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            bytes,
            version,
            metadata,
            meta_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    // ---- metadata ---------------------------------------------------------------------------

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }
    fn require(&self, key: &str) -> Result<&MetaValue> {
        self.get(key).ok_or_else(|| Error::config(&self.path, key, "missing"))
    }
    /// A non-negative integer value (any integer type), as usize.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let v = self.require(key)?;
        v.as_int()
            .and_then(|i| usize::try_from(i).ok())
            .ok_or_else(|| Error::config(&self.path, key, format!("expected a non-negative integer, got {v:?}")))
    }
    /// A token id (`tokenizer.ggml.bos_token_id`, ...): `None` when absent, an error naming the key
    /// when it is not an integer in `0..=u32::MAX` (never truncated into some other token).
    pub fn get_token_id(&self, key: &str) -> Result<Option<u32>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        v.as_int().and_then(|i| u32::try_from(i).ok()).map(Some).ok_or_else(|| {
            Error::config(&self.path, key, format!("expected a token id in 0..={}, got {v:?}", u32::MAX))
        })
    }
    /// A numeric value as f64.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| Error::config(&self.path, key, format!("expected a number, got {v:?}")))
    }
    /// A string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Error::config(&self.path, key, format!("expected a string, got type {}", v.type_id())))
    }
    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.require(key)?;
        let bad = || Error::config(&self.path, key, "expected an array of strings");
        v.as_array().ok_or_else(bad)?.iter().map(|e| e.as_str().ok_or_else(bad)).collect()
    }
    /// An array of integers (any integer type) as i64.
    pub fn get_int_array(&self, key: &str) -> Result<Vec<i64>> {
        let v = self.require(key)?;
        let bad = || Error::config(&self.path, key, "expected an array of integers");
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|e| e.as_int().and_then(|i| i64::try_from(i).ok()).ok_or_else(bad))
            .collect()
    }
    /// An array of numbers as f32.
    pub fn get_f32_array(&self, key: &str) -> Result<Vec<f32>> {
        let v = self.require(key)?;
        let bad = || Error::config(&self.path, key, "expected an array of numbers");
        v.as_array().ok_or_else(bad)?.iter().map(|e| e.as_f64().map(|f| f as f32).ok_or_else(bad)).collect()
    }

    // ---- tensors ----------------------------------------------------------------------------

    /// The info of tensor `name` (GGUF name), if present.
    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of tensor `name`.
    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.tensor_info(name).ok_or_else(|| Error::tensor(&self.path, name, "not in the file"))?;
        let nbytes = info.nbytes.ok_or_else(|| {
            Error::tensor(
                &self.path,
                name,
                format!("unsupported ggml tensor type id {} ({})", info.ty.id(), info.ty.name()),
            )
        })?;
        // Both were checked against the file length at parse time.
        let (start, end) = (info.offset as usize, (info.offset + nbytes) as usize);
        Ok((info, &self.data()[start..end]))
    }

    /// Tensor `name` dequantized to an owned f32 tensor of shape `[.., out, in]` (`ne` reversed).
    pub fn tensor_f32(&self, name: &str) -> Result<tensor::Tensor> {
        let (info, bytes) = self.tensor_bytes(name)?;
        let mut out = vec![0f32; info.elem_count() as usize];
        dequantize(info.ty, bytes, &mut out).map_err(|m| Error::tensor(&self.path, name, m))?;
        Ok(tensor::Tensor::from_vec(out, info.shape())?)
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|v| v / a * a)
}
