//! Element types. Compute happens in f32; bf16 and f16 are storage types widened exactly on read
//! and narrowed with round-to-nearest-even on write (the `half` crate's conversions).

use half::{bf16, f16};

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    F16,
    U8,
    /// Token ids, targets (with the -100 ignore index) and other indices.
    I32,
}

impl DType {
    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::BF16 | DType::F16 => 2,
            DType::U8 => 1,
        }
    }

    /// True for f32, bf16 and f16.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::BF16 | DType::F16)
    }

    /// The lower-case name used in files and on the command line (`f32`, `bf16`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
            DType::U8 => "u8",
            DType::I32 => "i32",
        }
    }
}

impl std::str::FromStr for DType {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "f32" | "float32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "f16" | "float16" => Ok(DType::F16),
            "u8" | "uint8" => Ok(DType::U8),
            "i32" | "int32" => Ok(DType::I32),
            _ => {
                Err(crate::Error::invalid("dtype", format!("unknown dtype '{s}' (expected f32, bf16, f16, u8 or i32)")))
            }
        }
    }
}

/// A Rust type that can be a tensor element.
pub trait Element: Copy + Send + Sync + std::fmt::Debug + PartialEq + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// Widen to f32 (exact for every type but i32 beyond 2^24).
    fn to_f32(self) -> f32;
    /// Narrow from f32 (round-to-nearest-even for bf16/f16; saturating for integers).
    fn from_f32(v: f32) -> Self;
    /// The zero value.
    fn zero() -> Self;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    fn zero() -> Self {
        0.0
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn zero() -> Self {
        bf16::ZERO
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn zero() -> Self {
        f16::ZERO
    }
}

impl Element for u8 {
    const DTYPE: DType = DType::U8;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v as u8
    }
    fn zero() -> Self {
        0
    }
}

impl Element for i32 {
    const DTYPE: DType = DType::I32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v as i32
    }
    fn zero() -> Self {
        0
    }
}
