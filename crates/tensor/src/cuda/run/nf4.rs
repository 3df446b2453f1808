//! `run_*` entry points: NF4 (and bitsandbytes FP4) quantization, double quantization,
//! dequantization and the NF4 linear.

use super::*;
use crate::cuda::device::{CudaDevice, Launch};
use crate::cuda::params::*;
use crate::{bf16, Error, Result};

// ---------------------------------------------------------------- nf4

/// NF4 quantization of `x` (flattened) in blocks of `blocksize`: `(packed, absmax)`.
pub fn run_nf4_quantize<E: KernelFloat>(dev: &CudaDevice, x: &[E], blocksize: usize) -> Result<(Vec<u8>, Vec<f32>)> {
    quantize_4bit(dev, x, blocksize, "nf4_quantize", "cuda::run_nf4_quantize")
}

/// bitsandbytes FP4 quantization of `x` (flattened) in blocks of `blocksize`: `(packed, absmax)`,
/// with NF4's blocks, scaling and packing (the odd-count pad nibble is FP4's code of 0.0, 0).
pub fn run_fp4_quantize<E: KernelFloat>(dev: &CudaDevice, x: &[E], blocksize: usize) -> Result<(Vec<u8>, Vec<f32>)> {
    quantize_4bit(dev, x, blocksize, "fp4_quantize", "cuda::run_fp4_quantize")
}

fn quantize_4bit<E: KernelFloat>(
    dev: &CudaDevice,
    x: &[E],
    blocksize: usize,
    kernel: &str,
    op: &'static str,
) -> Result<(Vec<u8>, Vec<f32>)> {
    if blocksize < 2 || blocksize & 1 == 1 {
        return Err(Error::invalid(op, format!("blocksize {blocksize} must be even")));
    }
    let n = x.len();
    let nb = n.div_ceil(blocksize);
    let (dx, packed, absmax) = (up(dev, x)?, dev.zeros::<u8>(n.div_ceil(2))?, dev.zeros::<f32>(nb)?);
    let p = Nf4QuantParams {
        packed: dev.ptr(&packed),
        absmax: dev.ptr(&absmax),
        x: dev.ptr(&dx),
        n: n as i64,
        blocksize: i32_of(op, "blocksize", blocksize)?,
        _pad: 0,
    };
    dev.launch("nf4", &k(kernel, E::SUFFIX), Launch::rows(nb, 128), &p)?;
    Ok((down_raw(dev, &packed, n.div_ceil(2))?, down_raw(dev, &absmax, nb)?))
}

/// The double-quant state of an absmax vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Nf4Nested {
    pub codes: Vec<u8>,
    pub nested_absmax: Vec<f32>,
    pub offset: f32,
}

/// Double quantization of `absmax` with the signed dynamic map `dyn_code` (256 sorted values);
/// `offset` None computes the f64 mean on the device.
pub fn run_nf4_double_quant(
    dev: &CudaDevice,
    absmax: &[f32],
    dyn_code: &[f32; 256],
    offset: Option<f32>,
) -> Result<Nf4Nested> {
    let nb = absmax.len();
    let groups = nb.div_ceil(256);
    let (da, dc) = (dev.upload(absmax)?, dev.upload(&dyn_code[..])?);
    let offset = match offset {
        Some(o) => o,
        None => {
            let off = dev.zeros::<f32>(1)?;
            let p = Nf4DqOffsetParams { offset: dev.ptr(&off), absmax: dev.ptr(&da), nblocks: nb as i64 };
            dev.launch("nf4", "nf4_dq_offset_f32", Launch::linear(1, 1024), &p)?;
            down_raw(dev, &off, 1)?[0]
        }
    };
    let (codes, nested) = (dev.zeros::<u8>(nb)?, dev.zeros::<f32>(groups)?);
    let p = Nf4DqQuantParams {
        codes: dev.ptr(&codes),
        nested_absmax: dev.ptr(&nested),
        absmax: dev.ptr(&da),
        dyn_code: dev.ptr(&dc),
        nblocks: nb as i64,
        offset,
        _pad: 0,
    };
    dev.launch("nf4", "nf4_dq_quantize_f32", Launch::linear(groups.clamp(1, 65_535) as u32, 256), &p)?;
    Ok(Nf4Nested { codes: down_raw(dev, &codes, nb)?, nested_absmax: down_raw(dev, &nested, groups)?, offset })
}

/// Restores the f32 absmax from the double-quant state.
pub fn run_nf4_restore_absmax(dev: &CudaDevice, nested: &Nf4Nested, dyn_code: &[f32; 256]) -> Result<Vec<f32>> {
    let nb = nested.codes.len();
    let (dcodes, dn, dc, out) = (
        dev.upload(&nested.codes)?,
        dev.upload(&nested.nested_absmax)?,
        dev.upload(&dyn_code[..])?,
        dev.zeros::<f32>(nb)?,
    );
    let p = Nf4DqRestoreParams {
        absmax: dev.ptr(&out),
        codes: dev.ptr(&dcodes),
        nested_absmax: dev.ptr(&dn),
        dyn_code: dev.ptr(&dc),
        nblocks: nb as i64,
        offset: nested.offset,
        _pad: 0,
    };
    dev.launch("nf4", "nf4_dq_restore_f32", Launch::elementwise(nb), &p)?;
    down_raw(dev, &out, nb)
}

