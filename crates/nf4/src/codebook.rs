//! The code books, written once as data: the NF4 and FP4 4-bit tables, their fp32 midpoints, and
//! the signed 8-bit dynamic map used for double quantization, plus one table of quant-type traits.
//!
//! Reference: bitsandbytes 0.50.2 `functional.py` (`get_4bit_type`, `create_dynamic_map`) and
//! `backends/default/ops.py` (`_get_4bit_quantize_bounds`: midpoints `(c[i] + c[i+1]) / 2` in fp32).
//! Every value is the fp32 bit pattern from `reference/vectors/codebooks.json` (FP4's sorted
//! midpoints are computed from its table the same way); `tests/codebooks.rs` checks them against
//! that file. Nothing here is regenerated from formulas (torch's `linspace` rounding would differ).

use std::str::FromStr;

use crate::{Error, Result};

/// Blocksize of the nested (double-quantization) 8-bit absmax quantization, as in bitsandbytes.
pub const NESTED_BLOCKSIZE: usize = 256;
/// Default blocksize of the 4-bit quantization (`quantize_4bit`, `Params4bit`).
pub const DEFAULT_BLOCKSIZE: usize = 64;
/// Smallest valid blocksize.
pub const MIN_BLOCKSIZE: usize = 32;
/// Largest valid blocksize.
pub const MAX_BLOCKSIZE: usize = 4096;

pub(crate) const NF4_BITS: [u32; 16] = [
    0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000, 0x3da2faff,
    0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000,
];
pub(crate) const NF4_MIDPOINT_BITS: [u32; 15] = [
    0xbf591cd8, 0xbf1c5270, 0xbeeb8480, 0xbeadea76, 0xbe703cec, 0xbe0d38bc, 0xbd3a7871, 0x3d22faff, 0x3df64862,
    0x3e5067e0, 0x3e9582d4, 0x3ec753f9, 0x3f006d04, 0x3f248daf, 0x3f5c89da,
];
pub(crate) const FP4_BITS: [u32; 16] = [
    0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000, 0x3eaaaaab, 0x3f000000, 0x3e2aaaab, 0x3e800000, 0x00000000,
    0xbbaaaaab, 0xbf2aaaab, 0xbf800000, 0xbeaaaaab, 0xbf000000, 0xbe2aaaab, 0xbe800000,
];
/// FP4 as bitsandbytes' kernels dequantize it: sign × magnitude, so code 8 (sign bit set, zero
/// magnitude) gives -0.0 where `get_4bit_type("fp4")` (the serialized `quant_map`) holds +0.0.
/// The reference vector's sha256 of the FP4 dequant output confirms the -0.0.
pub(crate) const FP4_DEQUANT_BITS: [u32; 16] = {
    let mut b = FP4_BITS;
    b[8] = 0x8000_0000;
    b
};
pub(crate) const FP4_SORTED_MIDPOINT_BITS: [u32; 15] = [
    0xbf555556, 0xbf155556, 0xbed55556, 0xbe955556, 0xbe555556, 0xbdb00000, 0xbb2aaaab, 0x00000000, 0x3b2aaaab,
    0x3db00000, 0x3e555556, 0x3e955556, 0x3ed55556, 0x3f155556, 0x3f555556,
];
pub(crate) const FP4_SORTED_TO_CODE: [u8; 16] = [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3];
/// `create_dynamic_map(signed=True)` as fp32 bit patterns (reference/vectors/codebooks.json);
/// also the signed state map of the 8-bit optimizers.
pub const DYNAMIC_MAP_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000, 0xbf616666,
    0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333, 0xbf44999a, 0xbf410000,
    0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666, 0xbf27cccd, 0xbf243334, 0xbf20999a,
    0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a, 0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333,
    0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a, 0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a,
    0xbeb86666, 0xbeb13333, 0xbeaa0000, 0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999,
    0xbe6f3333, 0xbe60cccd, 0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000,
    0xbddb3334, 0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d, 0xbd5b851f,
    0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148, 0xbcfeb852, 0xbce7ae15,
    0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148, 0xbc1f3b64, 0xbc160418, 0xbc0ccccd,
    0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4, 0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a,
    0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d, 0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01,
    0xb9c7e283, 0xb98ce705, 0xb923d70b, 0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94,
    0xb513a3b7, 0x00000000, 0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b,
    0x3923d70b, 0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4, 0x3bcfdf3b,
    0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148, 0x3c68f5c3, 0x3c8b851f,
    0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148, 0x3d166667, 0x3d21eb85, 0x3d2d70a3,
    0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d, 0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d,
    0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a, 0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667,
    0x3dc428f7, 0x3dc9eb85, 0x3ddb3334, 0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000,
    0x3e526666, 0x3e60cccd, 0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc,
    0x3eaa0000, 0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a, 0x3f123334,
    0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666, 0x3f2f0000, 0x3f32999a,
    0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333, 0x3f4bcccd, 0x3f4f6666, 0x3f530000,
    0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000, 0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666,
    0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];
