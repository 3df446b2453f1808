//! ggml tensor types: one table of type traits (block size, bytes per block) and the block
//! formats we read: F32, F16, BF16, Q8_0, Q4_0, Q4_1, dequantized to f32. Quantizers for Q8_0,
//! Q4_0 and Q4_1 exist only so the test writer can make files (round to nearest, as ggml's
//! reference quantizers do; no importance matrix).
//!
//! Reference: ggml `ggml-common.h` block structs (`block_q4_0`, `block_q4_1`, `block_q8_0`) and
//! the type ids of `enum ggml_type`. Deliberately absent: the K-quants and IQ types (an error names
//! the tensor and the type id), and any SIMD beyond what the compiler finds in the scalar loops.

use half::{bf16, f16};
use rayon::prelude::*;

/// A ggml tensor type by its id in the GGUF tensor-info table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    BF16,
    /// Any other id: listed, but reading it is an error naming the id.
    Other(u32),
}

/// Elements per block of Q4_0, Q4_1 and Q8_0.
pub const QK: usize = 32;

impl GgmlType {
    /// The type for a ggml type id.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// The ggml type id.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    /// ggml's name for the type.
    pub fn name(self) -> String {
        match self {
            GgmlType::F32 => "F32".into(),
            GgmlType::F16 => "F16".into(),
            GgmlType::Q4_0 => "Q4_0".into(),
            GgmlType::Q4_1 => "Q4_1".into(),
            GgmlType::Q8_0 => "Q8_0".into(),
            GgmlType::BF16 => "BF16".into(),
            GgmlType::Other(id) => format!("type id {id}"),
        }
    }

