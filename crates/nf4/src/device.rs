//! NF4 (and FP4) weights resident on a CUDA device (feature `cuda`) and the NF4 linear there.
//!
//! [`Nf4Weight::to_device`](crate::Nf4Weight::to_device) uploads a weight's packed codes and its
//! f32 absmax, restored once from the double-quant state by the CPU code (so device
//! dequantization is bit for bit the CPU's); the host parts stay for export, merge and the CPU
//! path. On the device, `y = x·deq(W)ᵀ` and `dx = dy·deq(W)` run through
//! `tensor::cuda::nf4_ops`, one weight at a time and slab by slab for weights past
//! [`DEVICE_SLAB_ELEMS`] elements, never the whole model:
//! - bf16 x: the fused kernel (W dequantized tile by tile to bf16 in shared memory, tensor cores,
//!   f32 accumulation, y rounded once); where it does not apply, or with `QLORA_NF4_LINEAR=cublas`
//!   in the environment, W dequantized to bf16 + cuBLAS, the same arithmetic. dx: W in bf16 and one bf16 GEMM (f32 accumulation) when the weight is
//!   one slab, else the f32 path below rounded once.
//! - f32 x: W dequantized to f32, cuBLAS in f32 (no TF32).
//! - f16 x: widened to f32 on the device, the f32 path, the result rounded once to f16.
//!
//! Numerics against the CPU (which widens x to f32, keeps W in f32 and rounds the result once to
//! x's dtype): f32 and f16 are the same arithmetic up to the order of the f32 sums; bf16 on CUDA
//! also rounds W to bf16 (≤ 2^-8 relative per weight), which is what bitsandbytes' CUDA
//! `MatMul4Bit` computes (`dequantize_4bit(W).to(bf16)` then a bf16 matmul).
//!
//! FP4 weights go to the device too: dequantization runs nf4.cu's `fp4_dequantize_*` (bit for bit
//! the CPU's), and the bf16 forward always takes dequantize + cuBLAS (the fused kernel holds the
//! NF4 table only).
//!
//! Deliberately not here: keeping only the double-quant state on the device (restored absmax
//! costs 0.5 bit per weight at blocksize 64 instead of 0.13; one restore per weight instead of
//! one per call).

use tensor::{DType, Device, Tensor};

use crate::weight::Nf4Weight;
use crate::{Error, Result};

/// Elements of W dequantized at a time on a device: 2^27 (512 MiB in f32, 256 MiB in bf16), so
/// every weight of a 7B or 13B Llama is one slab and a 70B MLP weight about two.
pub const DEVICE_SLAB_ELEMS: usize = 1 << 27;

/// A weight's device copy: its codes and restored absmax as tensors on one CUDA device.
#[derive(Debug)]
pub(crate) struct Resident {
    pub(crate) device: Device,
    /// `U8 (ceil(n/2),)`, element 2j in the high nibble of byte j.
    pub(crate) codes: Tensor,
    /// `F32 (ceil(n/blocksize),)`, double quantization undone.
    pub(crate) absmax: Tensor,
}

impl Resident {
    /// Another handle on the same device buffers (no copy).
    pub(crate) fn share(&self) -> Resident {
        Resident { device: self.device, codes: self.codes.clone(), absmax: self.absmax.clone() }
    }
}

/// `tensor::Error::Device` naming the weight, as the nf4 error.
fn device_error(msg: String) -> Error {
    Error::Tensor(tensor::Error::Device(msg))
}

/// Rows of W per device slab of at most `slab_elems` elements (at least one row).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) fn device_slab_rows(out_f: usize, in_f: usize, slab_elems: usize) -> usize {
    (slab_elems / in_f.max(1)).clamp(1, out_f.max(1))
}

/// `w`'s codes and restored absmax on `device`, or the error saying to call `to_device`.
fn resident_on<'a>(w: &'a Nf4Weight, device: Device, op: &str) -> Result<(&'a Tensor, &'a Tensor)> {
    match w.device_tensors() {
        Some(t) if w.device() == device => Ok(t),
        _ => Err(device_error(format!(
            "{op}: NF4 weight '{}' is on {:?} but the input is on {device:?}: call Nf4Weight::to_device({device:?}) \
             on the weight first",
            w.name(),
            w.device()
        ))),
    }
}

