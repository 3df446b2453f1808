//! Lazily-read safetensors: one file or a sharded set (`model.safetensors.index.json`), memory
//! mapped; names, shapes and dtypes come from the headers without touching the data, and `get`
//! copies one tensor at a time into an owned [`tensor::Tensor`] so a caller can quantize tensor by
//! tensor without holding the whole model in f32.
//!
//! Reference: the safetensors format (8-byte little-endian header length, a JSON header of
//! `{name: {dtype, shape, data_offsets: [begin, end]}}` plus optional `__metadata__`, then the
//! data). Every header is checked against its file before any tensor is read: offsets inside the
//! data, sizes equal to shape × dtype. Deliberately absent: writing (the trainer uses the
//! `safetensors` crate), and dtypes the tensor crate lacks (F64, I64, ... are listed but `get`
//! refuses them, naming the tensor).

use crate::{Error, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tensor::{bf16, f16, Tensor};

/// A safetensors dtype as named in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StDType {
    F32,
    F16,
    BF16,
    U8,
    I8,
    I32,
    I64,
    F64,
    Bool,
    /// Anything else the header names (F8 variants, U16, ...): listed, not readable.
    Other,
}

impl StDType {
    fn parse(s: &str) -> (Self, usize) {
        match s {
            "F32" => (StDType::F32, 4),
            "F16" => (StDType::F16, 2),
            "BF16" => (StDType::BF16, 2),
            "U8" => (StDType::U8, 1),
            "I8" => (StDType::I8, 1),
            "BOOL" => (StDType::Bool, 1),
            "I32" => (StDType::I32, 4),
            "I64" => (StDType::I64, 8),
            "F64" => (StDType::F64, 8),
            "U16" | "I16" => (StDType::Other, 2),
            "U32" => (StDType::Other, 4),
            "U64" => (StDType::Other, 8),
            _ => (StDType::Other, 1),
        }
    }
}

/// Where one tensor lives, checked against its file.
#[derive(Debug, Clone)]
pub struct StTensorInfo {
    pub dtype: StDType,
    /// The dtype as the header spells it.
    pub dtype_name: String,
    pub shape: Vec<usize>,
    file: usize,
    start: usize,
    end: usize,
}

struct StFile {
    path: PathBuf,
    mmap: memmap2::Mmap,
    metadata: BTreeMap<String, String>,
}

/// Every tensor of one safetensors file or of a sharded model, read on demand.
pub struct SafetensorsSource {
    files: Vec<StFile>,
    tensors: BTreeMap<String, StTensorInfo>,
}

impl std::fmt::Debug for SafetensorsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<_> = self.files.iter().map(|f| f.path.display().to_string()).collect();
        write!(f, "SafetensorsSource({paths:?}, {} tensors)", self.tensors.len())
    }
}

impl SafetensorsSource {
    /// Open a `.safetensors` file, a `model.safetensors.index.json`, or a directory holding either
    /// (`model.safetensors` is preferred over the index).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let single = path.join("model.safetensors");
            let index = path.join("model.safetensors.index.json");
            if single.is_file() {
                return Self::open_files(&[single]);
            }
            if index.is_file() {
                return Self::open_index(&index);
            }
            return Err(Error::format(path, "no model.safetensors or model.safetensors.index.json in this directory"));
        }
        if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".index.json")) {
            return Self::open_index(path);
        }
        Self::open_files(&[path.to_path_buf()])
    }

    /// Open the shards listed in an index (`weight_map: {tensor: shard file}`); each tensor must
    /// be in the shard the index names.
    pub fn open_index(index: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| Error::format(index, format!("invalid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::config(index, "weight_map", "missing or not an object"))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<String> = Vec::new();
        for (name, shard) in map {
            let shard = shard
                .as_str()
                .ok_or_else(|| Error::config(index, &format!("weight_map.{name}"), "expected a file name"))?;
            if shard.contains('/') || shard.contains('\\') || shard == ".." {
                return Err(Error::config(
                    index,
                    &format!("weight_map.{name}"),
                    format!("shard '{shard}' is not a plain file name"),
                ));
            }
            if !shards.iter().any(|s| s == shard) {
                shards.push(shard.to_string());
            }
        }
        shards.sort();
        let paths: Vec<PathBuf> = shards.iter().map(|s| dir.join(s)).collect();
        let src = Self::open_files(&paths)?;
        for (name, shard) in map {
            let info = src
                .tensors
                .get(name)
                .ok_or_else(|| Error::tensor(index, name, format!("listed in the index but not in {shard}")))?;
            let actual = &src.files[info.file].path;
            if actual.file_name().and_then(|n| n.to_str()) != shard.as_str() {
                return Err(Error::tensor(index, name, format!("index says {shard}, found in {}", actual.display())));
            }
        }
        Ok(src)
    }

    /// Open one or more files as one source; a tensor name in two files is an error.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors = BTreeMap::new();
        for (fi, path) in paths.iter().enumerate() {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: read-only map; we assume the file is not truncated while it is open.
            let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            let (infos, metadata) = parse_header(&mmap, path, fi)?;
            for (name, info) in infos {
                if tensors.insert(name.clone(), info).is_some() {
                    return Err(Error::tensor(path, &name, "appears in more than one file"));
                }
            }
            files.push(StFile { path: path.clone(), mmap, metadata });
        }
        Ok(SafetensorsSource { files, tensors })
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// Shape and dtype of `name` without reading its data.
    pub fn info(&self, name: &str) -> Option<&StTensorInfo> {
        self.tensors.get(name)
    }

    /// The `__metadata__` of the first file (e.g. `format: pt`).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.files.first().map(|f| &f.metadata).unwrap_or(&EMPTY)
    }

    /// The file that holds `name` (for error messages), or the first file.
    pub fn file_of(&self, name: &str) -> &Path {
        match self.tensors.get(name) {
            Some(i) => &self.files[i.file].path,
            None => self.files.first().map(|f| f.path.as_path()).unwrap_or(Path::new("<no file>")),
        }
    }

    /// The raw little-endian bytes of `name`.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let info = self.tensors.get(name).ok_or_else(|| Error::tensor(self.file_of(name), name, "not in the file"))?;
        Ok(&self.files[info.file].mmap[info.start..info.end])
    }

    /// `name` copied into an owned tensor of its own dtype (F32, BF16, F16, U8 or I32; the
    /// dtypes the tensor crate lacks are refused, naming the tensor).
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let info = self.tensors.get(name).ok_or_else(|| Error::tensor(self.file_of(name), name, "not in the file"))?;
        let b = self.bytes(name)?;
        let shape = info.shape.clone();
        let t = match info.dtype {
            StDType::F32 => Tensor::from_vec(
                b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>(),
                shape,
            ),
            StDType::F16 => {
                Tensor::from_vec(b.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>(), shape)
            }
            StDType::BF16 => Tensor::from_vec(
                b.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>(),
                shape,
            ),
            StDType::U8 => Tensor::from_vec(b.to_vec(), shape),
            StDType::I32 => Tensor::from_vec(
                b.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect::<Vec<_>>(),
                shape,
            ),
            _ => {
                return Err(Error::tensor(
                    self.file_of(name),
                    name,
                    format!("dtype {} is not supported (F32, F16, BF16, U8, I32)", info.dtype_name),
                ));
            }
        };
        t.map_err(|e| Error::tensor(self.file_of(name), name, e.to_string()))
    }

    /// `name` widened to an owned f32 tensor (float dtypes only).
    pub fn get_f32(&self, name: &str) -> Result<Tensor> {
        let t = self.get(name)?;
        if !t.dtype().is_float() {
            return Err(Error::tensor(self.file_of(name), name, format!("dtype {:?} is not a float type", t.dtype())));
        }
        if t.dtype() == tensor::DType::F32 {
            return Ok(t);
        }
        let v = t.to_vec_f32()?;
        Ok(Tensor::from_vec(v, t.shape().clone())?)
    }
}

