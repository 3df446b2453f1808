//! A small GGUF v3 writer, for tests and fixtures: metadata of every value type and tensors
//! stored as F32, F16, BF16, Q8_0, Q4_0 or Q4_1, aligned as the spec requires.
//!
//! Reference: ggml `docs/gguf.md` (the same layout `mod.rs` reads). Deliberately absent:
//! streaming (the whole file is built in memory), K-quants, and any Llama-specific conventions
//! (callers name tensors and permute Q/K themselves).

use super::{quantize, GgmlType, MetaValue, DEFAULT_ALIGNMENT, MAGIC};
use crate::{Error, Result};
use std::path::Path;

/// Collects metadata and tensors, then writes one GGUF file.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, MetaValue)>,
    /// name, ne (GGUF order), type, encoded bytes.
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl GgufWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a metadata entry (order is kept; `general.alignment` sets the alignment).
    pub fn add_meta(&mut self, key: impl Into<String>, value: MetaValue) -> &mut Self {
        self.metadata.push((key.into(), value));
        self
    }

    /// Add an f32 tensor of row-major `shape` (our order, e.g. `[out, in]`), encoded as `ty`.
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        data: &[f32],
        ty: GgmlType,
    ) -> Result<&mut Self> {
        let name = name.into();
        let n: usize = shape.iter().product();
        let origin = Path::new("<gguf writer>");
        if n != data.len() {
            return Err(Error::tensor(origin, &name, format!("{} values for shape {shape:?}", data.len())));
        }
        let bytes = quantize(ty, data).map_err(|m| Error::tensor(origin, &name, m))?;
        let ne = shape.iter().rev().map(|&d| d as u64).collect();
        self.tensors.push((name, ne, ty, bytes));
        Ok(self)
    }

    /// Add a tensor from already-encoded bytes (any type id; nothing is checked, so tests can
    /// write files the reader must refuse).
    pub fn add_raw(&mut self, name: impl Into<String>, ne: Vec<u64>, ty: GgmlType, bytes: Vec<u8>) -> &mut Self {
        self.tensors.push((name.into(), ne, ty, bytes));
        self
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_int())
            .and_then(|a| u64::try_from(a).ok())
            .filter(|a| a.is_power_of_two())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// The file as bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let align = self.alignment() as usize;
        let pad = |v: &mut Vec<u8>| v.resize(v.len().div_ceil(align) * align, 0);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut out, k);
            out.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut out, v);
        }
        let mut rel = 0usize;
        for (name, ne, ty, bytes) in &self.tensors {
            put_str(&mut out, name);
            out.extend_from_slice(&(ne.len() as u32).to_le_bytes());
            ne.iter().for_each(|d| out.extend_from_slice(&d.to_le_bytes()));
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&(rel as u64).to_le_bytes());
            rel = (rel + bytes.len()).div_ceil(align) * align;
        }
        pad(&mut out);
        for (_, _, _, bytes) in &self.tensors {
            out.extend_from_slice(bytes);
            pad(&mut out);
        }
        out
    }

    /// Write the file to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|e| Error::io(path, e))
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
    match v {
        MetaValue::U8(x) => out.push(*x),
        MetaValue::I8(x) => out.push(*x as u8),
        MetaValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::Bool(x) => out.push(*x as u8),
        MetaValue::String(s) => put_str(out, s),
        MetaValue::Array(elem, items) => {
            out.extend_from_slice(&elem.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            items.iter().for_each(|i| put_value(out, i));
        }
        MetaValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
        MetaValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
    }
}