#[cfg(not(feature = "cuda"))]
pub(crate) use no_cuda::{backward_device, dequantize_device, dequantize_rows_device, forward_device, upload};
#[cfg(feature = "cuda")]
pub(crate) use on_cuda::{backward_device, dequantize_device, dequantize_rows_device, forward_device, upload};

#[cfg(feature = "cuda")]
mod on_cuda {
    use super::*;
    use crate::codebook::QuantType;
    use crate::linear::{rows_of, weight_dims};
    use tensor::cuda::nf4_ops;

    /// The codes and restored absmax of `w` uploaded to the CUDA `device`.
    pub(crate) fn upload(w: &Nf4Weight, device: Device) -> Result<Resident> {
        let named = |e: tensor::Error| match e {
            tensor::Error::Device(m) => device_error(format!("nf4: moving weight '{}' to {device:?}: {m}", w.name())),
            other => Error::Tensor(other),
        };
        let codes = Tensor::from_slice(w.packed(), [w.packed().len()])?.to_device(device).map_err(named)?;
        let absmax = w.restored_absmax()?;
        let absmax = Tensor::from_slice(&absmax, [absmax.len()])?.to_device(device).map_err(named)?;
        Ok(Resident { device, codes, absmax })
    }

    /// The whole weight dequantized to `dtype` (f32, bf16 or f16) on its device.
    pub(crate) fn dequantize_device(w: &Nf4Weight, dtype: DType) -> Result<Tensor> {
        let (codes, absmax) = resident_on(w, w.device(), "dequantize")?;
        let code = w.quant_type().traits().dequant_code();
        let kernel_dtype = if dtype == DType::F16 { DType::F32 } else { dtype };
        let t = nf4_ops::dequantize(codes, absmax, &code, w.blocksize(), w.shape(), kernel_dtype)?;
        Ok(t.to_dtype(dtype)?)
    }

    /// Rows `r0..r0 + rows` of the 2-D weight dequantized to `dtype` on its device.
    pub(crate) fn dequantize_rows_device(w: &Nf4Weight, r0: usize, rows: usize, dtype: DType) -> Result<Tensor> {
        let (out_f, in_f) = weight_dims(w)?;
        let (codes, absmax) = resident_on(w, w.device(), "dequantize_rows")?;
        let code = w.quant_type().traits().dequant_code();
        let kernel_dtype = if dtype == DType::F16 { DType::F32 } else { dtype };
        let t = nf4_ops::dequantize_rows(codes, absmax, &code, w.blocksize(), (out_f, in_f), r0, rows, kernel_dtype)?;
        Ok(t.to_dtype(dtype)?)
    }

    /// Zeros of `dims` and `dtype` on `device` (a result with an empty dimension).
    fn zeros_on(dims: Vec<usize>, dtype: DType, device: Device) -> Result<Tensor> {
        Ok(Tensor::zeros(dims, dtype).to_device(device)?)
    }

    /// `x (n, in)` of `dtype` (f32 or bf16) times `deq(W)ᵀ`, slab by slab: each slab of rows of
    /// W gives the matching columns of y (no accumulation, so no extra rounding in bf16).
    fn slabs_fwd(x: &Tensor, w: &Nf4Weight, dtype: DType, slab_elems: usize) -> Result<Tensor> {
        let (out_f, in_f) = weight_dims(w)?;
        let per = device_slab_rows(out_f, in_f, slab_elems);
        let mut parts = Vec::with_capacity(out_f.div_ceil(per));
        let mut r0 = 0;
        while r0 < out_f {
            let rows = per.min(out_f - r0);
            let slab = dequantize_rows_device(w, r0, rows, dtype)?; // (rows, in), freed after its GEMM
            parts.push(x.matmul(&slab.t()?)?); // (n, rows)
            r0 += rows;
        }
        if parts.len() == 1 {
            return parts.pop().ok_or_else(|| Error::arg(w.name(), "no slab"));
        }
        Ok(Tensor::cat(&parts.iter().collect::<Vec<_>>(), 1)?)
    }