pub(crate) const DYNAMIC_MIDPOINT_BITS: [u32; 255] = [
    0xbf7c6666, 0xbf78cccd, 0xbf753333, 0xbf71999a, 0xbf6e0000, 0xbf6a6666, 0xbf66cccd, 0xbf633333, 0xbf5f999a,
    0xbf5c0000, 0xbf586666, 0xbf54cccd, 0xbf513333, 0xbf4d999a, 0xbf4a0000, 0xbf466666, 0xbf42cccd, 0xbf3f3333,
    0xbf3b999a, 0xbf380000, 0xbf346667, 0xbf30cccd, 0xbf2d3333, 0xbf29999a, 0xbf260000, 0xbf226667, 0xbf1ecccd,
    0xbf1b3333, 0xbf17999a, 0xbf140000, 0xbf106667, 0xbf0ccccd, 0xbf093333, 0xbf059999, 0xbf020000, 0xbefccccc,
    0xbef59999, 0xbeee6666, 0xbee73333, 0xbee00000, 0xbed8cccc, 0xbed1999a, 0xbeca6666, 0xbec33333, 0xbebc0000,
    0xbeb4cccc, 0xbead999a, 0xbea66666, 0xbe9f3333, 0xbe980000, 0xbe90cccd, 0xbe89999a, 0xbe826666, 0xbe766666,
    0xbe680000, 0xbe59999a, 0xbe4b3333, 0xbe3ccccd, 0xbe2e6666, 0xbe200000, 0xbe11999a, 0xbe033333, 0xbde9999a,
    0xbdd28f5c, 0xbdc70a3e, 0xbdc147af, 0xbdbb851f, 0xbdb5c290, 0xbdb00000, 0xbdaa3d71, 0xbda47ae2, 0xbd9eb852,
    0xbd98f5c2, 0xbd933333, 0xbd8d70a4, 0xbd87ae15, 0xbd81eb85, 0xbd7851ec, 0xbd6ccccd, 0xbd6147ae, 0xbd55c290,
    0xbd4a3d70, 0xbd3eb852, 0xbd333333, 0xbd27ae14, 0xbd1c28f6, 0xbd10a3d8, 0xbd051eb8, 0xbcf33334, 0xbcdc28f6,
    0xbcc51eb8, 0xbcae147c, 0xbc970a3e, 0xbc800000, 0xbc51eb86, 0xbc2d0e56, 0xbc1a9fbe, 0xbc116872, 0xbc083127,
    0xbbfdf3b6, 0xbbeb851e, 0xbbd91687, 0xbbc6a7f0, 0xbbb43958, 0xbba1cac0, 0xbb8f5c28, 0xbb79db22, 0xbb54fdf3,
    0xbb3020c4, 0xbb0b4396, 0xbacccccc, 0xba91d14e, 0xba68a71e, 0xba4b295f, 0xba2daba0, 0xba102de1, 0xb9e56042,
    0xb9aa64c4, 0xb95ed28a, 0xb9007358, 0xb8a2877f, 0xb866afcd, 0xb808509c, 0xb7734506, 0xb6b88ca4, 0xb5ff0382,
    0xb493a3b7, 0x3493a3b7, 0x35ff0382, 0x36b88ca4, 0x37734506, 0x3808509c, 0x3866afcd, 0x38a2877f, 0x39007358,
    0x395ed28a, 0x39aa64c4, 0x39e56042, 0x3a102de1, 0x3a2daba0, 0x3a4b295f, 0x3a68a71e, 0x3a91d14e, 0x3acccccc,
    0x3b0b4396, 0x3b3020c4, 0x3b54fdf3, 0x3b79db22, 0x3b8f5c28, 0x3ba1cac0, 0x3bb43958, 0x3bc6a7f0, 0x3bd91687,
    0x3beb851e, 0x3bfdf3b6, 0x3c083127, 0x3c116872, 0x3c1a9fbe, 0x3c2d0e56, 0x3c51eb86, 0x3c800000, 0x3c970a3e,
    0x3cae147c, 0x3cc51eb8, 0x3cdc28f6, 0x3cf33334, 0x3d051eb8, 0x3d10a3d8, 0x3d1c28f6, 0x3d27ae14, 0x3d333333,
    0x3d3eb852, 0x3d4a3d70, 0x3d55c290, 0x3d6147ae, 0x3d6ccccd, 0x3d7851ec, 0x3d81eb85, 0x3d87ae15, 0x3d8d70a4,
    0x3d933333, 0x3d98f5c2, 0x3d9eb852, 0x3da47ae2, 0x3daa3d71, 0x3db00000, 0x3db5c290, 0x3dbb851f, 0x3dc147af,
    0x3dc70a3e, 0x3dd28f5c, 0x3de9999a, 0x3e033333, 0x3e11999a, 0x3e200000, 0x3e2e6666, 0x3e3ccccd, 0x3e4b3333,
    0x3e59999a, 0x3e680000, 0x3e766666, 0x3e826666, 0x3e89999a, 0x3e90cccd, 0x3e980000, 0x3e9f3333, 0x3ea66666,
    0x3ead999a, 0x3eb4cccc, 0x3ebc0000, 0x3ec33333, 0x3eca6666, 0x3ed1999a, 0x3ed8cccc, 0x3ee00000, 0x3ee73333,
    0x3eee6666, 0x3ef59999, 0x3efccccc, 0x3f020000, 0x3f059999, 0x3f093333, 0x3f0ccccd, 0x3f106667, 0x3f140000,
    0x3f17999a, 0x3f1b3333, 0x3f1ecccd, 0x3f226667, 0x3f260000, 0x3f29999a, 0x3f2d3333, 0x3f30cccd, 0x3f346667,
    0x3f380000, 0x3f3b999a, 0x3f3f3333, 0x3f42cccd, 0x3f466666, 0x3f4a0000, 0x3f4d999a, 0x3f513333, 0x3f54cccd,
    0x3f586666, 0x3f5c0000, 0x3f5f999a, 0x3f633333, 0x3f66cccd, 0x3f6a6666, 0x3f6e0000, 0x3f71999a, 0x3f753333,
    0x3f78cccd, 0x3f7c6666, 0x3f7f199a,
];

