//! NF4/FP4 blockwise 4-bit quantization with double quantization, bit-compatible with
//! bitsandbytes 0.50.2, plus the fused NF4 linear layer QLoRA trains through.
//!
//! - [`Nf4Weight::quantize`]: blocks over the row-major flattened tensor, fp32 absmax per block,
//!   nearest code (ties to the lower index), two codes per byte (element 2j in the high nibble);
//!   with [`QuantConfig::double_quant`] the absmax is itself quantized to 8 bits.
//! - [`Nf4Weight::dequantize`]: to f32, bf16 or f16, the same bits bitsandbytes produces.
//! - [`Nf4Weight::to_bnb_tensors`] / [`Nf4Weight::from_bnb`]: bitsandbytes' serialized layout.
//! - [`linear`]: `y = x·deq(W)ᵀ` and its input gradient, slab by slab (the forward slab decoded
//!   straight into the transposed layout on AVX-512), never materialising W.
//! - [`Nf4Weight::to_device`] (feature `cuda`): the codes and restored absmax on a CUDA device,
//!   where [`linear`] then runs for inputs on that device (fused bf16 tensor-core kernel, or
//!   dequantize + cuBLAS), the host parts kept for export.
//!
//! The exact rules are in `../shared/reference/README.md` §3 and the vectors in
//! `tests/fixtures` (checked bit for bit by `tests/vectors.rs`).
//!
//! ```
//! use nf4::{Nf4Weight, QuantConfig};
//! use tensor::Tensor;
//! let w = Tensor::from_vec(vec![0.7f32, 0.8, 0.2, 0.4, 0.5, -0.9], [6]).unwrap();
//! let q = Nf4Weight::quantize("w", &w, &QuantConfig::default()).unwrap();
//! assert_eq!(q.packed(), &[0xEF, 0xAC, 0xD0]);
//! let back = q.dequantize().unwrap().to_vec::<f32>().unwrap();
//! assert_eq!(back[5], -0.9);
//! ```
//!
//! Deliberately not here: 8-bit (LLM.int8) quantization, CUDA kernels (tensor's `cuda::nf4_ops`
//! launches them), FP4 on a device, `quant_storage` reinterpretation.

mod codebook;
mod device;
mod double_quant;
mod error;
mod kernels;
pub mod linear;
mod quantize;
mod serialize;
mod transposed;
mod weight;

pub use codebook::{
    check_blocksize, dynamic_map, dynamic_map_midpoints, QuantTraits, QuantType, DEFAULT_BLOCKSIZE, DYNAMIC_MAP_BITS,
    MAX_BLOCKSIZE, MIN_BLOCKSIZE, NESTED_BLOCKSIZE, QUANT_TYPES,
};
pub use double_quant::{
    double_quantize, mean_offset, quantize_dynamic_blocks, restore_absmax, restore_absmax_into, NestedAbsmax,
};
pub use error::{Error, Result};
pub use quantize::{
    block_absmax, dequantize_4bit_into, dequantize_4bit_ref, pack_nibbles, quantize_4bit, quantize_4bit_ref,
    unpack_nibbles,
};
pub use serialize::{bnb_dtype_name, bnb_layout, bnb_quant_state_json, py_float_repr, BnbTensor};
pub use weight::{bits_per_param, Absmax, Nf4Weight, QuantConfig};