    /// `y = x·deq(W)ᵀ` for `x (.., in)` on a CUDA device holding `w` (see the module header);
    /// `slab_elems` bounds the elements of W dequantized at a time.
    pub(crate) fn forward_device(x: &Tensor, w: &Nf4Weight, slab_elems: usize) -> Result<Tensor> {
        let (out_f, in_f) = weight_dims(w)?;
        let n = rows_of(x, in_f, "input", w)?;
        let (codes, absmax) = resident_on(w, x.device(), "nf4_linear")?;
        let mut shape = x.dims().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = out_f;
        }
        if !matches!(x.dtype(), DType::F32 | DType::BF16 | DType::F16) {
            return Err(Error::arg(w.name(), format!("NF4 linear takes f32, bf16 or f16, got {}", x.dtype().as_str())));
        }
        if n == 0 || out_f == 0 || in_f == 0 {
            return zeros_on(shape, x.dtype(), x.device());
        }
        let x2 = x.reshape([n, in_f])?;
        let y = match x.dtype() {
            DType::BF16 => {
                let dev = tensor::cuda::select(x.device())?;
                // The fused kernel holds the NF4 table: FP4 always dequantizes + cuBLAS.
                if w.quant_type() == QuantType::Nf4
                    && fused_enabled()
                    && nf4_ops::nf4_linear_fwd_supported(&dev, n, out_f, in_f, w.blocksize()).is_ok()
                {
                    nf4_ops::nf4_linear_fwd(&x2, codes, absmax, out_f, in_f, w.blocksize(), DType::BF16)?
                } else {
                    slabs_fwd(&x2, w, DType::BF16, slab_elems)?
                }
            }
            DType::F16 => slabs_fwd(&x2.to_dtype(DType::F32)?, w, DType::F32, slab_elems)?.to_dtype(DType::F16)?,
            _ => slabs_fwd(&x2, w, DType::F32, slab_elems)?,
        };
        Ok(y.reshape(shape)?)
    }

    /// Whether bf16 forwards use the fused kernel: yes unless the environment variable
    /// `QLORA_NF4_LINEAR` is `cublas` (dequantize to bf16 + cuBLAS, the same arithmetic), which
    /// `scripts/gpu-check.sh` uses to time the training step both ways.
    fn fused_enabled() -> bool {
        static FUSED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *FUSED.get_or_init(|| std::env::var("QLORA_NF4_LINEAR").map_or(true, |v| v != "cublas"))
    }

    /// `dx = dy·deq(W)` of `dtype` for `dy (.., out)` on a CUDA device holding `w`.
    pub(crate) fn backward_device(dy: &Tensor, w: &Nf4Weight, dtype: DType, slab_elems: usize) -> Result<Tensor> {
        let (out_f, in_f) = weight_dims(w)?;
        let n = rows_of(dy, out_f, "output gradient", w)?;
        resident_on(w, dy.device(), "nf4_linear backward")?;
        let mut shape = dy.dims().to_vec();
        if let Some(last) = shape.last_mut() {
            *last = in_f;
        }
        for d in [dy.dtype(), dtype] {
            if !matches!(d, DType::F32 | DType::BF16 | DType::F16) {
                return Err(Error::arg(w.name(), format!("NF4 linear takes f32, bf16 or f16, got {}", d.as_str())));
            }
        }
        if n == 0 || out_f == 0 || in_f == 0 {
            return zeros_on(shape, dtype, dy.device());
        }
        let dy2 = dy.reshape([n, out_f])?;
        let per = device_slab_rows(out_f, in_f, slab_elems);
        let dx = if dy.dtype() == DType::BF16 && dtype == DType::BF16 && per >= out_f {
            dy2.matmul(&dequantize_rows_device(w, 0, out_f, DType::BF16)?)?
        } else {
            // f32 throughout, one rounding at the end: partial sums over slabs stay in f32.
            let dyf = dy2.to_dtype(DType::F32)?;
            let mut acc: Option<Tensor> = None;
            let mut r0 = 0;
            while r0 < out_f {
                let rows = per.min(out_f - r0);
                let slab = dequantize_rows_device(w, r0, rows, DType::F32)?; // (rows, in)
                let g = dyf.narrow(1, r0, rows)?; // (n, rows), a view
                acc = Some(match acc {
                    None => g.matmul(&slab)?,
                    Some(a) => a.addmm(&g, &slab, 1.0)?,
                });
                r0 += rows;
            }
            acc.ok_or_else(|| Error::arg(w.name(), "no slab"))?.to_dtype(dtype)?
        };
        Ok(dx.reshape(shape)?)
    }
}

