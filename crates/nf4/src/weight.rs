//! [`Nf4Weight`]: a frozen 4-bit weight, i.e. bitsandbytes' `QuantState` together with its packed
//! codes. Built by quantizing a tensor or from parts (checked), dequantized to f32/bf16/f16.
//!
//! A weight can also live on a CUDA device ([`Nf4Weight::to_device`], feature `cuda`): its codes
//! and restored absmax as device tensors beside the host parts (see `device.rs`).
//!
//! Reference: bitsandbytes 0.50.2 `functional.py: QuantState, quantize_4bit, dequantize_4bit`.
//! Deliberately not here: `quant_storage` reinterpretation (codes are always bytes), the CUDA
//! code (`device.rs`), and `Clone` (a weight can be large; copying one is never silent:
//! [`Nf4Weight::to_device`] is the explicit copy).

use std::borrow::Cow;

use rayon::prelude::*;
use tensor::{bf16, f16, DType, Device, Element, Tensor};

use crate::codebook::{check_blocksize, QuantType, DEFAULT_BLOCKSIZE, NESTED_BLOCKSIZE};
use crate::device::{self, Resident};
use crate::double_quant::{double_quantize, mean_offset, restore_absmax, NestedAbsmax};
use crate::quantize::{decode_chunk, dequantize_4bit_into, quantize_4bit};
use crate::{Error, Result};

/// Elements each rayon task decodes in [`Nf4Weight::dequantize_rows_on_device`] on the CPU.
const ROWS_CHUNK: usize = 1 << 14;

/// How to quantize: format, blocksize and whether to double-quantize the absmax.
/// The default is QLoRA's: NF4, blocksize 64, double quantization on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantConfig {
    /// NF4 or FP4.
    pub quant_type: QuantType,
    /// Elements per absmax block: a power of two from 32 to 4096.
    pub blocksize: usize,
    /// Quantize the absmax again with the 8-bit dynamic map (`compress_statistics`).
    pub double_quant: bool,
}

impl Default for QuantConfig {
    fn default() -> Self {
        QuantConfig { quant_type: QuantType::Nf4, blocksize: DEFAULT_BLOCKSIZE, double_quant: true }
    }
}

impl QuantConfig {
    /// Error unless the blocksize is valid.
    pub fn validate(&self) -> Result<()> {
        check_blocksize(self.blocksize)
    }
    /// Storage bits per parameter, see [`bits_per_param`].
    pub fn bits_per_param(&self) -> f64 {
        bits_per_param(self.blocksize, self.double_quant)
    }
}

/// Storage bits per parameter for large tensors: `4 + 32/blocksize` without double
/// quantization, `4 + 8/blocksize + 32/(blocksize·256)` with it (4.127 at blocksize 64), not
/// counting the one fp32 offset per tensor.
pub fn bits_per_param(blocksize: usize, double_quant: bool) -> f64 {
    let bs = blocksize as f64;
    if double_quant {
        4.0 + 8.0 / bs + 32.0 / (bs * NESTED_BLOCKSIZE as f64)
    } else {
        4.0 + 32.0 / bs
    }
}

/// The per-block scales of a 4-bit weight.
#[derive(Debug, PartialEq)]
pub enum Absmax {
    /// One fp32 absmax per block.
    Plain(Vec<f32>),
    /// Double-quantized: 8-bit codes, nested fp32 absmax and the offset.
    Nested(NestedAbsmax),
}

impl Absmax {
    /// An explicit copy (the vectors are as large as the weight's block count).
    fn copy(&self) -> Absmax {
        match self {
            Absmax::Plain(a) => Absmax::Plain(a.clone()),
            Absmax::Nested(n) => Absmax::Nested(NestedAbsmax {
                codes: n.codes.clone(),
                nested_absmax: n.nested_absmax.clone(),
                offset: n.offset,
                nested_blocksize: n.nested_blocksize,
            }),
        }
    }
}

/// A 4-bit blockwise-quantized weight (NF4 or FP4), bit-compatible with bitsandbytes.
#[derive(Debug)]
pub struct Nf4Weight {
    name: String,
    quant_type: QuantType,
    blocksize: usize,
    shape: Vec<usize>,
    dtype: DType,
    packed: Vec<u8>,
    absmax: Absmax,
    /// The codes and restored absmax on a CUDA device; `None` for a host-only weight.
    resident: Option<Resident>,
}