/// A 4-bit quantization format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QuantType {
    /// NormalFloat4, the QLoRA format (`get_4bit_type("nf4")`).
    #[default]
    Nf4,
    /// bitsandbytes' FP4: 1 sign bit, 2 exponent bits, 1 mantissa bit, divided by 12.
    Fp4,
}

/// Everything that differs between 4-bit formats, in one table ([`QUANT_TYPES`]).
#[derive(Debug)]
pub struct QuantTraits {
    /// The format.
    pub quant_type: QuantType,
    /// Name used by bitsandbytes and on the command line (`"nf4"`, `"fp4"`).
    pub name: &'static str,
    /// Suffix of the packed quant-state key: `weight.quant_state.<bnb_state_key>`.
    pub bnb_state_key: &'static str,
    /// fp32 bit patterns of the 16 code values, indexed by 4-bit code (the `quant_map`).
    code_bits: [u32; 16],
    /// fp32 bit patterns dequantization multiplies by (differs from `code_bits` only in FP4's
    /// -0.0).
    dequant_bits: [u32; 16],
    /// fp32 midpoints between consecutive *sorted* code values.
    sorted_midpoint_bits: [u32; 15],
    /// 4-bit code of each sorted position (`argsort`, stable); `None` when the table is sorted.
    sorted_to_code: Option<[u8; 16]>,
    /// The code a scaled 0.0 gets (all-zero blocks and the odd-length pad nibble).
    pub zero_code: u8,
}