    /// `(elements per block, bytes per block)`, or `None` for a type we cannot read.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q4_0 => Some((QK, 2 + QK / 2)),
            GgmlType::Q4_1 => Some((QK, 4 + QK / 2)),
            GgmlType::Q8_0 => Some((QK, 2 + QK)),
            GgmlType::Other(_) => None,
        }
    }

    /// Bytes of `n` elements, or an error string when the type is unknown, `n` is not a whole
    /// number of blocks, or the size overflows.
    pub fn bytes_for(self, n: u64) -> Result<u64, String> {
        let (blk, bytes) = self.block_layout().ok_or_else(|| format!("unsupported ggml {}", self.name()))?;
        if !n.is_multiple_of(blk as u64) {
            return Err(format!("{n} elements are not a whole number of {}-element {} blocks", blk, self.name()));
        }
        (n / blk as u64)
            .checked_mul(bytes as u64)
            .ok_or_else(|| format!("{n} elements of {} overflow u64", self.name()))
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantize `bytes` (exactly `out.len()` elements of `ty`) into `out`. The caller has checked
/// the size with [`GgmlType::bytes_for`]; a mismatch is still reported, never indexed past.
pub fn dequantize(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<(), String> {
    let need = ty.bytes_for(out.len() as u64)?;
    if need != bytes.len() as u64 {
        return Err(format!("{} bytes for {} {} elements, expected {need}", bytes.len(), out.len(), ty.name()));
    }
    // Parallel over chunks of whole blocks; each chunk is independent.
    const BLOCKS_PER_TASK: usize = 1024;
    let (blk, bb) = ty.block_layout().ok_or_else(|| format!("unsupported ggml {}", ty.name()))?;
    out.par_chunks_mut(blk * BLOCKS_PER_TASK)
        .zip(bytes.par_chunks(bb * BLOCKS_PER_TASK))
        .for_each(|(o, b)| dequantize_blocks(ty, b, o));
    Ok(())
}

fn dequantize_blocks(ty: GgmlType, b: &[u8], o: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (x, c) in o.iter_mut().zip(b.chunks_exact(4)) {
                *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (x, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                *x = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (x, c) in o.iter_mut().zip(b.chunks_exact(2)) {
                *x = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (x, c) in o.chunks_exact_mut(QK).zip(b.chunks_exact(2 + QK)) {
                let d = f16_at(c, 0);
                for (xj, &q) in x.iter_mut().zip(&c[2..]) {
                    *xj = (q as i8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_0 => {
            for (x, c) in o.chunks_exact_mut(QK).zip(b.chunks_exact(2 + QK / 2)) {
                let d = f16_at(c, 0);
                let (lo, hi) = x.split_at_mut(QK / 2);
                for (j, &q) in c[2..].iter().enumerate() {
                    lo[j] = ((q & 0xF) as i32 - 8) as f32 * d;
                    hi[j] = ((q >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (x, c) in o.chunks_exact_mut(QK).zip(b.chunks_exact(4 + QK / 2)) {
                let (d, m) = (f16_at(c, 0), f16_at(c, 2));
                let (lo, hi) = x.split_at_mut(QK / 2);
                for (j, &q) in c[4..].iter().enumerate() {
                    lo[j] = (q & 0xF) as f32 * d + m;
                    hi[j] = (q >> 4) as f32 * d + m;
                }
            }
        }
        GgmlType::Other(_) => {}
    }
}

/// Encode f32 values as `ty` (length must be a whole number of blocks). For writing test files.
pub fn quantize(ty: GgmlType, x: &[f32]) -> Result<Vec<u8>, String> {
    let n = ty.bytes_for(x.len() as u64)? as usize;
    let mut out = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => x.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => x.iter().for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        GgmlType::BF16 => x.iter().for_each(|v| out.extend_from_slice(&bf16::from_f32(*v).to_le_bytes())),
        GgmlType::Q8_0 => {
            for blk in x.chunks_exact(QK) {
                let amax = blk.iter().fold(0f32, |a, v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend(blk.iter().map(|v| ((v * id).round() as i8) as u8));
            }
        }
        GgmlType::Q4_0 => {
            for blk in x.chunks_exact(QK) {
                // The value of largest magnitude maps to -8, as in ggml's reference quantizer.
                let max = blk.iter().fold(0f32, |a, &v| if v.abs() > a.abs() { v } else { a });
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                let q = |v: f32| ((v * id + 8.5) as i32).clamp(0, 15) as u8;
                out.extend((0..QK / 2).map(|j| q(blk[j]) | (q(blk[j + QK / 2]) << 4)));
            }
        }
        GgmlType::Q4_1 => {
            for blk in x.chunks_exact(QK) {
                let min = blk.iter().fold(f32::INFINITY, |a, &v| a.min(v));
                let max = blk.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                let q = |v: f32| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8;
                out.extend((0..QK / 2).map(|j| q(blk[j]) | (q(blk[j + QK / 2]) << 4)));
            }
        }
        GgmlType::Other(_) => return Err(format!("cannot quantize to {}", ty.name())),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_block_layout_by_hand() {
        // d = 0.5, m = -1: nibble k decodes to k*0.5 - 1; low nibbles are elements 0..16.
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let mut out = vec![f32::NAN; 32];
        dequantize(GgmlType::Q4_1, &b, &mut out).unwrap();
        for j in 0..16 {
            assert_eq!(out[j], j as f32 * 0.5 - 1.0);
            assert_eq!(out[j + 16], (15 - j) as f32 * 0.5 - 1.0);
        }
    }

    #[test]
    fn quantizers_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..256).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::F16, GgmlType::F32] {
            let q = quantize(ty, &x).unwrap();
            let mut y = vec![f32::NAN; x.len()];
            dequantize(ty, &q, &mut y).unwrap();
            for (blk_x, blk_y) in x.chunks(QK).zip(y.chunks(QK)) {
                let range = blk_x.iter().fold(0f32, |a, v| a.max(v.abs())) * 2.0;
                let step = match ty {
                    GgmlType::Q8_0 => range / 254.0,
                    // The clamp at 15 costs the extreme opposite to the max a full step.
                    GgmlType::Q4_0 => range / 8.0,
                    GgmlType::Q4_1 => range / 15.0,
                    _ => range * 1e-3,
                };
                // Half a step, plus the f16 rounding of the stored scale (relative 2^-11).
                for (a, b) in blk_x.iter().zip(blk_y) {
                    assert!((a - b).abs() <= step * 0.5 + range * 2e-3 + 1e-6, "{ty:?}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn sizes_are_checked() {
        assert!(GgmlType::Q4_1.bytes_for(33).is_err());
        assert!(GgmlType::F32.bytes_for(u64::MAX).is_err());
        assert!(GgmlType::Other(12).bytes_for(32).unwrap_err().contains("12"));
        assert_eq!(GgmlType::Q4_1.bytes_for(64), Ok(40));
    }
}