impl Nf4Weight {
    /// Quantize a float tensor (f32, bf16 or f16, any shape, any layout) named `name`.
    /// With double quantization the offset is [`mean_offset`] of the absmax.
    pub fn quantize(name: &str, x: &Tensor, cfg: &QuantConfig) -> Result<Self> {
        Self::quantize_tensor(name, x, cfg, None)
    }

    /// Like [`Nf4Weight::quantize`] with an explicit double-quantization offset (for example
    /// bitsandbytes' own fp32 mean, to reproduce its codes bit for bit).
    pub fn quantize_with_offset(name: &str, x: &Tensor, cfg: &QuantConfig, offset: f32) -> Result<Self> {
        Self::quantize_tensor(name, x, cfg, Some(offset))
    }

    fn quantize_tensor(name: &str, x: &Tensor, cfg: &QuantConfig, offset: Option<f32>) -> Result<Self> {
        let x = x.contiguous()?;
        let shape = x.dims().to_vec();
        match x.dtype() {
            DType::F32 => Self::quantize_slice(name, x.as_slice::<f32>()?, &shape, cfg, offset),
            DType::BF16 => Self::quantize_slice(name, x.as_slice::<bf16>()?, &shape, cfg, offset),
            DType::F16 => Self::quantize_slice(name, x.as_slice::<f16>()?, &shape, cfg, offset),
            other => {
                Err(Error::arg(name, format!("cannot quantize dtype {} (expected f32, bf16 or f16)", other.as_str())))
            }
        }
    }