#[cfg(not(feature = "cuda"))]
mod no_cuda {
    use super::*;

    fn no_feature(w: &Nf4Weight, what: &str) -> Error {
        device_error(format!(
            "nf4: {what} of weight '{}' needs a CUDA device, and the nf4 crate was built without feature `cuda`",
            w.name()
        ))
    }
    pub(crate) fn upload(w: &Nf4Weight, device: Device) -> Result<Resident> {
        Err(no_feature(w, &format!("to_device({device:?})")))
    }
    pub(crate) fn dequantize_device(w: &Nf4Weight, _dtype: DType) -> Result<Tensor> {
        Err(no_feature(w, "dequantize"))
    }
    pub(crate) fn dequantize_rows_device(w: &Nf4Weight, _r0: usize, _rows: usize, _dtype: DType) -> Result<Tensor> {
        Err(no_feature(w, "dequantize_rows"))
    }
    pub(crate) fn forward_device(x: &Tensor, w: &Nf4Weight, _slab_elems: usize) -> Result<Tensor> {
        resident_on(w, x.device(), "nf4_linear")?;
        Err(no_feature(w, "nf4_linear"))
    }
    pub(crate) fn backward_device(dy: &Tensor, w: &Nf4Weight, _dtype: DType, _slab_elems: usize) -> Result<Tensor> {
        resident_on(w, dy.device(), "nf4_linear backward")?;
        Err(no_feature(w, "nf4_linear backward"))
    }
}

#[cfg(test)]
mod tests {
    //! Host logic without a GPU: `to_device(Cpu)`, the errors of a CUDA device where none can be
    //! used (no feature, no driver), and the CPU row slices. The device paths themselves
    //! are tests/cuda_nf4.rs.
    use super::*;
    use crate::{linear, QuantConfig, QuantType};
    use tensor::Rng;

    fn weight(name: &str, quant_type: QuantType) -> Nf4Weight {
        let x = Tensor::randn([12, 200], 0.05, &mut Rng::new(3));
        Nf4Weight::quantize(name, &x, &QuantConfig { quant_type, ..Default::default() }).unwrap()
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        t.to_vec_f32().unwrap().into_iter().map(f32::to_bits).collect()
    }

    /// Weights are shared across threads (`Arc<Nf4Weight>` in backward closures, rayon).
    const _: fn() = || {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Nf4Weight>();
    };

    #[test]
    fn slabs_cover_at_least_one_row_and_at_most_the_weight() {
        assert_eq!(device_slab_rows(11008, 4096, DEVICE_SLAB_ELEMS), 11008);
        assert_eq!(device_slab_rows(28672, 8192, DEVICE_SLAB_ELEMS), (1 << 27) / 8192);
        assert_eq!(device_slab_rows(10, 100, 250), 2);
        assert_eq!(device_slab_rows(10, 100, 50), 1);
        assert_eq!(device_slab_rows(0, 0, 50), 1);
    }