/// The per-format traits, indexed by `QuantType as usize`.
pub static QUANT_TYPES: [QuantTraits; 2] = [
    QuantTraits {
        quant_type: QuantType::Nf4,
        name: "nf4",
        bnb_state_key: "bitsandbytes__nf4",
        code_bits: NF4_BITS,
        dequant_bits: NF4_BITS,
        sorted_midpoint_bits: NF4_MIDPOINT_BITS,
        sorted_to_code: None,
        zero_code: 7,
    },
    QuantTraits {
        quant_type: QuantType::Fp4,
        name: "fp4",
        bnb_state_key: "bitsandbytes__fp4",
        code_bits: FP4_BITS,
        dequant_bits: FP4_DEQUANT_BITS,
        sorted_midpoint_bits: FP4_SORTED_MIDPOINT_BITS,
        sorted_to_code: Some(FP4_SORTED_TO_CODE),
        zero_code: 0,
    },
];

impl QuantTraits {
    /// The 16 code values, indexed by 4-bit code.
    pub fn code(&self) -> [f32; 16] {
        self.code_bits.map(f32::from_bits)
    }
    /// The 16 values dequantization multiplies by, indexed by 4-bit code: [`QuantTraits::code`]
    /// except FP4's code 8, which is -0.0 (bitsandbytes computes sign × magnitude).
    pub fn dequant_code(&self) -> [f32; 16] {
        self.dequant_bits.map(f32::from_bits)
    }
    /// The 15 fp32 midpoints of the sorted code values (`bucketize` boundaries).
    pub fn sorted_midpoints(&self) -> [f32; 15] {
        self.sorted_midpoint_bits.map(f32::from_bits)
    }
    /// Sorted position -> 4-bit code, or `None` when the code table is already sorted (NF4).
    pub fn sorted_to_code(&self) -> Option<&[u8; 16]> {
        self.sorted_to_code.as_ref()
    }
    /// The 4-bit code of a value already scaled into [-1, 1]: the nearest code value, ties to
    /// the lower sorted index (`searchsorted(midpoints, v, 'left')`). Scalar reference.
    pub fn encode_ref(&self, scaled: f32) -> u8 {
        let pos = self.sorted_midpoints().iter().filter(|&&m| m < scaled).count();
        match &self.sorted_to_code {
            Some(map) => map[pos],
            None => pos as u8,
        }
    }
}

impl QuantType {
    /// This format's row of [`QUANT_TYPES`].
    pub fn traits(self) -> &'static QuantTraits {
        &QUANT_TYPES[self as usize]
    }
    /// `"nf4"` or `"fp4"`.
    pub fn name(self) -> &'static str {
        self.traits().name
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for QuantType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        QUANT_TYPES.iter().find(|t| t.name == s).map(|t| t.quant_type).ok_or_else(|| Error::InvalidArgument {
            what: "quant_type".into(),
            msg: format!("unknown quant type '{s}' (expected nf4 or fp4)"),
        })
    }
}

/// The 256 values of bitsandbytes' signed 8-bit dynamic map, sorted ascending
/// (`create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`).
pub fn dynamic_map() -> [f32; 256] {
    DYNAMIC_MAP_BITS.map(f32::from_bits)
}

/// The 255 fp32 midpoints of [`dynamic_map`].
pub fn dynamic_map_midpoints() -> [f32; 255] {
    DYNAMIC_MIDPOINT_BITS.map(f32::from_bits)
}

/// Check a blocksize: a power of two from [`MIN_BLOCKSIZE`] to [`MAX_BLOCKSIZE`].
pub fn check_blocksize(blocksize: usize) -> Result<()> {
    if blocksize.is_power_of_two() && (MIN_BLOCKSIZE..=MAX_BLOCKSIZE).contains(&blocksize) {
        Ok(())
    } else {
        Err(Error::InvalidBlocksize { blocksize })
    }
}