type Header = (Vec<(String, StTensorInfo)>, BTreeMap<String, String>);

/// Parse and check one file's header: every tensor's range lies inside the data section and
/// matches its shape and dtype.
fn parse_header(buf: &[u8], path: &Path, file: usize) -> Result<Header> {
    let bad = |m: String| Error::format(path, m);
    if buf.len() < 8 {
        return Err(bad(format!(
            "truncated: {} bytes, a safetensors file starts with an 8-byte header length",
            buf.len()
        )));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&buf[..8]);
    let hlen = u64::from_le_bytes(n);
    let data_start = hlen.checked_add(8).filter(|&e| e <= buf.len() as u64).ok_or_else(|| {
        bad(format!(
            "header length {hlen} points past the end of the file ({} bytes); truncated or not safetensors",
            buf.len()
        ))
    })? as usize;
    let header: Value =
        serde_json::from_slice(&buf[8..data_start]).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let obj = header.as_object().ok_or_else(|| bad("header is not a JSON object".into()))?;
    let data_len = buf.len() - data_start;
    let mut metadata = BTreeMap::new();
    let mut infos = Vec::with_capacity(obj.len());
    for (name, entry) in obj {
        if name == "__metadata__" {
            if let Some(m) = entry.as_object() {
                for (k, v) in m {
                    metadata.insert(k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()));
                }
            }
            continue;
        }
        let tbad = |m: String| Error::tensor(path, name, m);
        let dtype_name = entry.get("dtype").and_then(Value::as_str).ok_or_else(|| tbad("missing dtype".into()))?;
        let (dtype, esize) = StDType::parse(dtype_name);
        let shape: Vec<usize> = entry
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| tbad("missing shape".into()))?
            .iter()
            .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| tbad("shape is not a list of non-negative integers".into()))?;
        let offs: Vec<usize> = entry
            .get("data_offsets")
            .and_then(Value::as_array)
            .filter(|a| a.len() == 2)
            .and_then(|a| a.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect::<Option<_>>())
            .ok_or_else(|| tbad("data_offsets is not [begin, end]".into()))?;
        let (begin, end) = (offs[0], offs[1]);
        if begin > end || end > data_len {
            return Err(tbad(format!(
                "data_offsets [{begin}, {end}] lie outside the {data_len} data bytes (truncated file?)"
            )));
        }
        // The product of the non-zero dims must fit too: a 0-element tensor of shape
        // [0, 2^40, 2^40] still has strides that overflow.
        let full = shape
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(esize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| tbad(format!("shape {shape:?} overflows")))?;
        let need = if shape.contains(&0) { 0 } else { full };
        if need != end - begin {
            return Err(tbad(format!("{} bytes for shape {shape:?} of {dtype_name}, expected {need}", end - begin)));
        }
        let info = StTensorInfo {
            dtype,
            dtype_name: dtype_name.to_string(),
            shape,
            file,
            start: data_start + begin,
            end: data_start + end,
        };
        infos.push((name.clone(), info));
    }
    Ok((infos, metadata))
}