    #[test]
    fn to_cpu_is_a_host_copy_with_the_same_state() {
        for qt in [QuantType::Nf4, QuantType::Fp4] {
            let w = weight("w", qt);
            let c = w.to_device(Device::Cpu).unwrap();
            assert_eq!((c.device(), c.device_tensors().is_none()), (Device::Cpu, true));
            assert_eq!((c.name(), c.shape(), c.blocksize(), c.quant_type()), (w.name(), w.shape(), 64, qt));
            assert_eq!((c.packed(), c.absmax(), c.dtype()), (w.packed(), w.absmax(), w.dtype()));
            assert_eq!(bits(&c.dequantize().unwrap()), bits(&w.dequantize().unwrap()));
            assert_eq!(bits(&c.dequantize_on_device(DType::F32).unwrap()), bits(&w.dequantize().unwrap()));
        }
    }

    #[test]
    fn a_cuda_device_without_one_is_an_error_naming_the_weight() {
        for qt in [QuantType::Nf4, QuantType::Fp4] {
            cuda_device_error_names_the_weight(qt);
        }
    }

    fn cuda_device_error_names_the_weight(qt: QuantType) {
        let w = weight("layers.0.q_proj", qt);
        #[cfg(feature = "cuda")]
        let target = if tensor::cuda::driver_present() { Device::Cuda(1 << 20) } else { Device::Cuda(0) };
        #[cfg(not(feature = "cuda"))]
        let target = Device::Cuda(0);
        let e = w.to_device(target).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Tensor(tensor::Error::Device(_))), "{e:?}");
        assert!(msg.contains("layers.0.q_proj"), "{msg}");
        #[cfg(not(feature = "cuda"))]
        assert!(msg.contains("without feature `cuda`"), "{msg}");
        #[cfg(feature = "cuda")]
        if !tensor::cuda::driver_present() {
            assert!(msg.contains("no CUDA driver"), "{msg}");
        }
        // Converted for autograd, it stays a device error.
        assert!(matches!(tensor::Error::from(e), tensor::Error::Device(_)));
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn the_kernels_code_books_are_nf4_and_fp4() {
        let ours = QuantType::Nf4.traits().dequant_code().map(f32::to_bits);
        assert_eq!(tensor::cuda::nf4_ops::NF4_CODE.map(f32::to_bits), ours);
        let ours = QuantType::Fp4.traits().dequant_code().map(f32::to_bits);
        assert_eq!(tensor::cuda::nf4_ops::FP4_CODE.map(f32::to_bits), ours);
    }

    #[test]
    fn cpu_row_slices_are_the_dequantized_rows() {
        let w = weight("rows", QuantType::Nf4);
        for dt in [DType::F32, DType::BF16, DType::F16] {
            let all = w.dequantize_to(dt).unwrap();
            // in = 200: row 1 starts mid-block, row 8 on a block boundary (1600 = 25·64).
            for (r0, rows) in [(0, 12), (1, 2), (8, 4), (11, 1), (5, 0)] {
                let got = w.dequantize_rows_on_device(r0, rows, dt).unwrap();
                assert_eq!((got.dims(), got.dtype()), (&[rows, 200][..], dt));
                assert_eq!(bits(&got), bits(&all.narrow(0, r0, rows).unwrap()), "{dt:?} rows {r0}+{rows}");
            }
        }
        let e = w.dequantize_rows_on_device(10, 3, DType::F32).unwrap_err().to_string();
        assert!(e.contains("outside the weight's 12 rows"), "{e}");
        let e = w.dequantize_rows_on_device(0, 1, DType::U8).unwrap_err().to_string();
        assert!(e.contains("cannot dequantize to"), "{e}");
    }

    #[test]
    fn device_entry_points_refuse_cpu_inputs() {
        let w = weight("w", QuantType::Nf4);
        let x = Tensor::zeros([2, 200], DType::F32);
        assert!(linear::forward_device(&x, &w, DEVICE_SLAB_ELEMS).unwrap_err().to_string().contains("on the CPU"));
        let dy = Tensor::zeros([2, 12], DType::F32);
        let e = linear::backward_device(&dy, &w, DType::F32, 1).unwrap_err().to_string();
        assert!(e.contains("on the CPU"), "{e}");
    }
}
