//! NF4/FP4 blockwise quantization with double quantization, bit-compatible with bitsandbytes.