    /// Quantize row-major `data` of the given `shape`; the element type is the state's dtype.
    /// `offset`: the double-quantization offset, or `None` for [`mean_offset`].
    pub fn quantize_slice<T: Element>(
        name: &str,
        data: &[T],
        shape: &[usize],
        cfg: &QuantConfig,
        offset: Option<f32>,
    ) -> Result<Self> {
        cfg.validate()?;
        if !T::DTYPE.is_float() {
            return Err(Error::arg(name, format!("cannot quantize dtype {}", T::DTYPE.as_str())));
        }
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::arg(name, format!("{} elements do not fill shape {shape:?}", data.len())));
        }
        let (packed, absmax) = quantize_4bit(name, data, cfg.blocksize, cfg.quant_type)?;
        let absmax = if cfg.double_quant {
            let offset = offset.unwrap_or_else(|| mean_offset(&absmax));
            if !offset.is_finite() {
                return Err(Error::arg(name, format!("double-quant offset {offset} is not finite")));
            }
            Absmax::Nested(double_quantize(&absmax, offset))
        } else {
            Absmax::Plain(absmax)
        };
        Ok(Nf4Weight {
            name: name.to_string(),
            quant_type: cfg.quant_type,
            blocksize: cfg.blocksize,
            shape: shape.to_vec(),
            dtype: T::DTYPE,
            packed,
            absmax,
            resident: None,
        })
    }

    /// Assemble a weight from stored parts, checking that they are consistent: a valid
    /// blocksize, a float dtype, exactly `ceil(n/2)` code bytes, one absmax (or 8-bit code) per
    /// block, enough nested absmax values, and finite scales.
    pub fn from_parts(
        name: &str,
        quant_type: QuantType,
        blocksize: usize,
        shape: Vec<usize>,
        dtype: DType,
        packed: Vec<u8>,
        absmax: Absmax,
    ) -> Result<Self> {
        check_blocksize(blocksize).map_err(|e| Error::state(name, format!("{e}")))?;
        if !dtype.is_float() {
            return Err(Error::state(name, format!("dtype {} is not a float type (f32, bf16, f16)", dtype.as_str())));
        }
        // Checked (zero dims aside, so strides fit too): a wrapped count could match the codes.
        let n = shape
            .iter()
            .filter(|&&d| d != 0)
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .map(|n| if shape.contains(&0) { 0 } else { n })
            .ok_or_else(|| Error::state(name, format!("element count of shape {shape:?} overflows")))?;
        if packed.len() != n.div_ceil(2) {
            return Err(Error::state(
                name,
                format!("{} code bytes for shape {shape:?} ({n} elements need {} bytes)", packed.len(), n.div_ceil(2)),
            ));
        }
        let nblocks = n.div_ceil(blocksize);
        let finite = |v: &[f32]| v.iter().all(|x| x.is_finite());
        match &absmax {
            Absmax::Plain(a) => {
                if a.len() != nblocks {
                    return Err(Error::state(
                        name,
                        format!("{} absmax values, expected {nblocks} (blocksize {blocksize})", a.len()),
                    ));
                }
                if !finite(a) {
                    return Err(Error::state(name, "absmax holds NaN or Inf"));
                }
            }
            Absmax::Nested(nest) => {
                if nest.codes.len() != nblocks {
                    return Err(Error::state(
                        name,
                        format!("{} absmax codes, expected {nblocks} (blocksize {blocksize})", nest.codes.len()),
                    ));
                }
                check_blocksize(nest.nested_blocksize).map_err(|e| Error::state(name, format!("nested {e}")))?;
                let need = nblocks.div_ceil(nest.nested_blocksize);
                if nest.nested_absmax.len() != need {
                    return Err(Error::state(
                        name,
                        format!("{} nested absmax values, expected {need}", nest.nested_absmax.len()),
                    ));
                }
                if !finite(&nest.nested_absmax) || !nest.offset.is_finite() {
                    return Err(Error::state(name, "nested absmax or offset holds NaN or Inf"));
                }
            }
        }
        Ok(Nf4Weight { name: name.to_string(), quant_type, blocksize, shape, dtype, packed, absmax, resident: None })
    }

    /// The tensor name used in errors.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// NF4 or FP4.
    pub fn quant_type(&self) -> QuantType {
        self.quant_type
    }
    /// Elements per absmax block.
    pub fn blocksize(&self) -> usize {
        self.blocksize
    }
    /// The original shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// The original dtype, which [`Nf4Weight::dequantize`] returns.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Packed codes, `ceil(n/2)` bytes, element 2j in the high nibble of byte j.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }
    /// The block scales (plain or double-quantized).
    pub fn absmax(&self) -> &Absmax {
        &self.absmax
    }
    /// True when the absmax is double-quantized.
    pub fn is_nested(&self) -> bool {
        matches!(self.absmax, Absmax::Nested(_))
    }

    /// The fp32 absmax used by dequantization (restored if double-quantized).
    pub fn restored_absmax(&self) -> Result<Cow<'_, [f32]>> {
        match &self.absmax {
            Absmax::Plain(a) => Ok(Cow::Borrowed(a)),
            Absmax::Nested(n) => Ok(Cow::Owned(restore_absmax(n)?)),
        }
    }

    /// Dequantize into `out` (length [`Nf4Weight::numel`]) of any float type: fp32 product
    /// `code * absmax`, then round-to-nearest-even into `O`.
    pub fn dequantize_into<O: Element>(&self, out: &mut [O]) -> Result<()> {
        if out.len() != self.numel() {
            return Err(Error::arg(
                &self.name,
                format!("output of {} elements for {} quantized elements", out.len(), self.numel()),
            ));
        }
        let absmax = self.restored_absmax()?;
        dequantize_4bit_into(&self.name, &self.packed, &absmax, self.blocksize, self.quant_type, out)
    }

    /// Dequantize to a tensor of the original dtype and shape.
    pub fn dequantize(&self) -> Result<Tensor> {
        self.dequantize_to(self.dtype)
    }

    /// Dequantize to a tensor of `dtype` (f32, bf16 or f16) with the original shape.
    pub fn dequantize_to(&self, dtype: DType) -> Result<Tensor> {
        let n = self.numel();
        let shape = self.shape.clone();
        let t = match dtype {
            DType::F32 => {
                let mut v = vec![0f32; n];
                self.dequantize_into(&mut v)?;
                Tensor::from_vec(v, shape)?
            }
            DType::BF16 => {
                let mut v = vec![bf16::ZERO; n];
                self.dequantize_into(&mut v)?;
                Tensor::from_vec(v, shape)?
            }
            DType::F16 => {
                let mut v = vec![f16::ZERO; n];
                self.dequantize_into(&mut v)?;
                Tensor::from_vec(v, shape)?
            }
            other => {
                return Err(Error::arg(
                    &self.name,
                    format!("cannot dequantize to {} (expected f32, bf16 or f16)", other.as_str()),
                ))
            }
        };
        Ok(t)
    }

    // ---- devices ------------------------------------------------------------------------------

    /// Where the NF4 linear runs with this weight: `Device::Cpu` for a host weight, the CUDA
    /// device its codes were moved to by [`Nf4Weight::to_device`].
    pub fn device(&self) -> Device {
        self.resident.as_ref().map_or(Device::Cpu, |r| r.device)
    }

    /// The device copies `(codes, absmax)` of a weight on a CUDA device: `U8 (ceil(n/2),)` packed
    /// codes and the `F32 (ceil(n/blocksize),)` absmax with double quantization undone. `None`
    /// for a host weight.
    pub fn device_tensors(&self) -> Option<(&Tensor, &Tensor)> {
        self.resident.as_ref().map(|r| (&r.codes, &r.absmax))
    }

    /// A copy of this weight for `device`. On a CUDA device (feature `cuda`) the packed codes and
    /// the f32 absmax, restored once on the CPU (bit for bit what dequantization uses), are
    /// uploaded as tensors; an NF4 linear whose input is on that device then runs there. The
    /// host parts are copied too and kept: export, merge, serialization, [`Nf4Weight::dequantize`]
    /// and the CPU linear read them (4.13 bits per weight of host memory at blocksize 64; the
    /// device holds 4.5). `Device::Cpu` gives a host-only copy; a weight already on `device`
    /// shares its device buffers.
    ///
    /// Errors: the crate built without feature `cuda`, or no CUDA driver or device
    /// (`tensor::Error::Device`, naming the weight).
    pub fn to_device(&self, device: Device) -> Result<Nf4Weight> {
        let resident = match (device, &self.resident) {
            (Device::Cpu, _) => None,
            (_, Some(r)) if r.device == device => Some(r.share()),
            _ => Some(device::upload(self, device)?),
        };
        Ok(Nf4Weight {
            name: self.name.clone(),
            quant_type: self.quant_type,
            blocksize: self.blocksize,
            shape: self.shape.clone(),
            dtype: self.dtype,
            packed: self.packed.clone(),
            absmax: self.absmax.copy(),
            resident,
        })
    }

    /// Dequantize to a tensor of `dtype` (f32, bf16 or f16) and the original shape on
    /// [`Nf4Weight::device`]: by the CUDA kernel for a device weight (the same bits as
    /// [`Nf4Weight::dequantize_to`], which always returns a host tensor), on the CPU otherwise.
    pub fn dequantize_on_device(&self, dtype: DType) -> Result<Tensor> {
        match self.device() {
            Device::Cpu => self.dequantize_to(dtype),
            Device::Cuda(_) => device::dequantize_device(self, dtype),
        }
    }

    /// Rows `r0..r0 + rows` of a 2-D weight `(out, in)` dequantized to `dtype` (f32, bf16 or
    /// f16) as a `(rows, in)` tensor on [`Nf4Weight::device`], for callers that go slab by slab.
    pub fn dequantize_rows_on_device(&self, r0: usize, rows: usize, dtype: DType) -> Result<Tensor> {
        let (out_f, in_f) = crate::linear::weight_dims(self)?;
        if r0.checked_add(rows).is_none_or(|end| end > out_f) {
            return Err(Error::arg(&self.name, format!("rows {r0}..{r0}+{rows} outside the weight's {out_f} rows")));
        }
        if let Device::Cuda(_) = self.device() {
            return device::dequantize_rows_device(self, r0, rows, dtype);
        }
        let absmax = self.restored_absmax()?;
        let (start, n) = (r0 * in_f, rows * in_f);
        let t = match dtype {
            DType::F32 => Tensor::from_vec(self.decode_range::<f32>(&absmax, start, n), [rows, in_f])?,
            DType::BF16 => Tensor::from_vec(self.decode_range::<bf16>(&absmax, start, n), [rows, in_f])?,
            DType::F16 => Tensor::from_vec(self.decode_range::<f16>(&absmax, start, n), [rows, in_f])?,
            other => {
                return Err(Error::arg(
                    &self.name,
                    format!("cannot dequantize to {} (expected f32, bf16 or f16)", other.as_str()),
                ))
            }
        };
        Ok(t)
    }

    /// Flat elements `start..start + n` (in bounds) decoded on the CPU in parallel.
    fn decode_range<O: Element + Send>(&self, absmax: &[f32], start: usize, n: usize) -> Vec<O> {
        let code = self.quant_type.traits().dequant_code();
        let mut v = vec![O::from_f32(0.0); n];
        v.par_chunks_mut(ROWS_CHUNK)
            .enumerate()
            .for_each(|(i, c)| decode_chunk(&self.packed, absmax, self.blocksize, &code, start + i * ROWS_CHUNK, c));
        v
    }

    /// Actual storage of this weight in bits per parameter: codes, scales, nested scales and
    /// the offset (padding of small tensors included).
    pub fn storage_bits_per_param(&self) -> f64 {
        let bytes = self.packed.len()
            + match &self.absmax {
                Absmax::Plain(a) => 4 * a.len(),
                Absmax::Nested(n) => n.codes.len() + 4 * n.nested_absmax.len() + 4,
            };
        8.0 * bytes as f64 / self.numel().max(1) as f64
    }
}