/// NF4 dequantization of `n` values; `absmax` plain, or the nested state restored on the fly.
pub fn run_nf4_dequantize<E: KernelFloat>(
    dev: &CudaDevice,
    packed: &[u8],
    n: usize,
    blocksize: usize,
    absmax: Option<&[f32]>,
    nested: Option<(&Nf4Nested, &[f32; 256])>,
) -> Result<Vec<E>> {
    dequantize_4bit(dev, packed, n, blocksize, absmax, nested, "nf4_dequantize", "cuda::run_nf4_dequantize")
}

/// bitsandbytes FP4 dequantization of `n` values (code 8 gives -0.0, as bnb's sign x magnitude);
/// `absmax` plain, or the nested state restored on the fly.
pub fn run_fp4_dequantize<E: KernelFloat>(
    dev: &CudaDevice,
    packed: &[u8],
    n: usize,
    blocksize: usize,
    absmax: Option<&[f32]>,
    nested: Option<(&Nf4Nested, &[f32; 256])>,
) -> Result<Vec<E>> {
    dequantize_4bit(dev, packed, n, blocksize, absmax, nested, "fp4_dequantize", "cuda::run_fp4_dequantize")
}

#[allow(clippy::too_many_arguments)]
fn dequantize_4bit<E: KernelFloat>(
    dev: &CudaDevice,
    packed: &[u8],
    n: usize,
    blocksize: usize,
    absmax: Option<&[f32]>,
    nested: Option<(&Nf4Nested, &[f32; 256])>,
    kernel: &str,
    op: &'static str,
) -> Result<Vec<E>> {
    let dp = dev.upload(packed)?;
    let out = dev.zeros::<E::Dev>(n)?;
    let mut p = Nf4DequantParams {
        out: dev.ptr(&out),
        packed: dev.ptr(&dp),
        n: n as i64,
        blocksize: i32_of(op, "blocksize", blocksize)?,
        ..Default::default()
    };
    // Keep every uploaded buffer alive until the download.
    let _keep_plain;
    let _keep_nested;
    match (absmax, nested) {
        (Some(a), _) => {
            let da = dev.upload(a)?;
            p.absmax = dev.ptr(&da);
            _keep_plain = Some(da);
            _keep_nested = None;
        }
        (None, Some((st, dyn_code))) => {
            let (dq, dn, dc) = (dev.upload(&st.codes)?, dev.upload(&st.nested_absmax)?, dev.upload(&dyn_code[..])?);
            p.qabsmax = dev.ptr(&dq);
            p.nested_absmax = dev.ptr(&dn);
            p.dyn_code = dev.ptr(&dc);
            p.offset = st.offset;
            _keep_plain = None;
            _keep_nested = Some((dq, dn, dc));
        }
        (None, None) => return Err(Error::invalid(op, "needs absmax or the nested state")),
    }
    dev.launch("nf4", &k(kernel, E::SUFFIX), Launch::elementwise(n.div_ceil(2)), &p)?;
    down(dev, &out, n)
}

/// `y (M, N) = x (M, K) . W^T` with `W (N, K)` in NF4 (`packed`, restored f32 `absmax`).
/// Returns f32 (`out_bf16` false) or bf16 values widened to f32.
#[allow(clippy::too_many_arguments)]
pub fn run_nf4_linear(
    dev: &CudaDevice,
    x: &[bf16],
    m: usize,
    k_dim: usize,
    packed: &[u8],
    absmax: &[f32],
    n: usize,
    blocksize: usize,
    out_bf16: bool,
) -> Result<Vec<f32>> {
    const OP: &str = "cuda::run_nf4_linear";
    let (dx, dp, da) = (up(dev, x)?, dev.upload(packed)?, dev.upload(absmax)?);
    let p_base = Nf4LinearParams {
        x: dev.ptr(&dx),
        packed: dev.ptr(&dp),
        absmax: dev.ptr(&da),
        m: i32_of(OP, "M", m)?,
        n: i32_of(OP, "N", n)?,
        k: i32_of(OP, "K", k_dim)?,
        blocksize: i32_of(OP, "blocksize", blocksize)?,
        out_bf16: out_bf16 as i32,
        ..Default::default()
    };
    let cfg = Launch {
        grid: (n.div_ceil(64).max(1) as u32, m.div_ceil(64).max(1) as u32, 1),
        block: (128, 1, 1),
        shared_bytes: 0,
    };
    if out_bf16 {
        let y = dev.zeros::<u16>(m * n)?;
        let p = Nf4LinearParams { y: dev.ptr(&y), ..p_base };
        dev.launch("nf4_linear", "nf4_linear_fwd_bf16", cfg, &p)?;
        Ok(down::<bf16>(dev, &y, m * n)?.into_iter().map(f32::from).collect())
    } else {
        let y = dev.zeros::<f32>(m * n)?;
        let p = Nf4LinearParams { y: dev.ptr(&y), ..p_base };
        dev.launch("nf4_linear", "nf4_linear_fwd_bf16", cfg, &p)?;
        down_raw(dev, &y, m * n)
    }
}
