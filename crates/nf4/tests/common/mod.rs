//! Shared test helpers: read the reference vectors copied from `reference/vectors` into
//! `tests/fixtures` (the tests never read `/work/shared`).
#![allow(dead_code)]

use safetensors::tensor::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

/// A fixture file: raw bytes plus the parsed `__metadata__["json"]`.
pub struct Fixture {
    pub bytes: Vec<u8>,
    pub meta: serde_json::Value,
}

pub fn fixture_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn load(name: &str) -> Fixture {
    let bytes = std::fs::read(fixture_path(name)).expect("fixture file");
    let (_, md) = SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let meta = md
        .metadata()
        .as_ref()
        .and_then(|m| m.get("json"))
        .map(|s| serde_json::from_str(s).expect("metadata json"))
        .unwrap_or(serde_json::Value::Null);
    Fixture { bytes, meta }
}

impl Fixture {
    pub fn st(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("safetensors")
    }
    pub fn has(&self, name: &str) -> bool {
        self.st().tensor(name).is_ok()
    }
    pub fn dtype(&self, name: &str) -> Dtype {
        self.st().tensor(name).expect(name).dtype()
    }
    pub fn raw(&self, name: &str) -> Vec<u8> {
        self.st().tensor(name).expect(name).data().to_vec()
    }
    pub fn u8s(&self, name: &str) -> Vec<u8> {
        let st = self.st();
        let t = st.tensor(name).expect(name);
        assert_eq!(t.dtype(), Dtype::U8, "{name}");
        t.data().to_vec()
    }
    /// fp32 values (bf16 widened exactly).
    pub fn f32s(&self, name: &str) -> Vec<f32> {
        let st = self.st();
        let t = st.tensor(name).expect(name);
        match t.dtype() {
            Dtype::F32 => t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => t
                .data()
                .chunks_exact(2)
                .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
                .collect(),
            d => panic!("{name}: unexpected dtype {d:?}"),
        }
    }
    pub fn bf16s(&self, name: &str) -> Vec<half::bf16> {
        let st = self.st();
        let t = st.tensor(name).expect(name);
        assert_eq!(t.dtype(), Dtype::BF16, "{name}");
        t.data().chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]]))).collect()
    }
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.st().tensor(name).expect(name).shape().to_vec()
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn f32_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn bf16_le_bytes(v: &[half::bf16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect()
}

/// Bit-pattern equality for f32 slices, with the first mismatch in the panic message.
pub fn assert_bits_eq(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{what}: first mismatch at {i}: got {} ({:#010x}), want {} ({:#010x})",
            got[i],
            got[i].to_bits(),
            want[i],
            want[i].to_bits()
        );
    }
}
