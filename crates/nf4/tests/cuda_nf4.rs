//! NF4 weights on a device, through the public API: each body below takes a `Device`, quantizes
//! seeded random weights on the host, moves them there with `Nf4Weight::to_device` (inputs with
//! `Tensor::to_device`), brings results back and compares them with the CPU: dequantization (NF4
//! and FP4) bit for bit, the 4-bit linear (forward and backward through autograd) against an f64
//! reference of the CPU's arithmetic and, on a device, against the CPU path itself.
//!
//! `cpu::*` runs each body on the CPU in every build. `cuda::*` runs the same bodies with
//! `Device::Cuda(0)`; those tests are `#[ignore]`d, so a machine without a GPU reports them
//! ignored, never passed, and run explicitly without a CUDA driver they print
//! `SKIPPED: no CUDA driver` and return. `scripts/gpu-check.sh` runs them with
//! `--include-ignored` and fails on that line. A few tests are about CUDA only (slabs, the fused
//! kernel itself, its fallback, a weight on the wrong device).
//!
//! Tolerances are named and scale with the value: a dot product `Σ aᵢbᵢ` may be off by
//! `rel·|want| + mag·Σ|aᵢbᵢ|` (output rounding, and rounding of the terms or the sum);
//! dequantization is bit exact.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use autograd::Tape;
use nf4::linear::{self, nf4_linear};
use nf4::{Nf4Weight, QuantConfig, QuantType};
use tensor::cuda::nf4_ops;
use tensor::{DType, Device, Error, Rng, Tensor};

// ------------------------------------------------------------------ tolerances and helpers

/// Allowed error of a dot product: `rel·|want| + mag·Σ|aᵢbᵢ|`.
#[derive(Debug, Clone, Copy)]
struct Tol {
    rel: f64,
    mag: f64,
}

/// f32 result, f32 accumulation in another order.
const F32_DOT: Tol = Tol { rel: 1e-5, mag: 1e-5 };
/// f16 result: computed in f32 (CPU and CUDA), rounded once to f16 (2^-11 relative).
const F16_DOT: Tol = Tol { rel: 1.0 / 1024.0, mag: 1e-5 };
/// bf16 result rounded once (2^-8 relative), and on CUDA the weight rounded to bf16 (2^-8 of each
/// term), each with a factor 2 of margin.
const BF16_DOT: Tol = Tol { rel: 1.0 / 128.0, mag: 1.0 / 128.0 };
/// The fused kernel against dequantize-to-bf16 + matmul: the same terms, f32 sums in another
/// order, then the output dtype's rounding.
const KERNEL_F32: Tol = Tol { rel: 1e-5, mag: 1e-5 };
const KERNEL_BF16: Tol = Tol { rel: 1.0 / 128.0, mag: 1e-5 };

fn tol_of(dtype: DType) -> Tol {
    match dtype {
        DType::BF16 => BF16_DOT,
        DType::F16 => F16_DOT,
        _ => F32_DOT,
    }
}

const FLOATS: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

fn randn(dims: &[usize], std: f32, seed: u64) -> Tensor {
    Tensor::randn(dims.to_vec(), std, &mut Rng::new(seed))
}

/// `t` on `dev` (a panic in a test is a failure, which is what a failed upload is).
fn put(t: &Tensor, dev: Device) -> Tensor {
    t.to_device(dev).unwrap_or_else(|e| panic!("to_device({dev:?}): {e}"))
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_vec_f32().unwrap().into_iter().map(f64::from).collect()
}

/// A weight `(out, in)` of N(0, 0.05²) values quantized with `cfg`.
fn weight(name: &str, out_f: usize, in_f: usize, cfg: &QuantConfig, seed: u64) -> Nf4Weight {
    Nf4Weight::quantize(name, &randn(&[out_f, in_f], 0.05, seed), cfg).unwrap()
}

/// `(a·bᵀ, Σ|a||b|)` for row-major `a (m, k)` and `b (n, k)`, in f64.
fn dot_ref(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut out, mut mag) = (vec![0f64; m * n], vec![0f64; m * n]);
    for i in 0..m {
        let ar = &a[i * k..(i + 1) * k];
        for j in 0..n {
            let br = &b[j * k..(j + 1) * k];
            let (mut s, mut s_abs) = (0f64, 0f64);
            for (x, y) in ar.iter().zip(br) {
                s += x * y;
                s_abs += (x * y).abs();
            }
            out[i * n + j] = s;
            mag[i * n + j] = s_abs;
        }
    }
    (out, mag)
}

/// Row-major transpose of `(r, c)`.
fn transpose(v: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut t = vec![0f64; v.len()];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = v[i * c + j];
        }
    }
    t
}

/// `got` lives on `dev` and each element is within `tol` of `want` given the terms' magnitude.
#[track_caller]
fn assert_dot_close(what: &str, got: &Tensor, dev: Device, want: &[f64], mag: &[f64], tol: Tol) {
    assert_eq!(got.device(), dev, "{what}: result on the wrong device");
    let g = got.to_vec_f32().unwrap();
    assert_eq!(g.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &m)) in g.iter().zip(want).zip(mag).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol.rel * w.abs() + tol.mag * m,
            "{what} on {dev:?}: element {i} of {:?} is {g}, reference {w} (terms {m:.3e}, {tol:?})",
            got.dims()
        );
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    match t.dtype() {
        DType::F32 => t.to_vec::<f32>().unwrap().into_iter().map(f32::to_bits).collect(),
        DType::BF16 => t.to_vec::<tensor::bf16>().unwrap().into_iter().map(|v| v.to_bits() as u32).collect(),
        DType::F16 => t.to_vec::<tensor::f16>().unwrap().into_iter().map(|v| v.to_bits() as u32).collect(),
        DType::U8 => t.to_vec::<u8>().unwrap().into_iter().map(u32::from).collect(),
        DType::I32 => t.to_vec::<i32>().unwrap().into_iter().map(|v| v as u32).collect(),
    }
}

#[track_caller]
fn assert_bit_exact(what: &str, got: &Tensor, dev: Device, want: &Tensor) {
    assert_eq!(got.device(), dev, "{what}: result on the wrong device");
    assert_eq!((got.dims(), got.dtype()), (want.dims(), want.dtype()), "{what}: shape/dtype");
    let (g, w) = (bits(got), bits(want));
    if let Some(i) = (0..g.len()).find(|&i| g[i] != w[i]) {
        panic!("{what} on {dev:?}: element {i}: bits {:#x} vs {:#x}", g[i], w[i]);
    }
}

/// `(m, out, in, blocksize, double_quant)`: tiny, odd M and a partial kernel tile, rows that
/// start mid-block (in = 200), an odd element count (padded last byte) with K not a multiple of
/// the kernel's 32, plain absmax, and two slices of 7B shapes (down_proj's in = 11008, up_proj's
/// in = 4096).
const LINEAR_CASES: [(usize, usize, usize, usize, bool); 7] = [
    (1, 64, 64, 64, true),
    (7, 96, 200, 64, true),
    (67, 130, 96, 32, true),
    (5, 33, 33, 64, true),
    (9, 40, 128, 128, false),
    (1, 256, 11008, 64, true),
    (33, 688, 4096, 64, true),
];

// ------------------------------------------------------------------ bodies

fn dequantize_is_bit_exact(dev: Device) {
    let cases: [(&[usize], usize, bool); 5] = [
        (&[96, 200], 64, true),
        (&[33, 33], 64, true),
        (&[7, 128], 32, false),
        (&[3, 5, 40], 256, true),
        (&[688, 4096], 64, true),
    ];
    let cases = cases.into_iter().enumerate().flat_map(|c| [(c, QuantType::Nf4), (c, QuantType::Fp4)]);
    for ((ci, (shape, bs, dq)), qt) in cases {
        let cfg = QuantConfig { blocksize: bs, double_quant: dq, quant_type: qt };
        let host = Nf4Weight::quantize("w", &randn(shape, 0.05, 10 + ci as u64), &cfg).unwrap();
        let w = host.to_device(dev).unwrap();
        assert_eq!(w.device(), dev);
        if dev != Device::Cpu {
            let (codes, absmax) = w.device_tensors().expect("device tensors");
            assert_eq!((codes.device(), absmax.device()), (dev, dev));
            assert_eq!(codes.to_vec::<u8>().unwrap(), host.packed(), "case {ci}: codes on the device");
            let want: Vec<u32> = host.restored_absmax().unwrap().iter().map(|a| a.to_bits()).collect();
            assert_eq!(bits(absmax), want, "case {ci}: restored absmax on the device");
        }
        for dt in FLOATS {
            let what = format!("case {ci} {qt} {shape:?} bs {bs} dq {dq} {dt:?}");
            let want = host.dequantize_to(dt).unwrap();
            assert_bit_exact(&what, &w.dequantize_on_device(dt).unwrap(), dev, &want);
            // The host copy still answers `dequantize`.
            assert_bit_exact(&format!("{what} host"), &w.dequantize_to(dt).unwrap(), Device::Cpu, &want);
            if let [out_f, in_f] = *shape {
                let flat = want.reshape([out_f, in_f]).unwrap();
                for (r0, rows) in [(0, 1), (1, 2), (out_f / 2, out_f - out_f / 2), (out_f - 1, 1), (3, 0)] {
                    let got = w.dequantize_rows_on_device(r0, rows, dt).unwrap();
                    let want = flat.narrow(0, r0, rows).unwrap().contiguous().unwrap();
                    assert_bit_exact(&format!("{what} rows {r0}+{rows}"), &got, dev, &want);
                }
            }
        }
    }
}

fn linear_fwd_bwd_match_the_cpu(dev: Device) {
    // FP4 on the small cases (its bf16 forward is dequantize + matmul, never the fused kernel).
    let cases = LINEAR_CASES.into_iter().enumerate().flat_map(|(ci, c)| {
        let fp4 = (ci < 3).then_some(((ci, c), QuantType::Fp4));
        std::iter::once(((ci, c), QuantType::Nf4)).chain(fp4)
    });
    for ((ci, (m, out_f, in_f, bs, dq)), qt) in cases {
        let cfg = QuantConfig { blocksize: bs, double_quant: dq, quant_type: qt };
        let host = weight(&format!("layer{ci}"), out_f, in_f, &cfg, 100 + ci as u64);
        let w = Arc::new(host.to_device(dev).unwrap());
        let wdq = f64s(&host.dequantize_to(DType::F32).unwrap()); // (out, in)
        let wdq_t = transpose(&wdq, out_f, in_f); // (in, out)
        for dt in FLOATS {
            let what = format!("case {ci} {qt} ({m}, {out_f}, {in_f}) bs {bs} {dt:?}");
            let x = randn(&[m, in_f], 1.0, 200 + ci as u64).to_dtype(dt).unwrap();
            let dy = randn(&[m, out_f], 1.0, 300 + ci as u64).to_dtype(dt).unwrap();
            let tape = Tape::new();
            let xv = tape.leaf(put(&x, dev));
            let y = nf4_linear(&xv, &w).unwrap();
            assert_eq!((y.value().dims(), y.value().dtype()), (&[m, out_f][..], dt), "{what}: y");
            let grads = tape.backward_with(&y, put(&dy, dev)).unwrap();
            let dx = grads.get(&xv).expect("dx");
            assert_eq!((dx.dims(), dx.dtype()), (&[m, in_f][..], dt), "{what}: dx");

            let (y_ref, y_mag) = dot_ref(&f64s(&x), &wdq, m, out_f, in_f);
            assert_dot_close(&format!("{what} y"), y.value(), dev, &y_ref, &y_mag, tol_of(dt));
            let (dx_ref, dx_mag) = dot_ref(&f64s(&dy), &wdq_t, m, in_f, out_f);
            assert_dot_close(&format!("{what} dx"), dx, dev, &dx_ref, &dx_mag, tol_of(dt));
            if dev != Device::Cpu {
                // The device against the CPU path itself (both within the tolerance of the
                // reference, so within twice it of each other).
                let tw = |t: Tol| Tol { rel: 2.0 * t.rel, mag: 2.0 * t.mag };
                let y_cpu = f64s(&linear::forward(&x, &host).unwrap());
                let dx_cpu = f64s(&linear::backward(&dy, &host, dt).unwrap());
                assert_dot_close(&format!("{what} y vs CPU"), y.value(), dev, &y_cpu, &y_mag, tw(tol_of(dt)));
                assert_dot_close(&format!("{what} dx vs CPU"), dx, dev, &dx_cpu, &dx_mag, tw(tol_of(dt)));
            }
        }
    }
}

fn linear_leading_dims_and_empty_inputs(dev: Device) {
    let host = weight("w3d", 48, 96, &QuantConfig::default(), 400);
    let w = Arc::new(host.to_device(dev).unwrap());
    let wdq = f64s(&host.dequantize_to(DType::F32).unwrap());
    for dt in FLOATS {
        let x = randn(&[2, 3, 96], 1.0, 401).to_dtype(dt).unwrap();
        let tape = Tape::new();
        let xv = tape.leaf(put(&x, dev));
        let y = nf4_linear(&xv, &w).unwrap();
        assert_eq!(y.value().dims(), &[2, 3, 48]);
        let (y_ref, mag) = dot_ref(&f64s(&x), &wdq, 6, 48, 96);
        assert_dot_close(&format!("(2, 3, 96) {dt:?}"), y.value(), dev, &y_ref, &mag, tol_of(dt));
        let grads = tape.backward_with(&y, put(&Tensor::ones([2, 3, 48], dt), dev)).unwrap();
        assert_eq!(grads.get(&xv).unwrap().dims(), &[2, 3, 96]);

        let empty = put(&Tensor::zeros([0, 96], dt), dev);
        let y = linear::forward(&empty, &w).unwrap();
        assert_eq!((y.dims(), y.dtype(), y.device()), (&[0, 48][..], dt, dev));
        let dx = linear::backward(&put(&Tensor::zeros([0, 48], dt), dev), &w, dt).unwrap();
        assert_eq!((dx.dims(), dx.dtype(), dx.device()), (&[0, 96][..], dt, dev));
    }
}

// ------------------------------------------------------------------ the tests

/// True when a CUDA test can run; otherwise prints the SKIPPED line gpu-check.sh looks for.
fn cuda_ready(test: &str) -> bool {
    if tensor::cuda::driver_present() {
        return true;
    }
    println!("SKIPPED: no CUDA driver ({test}: nothing compared)");
    false
}

const CUDA: Device = Device::Cuda(0);

macro_rules! on_every_device {
    ($($body:ident),* $(,)?) => {
        /// Every body on the CPU.
        mod cpu {
            $(#[test]
            fn $body() {
                super::$body(tensor::Device::Cpu)
            })*
        }
        /// The same bodies on the first GPU.
        mod cuda {
            $(#[test]
            #[ignore = "needs an NVIDIA GPU"]
            fn $body() {
                if super::cuda_ready(stringify!($body)) {
                    super::$body(super::CUDA)
                }
            })*
        }
    };
}

on_every_device!(dequantize_is_bit_exact, linear_fwd_bwd_match_the_cpu, linear_leading_dims_and_empty_inputs);

#[test]
fn to_cuda_without_a_driver_is_a_device_error_naming_the_weight() {
    let w = weight("blk.0.ffn_up", 8, 64, &QuantConfig::default(), 1);
    let target = if tensor::cuda::driver_present() {
        println!("driver present: checking a missing ordinal instead");
        Device::Cuda(1 << 20)
    } else {
        CUDA
    };
    match w.to_device(target) {
        Err(nf4::Error::Tensor(Error::Device(m))) => assert!(m.contains("blk.0.ffn_up"), "{m}"),
        other => panic!("expected a device error, got {other:?}"),
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn slab_by_slab_matches_the_reference() {
    if !cuda_ready("slab_by_slab_matches_the_reference") {
        return;
    }
    // in = 200: slabs of 3 rows start mid-block; slabs smaller than a row take one row each.
    let (m, out_f, in_f) = (5, 50, 200);
    let host = weight("slabbed", out_f, in_f, &QuantConfig::default(), 500);
    let w = host.to_device(CUDA).unwrap();
    let wdq = f64s(&host.dequantize_to(DType::F32).unwrap());
    let wdq_t = transpose(&wdq, out_f, in_f);
    for slab in [3 * in_f, 7 * in_f + 5, 1] {
        for dt in FLOATS {
            let what = format!("slab {slab} {dt:?}");
            let x = randn(&[m, in_f], 1.0, 501).to_dtype(dt).unwrap();
            let dy = randn(&[m, out_f], 1.0, 502).to_dtype(dt).unwrap();
            let y = linear::forward_device(&put(&x, CUDA), &w, slab).unwrap();
            let (y_ref, y_mag) = dot_ref(&f64s(&x), &wdq, m, out_f, in_f);
            assert_dot_close(&format!("{what} y"), &y, CUDA, &y_ref, &y_mag, tol_of(dt));
            let dx = linear::backward_device(&put(&dy, CUDA), &w, dt, slab).unwrap();
            let (dx_ref, dx_mag) = dot_ref(&f64s(&dy), &wdq_t, m, in_f, out_f);
            assert_dot_close(&format!("{what} dx"), &dx, CUDA, &dx_ref, &dx_mag, tol_of(dt));
        }
    }
    let cpu_x = randn(&[2, in_f], 1.0, 503);
    assert!(linear::forward_device(&cpu_x, &w, 1 << 20).is_err(), "forward_device takes device inputs only");
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn fused_kernel_is_dequantize_to_bf16_then_matmul() {
    if !cuda_ready("fused_kernel_is_dequantize_to_bf16_then_matmul") {
        return;
    }
    for (ci, (m, out_f, in_f, bs, dq)) in LINEAR_CASES.into_iter().enumerate() {
        let cfg = QuantConfig { blocksize: bs, double_quant: dq, ..Default::default() };
        let host = weight("fused", out_f, in_f, &cfg, 600 + ci as u64);
        let w = host.to_device(CUDA).unwrap();
        let (codes, absmax) = w.device_tensors().unwrap();
        let wbf = f64s(&host.dequantize_to(DType::BF16).unwrap());
        // x as a view (narrowed columns of a wider tensor): copied to contiguous first.
        let wide = randn(&[m, in_f + 3], 1.0, 700 + ci as u64).to_dtype(DType::BF16).unwrap();
        let x = wide.narrow(1, 2, in_f).unwrap();
        let (want, mag) = dot_ref(&f64s(&x), &wbf, m, out_f, in_f);
        let xd = put(&wide, CUDA).narrow(1, 2, in_f).unwrap();
        for (out, tol) in [(DType::F32, KERNEL_F32), (DType::BF16, KERNEL_BF16)] {
            let y = nf4_ops::nf4_linear_fwd(&xd, codes, absmax, out_f, in_f, bs, out).unwrap();
            assert_eq!((y.dims(), y.dtype()), (&[m, out_f][..], out));
            assert_dot_close(&format!("case {ci} kernel -> {out:?}"), &y, CUDA, &want, &mag, tol);
        }
    }
    // Preconditions are errors, not launches.
    let host = weight("pre", 8, 64, &QuantConfig::default(), 800);
    let w = host.to_device(CUDA).unwrap();
    let (codes, absmax) = w.device_tensors().unwrap();
    let xf = put(&randn(&[2, 64], 1.0, 801), CUDA);
    let e = nf4_ops::nf4_linear_fwd(&xf, codes, absmax, 8, 64, 64, DType::F32).unwrap_err();
    assert!(e.to_string().contains("must be BF16"), "{e}");
    let xc = randn(&[2, 64], 1.0, 802).to_dtype(DType::BF16).unwrap();
    let e = nf4_ops::nf4_linear_fwd(&xc, codes, absmax, 8, 64, 64, DType::F32).unwrap_err();
    assert!(matches!(&e, Error::Device(m) if m.contains("expected a tensor on CUDA")), "{e}");
    let dev = tensor::cuda::select(CUDA).unwrap();
    assert!(nf4_ops::nf4_linear_fwd_supported(&dev, 65_535 * 64 + 1, 8, 64, 64).is_err());
    assert!(nf4_ops::nf4_linear_fwd_supported(&dev, 65_535 * 64, 8, 64, 64).is_ok());
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn bf16_past_the_kernels_grid_falls_back_to_dequantize_and_matmul() {
    if !cuda_ready("bf16_past_the_kernels_grid_falls_back_to_dequantize_and_matmul") {
        return;
    }
    // M = 65535·64 + 1 rows: one more row tile than the kernel's grid takes.
    let (m, out_f, in_f) = (65_535 * 64 + 1, 8, 16);
    let host = weight("tall", out_f, in_f, &QuantConfig { blocksize: 32, ..Default::default() }, 900);
    let w = host.to_device(CUDA).unwrap();
    let (codes, absmax) = w.device_tensors().unwrap();
    let x = put(&Tensor::rand_uniform([m, in_f], -1.0, 1.0, &mut Rng::new(901)), CUDA);
    let xb = x.to_dtype(DType::BF16).unwrap();
    let e = nf4_ops::nf4_linear_fwd(&xb, codes, absmax, out_f, in_f, 32, DType::BF16).unwrap_err();
    assert!(e.to_string().contains("row tiles"), "{e}");
    let y = linear::forward(&xb, &w).unwrap();
    assert_eq!((y.dims(), y.dtype(), y.device()), (&[m, out_f][..], DType::BF16, CUDA));
    // Spot rows against the f64 reference (all of it would be 5·10^8 host products).
    let wdq = f64s(&host.dequantize_to(DType::F32).unwrap());
    for r in [0, 1, 12_345, m / 2, m - 2, m - 1] {
        let (want, mag) = dot_ref(&f64s(&xb.narrow(0, r, 1).unwrap()), &wdq, 1, out_f, in_f);
        assert_dot_close(&format!("row {r}"), &y.narrow(0, r, 1).unwrap(), CUDA, &want, &mag, BF16_DOT);
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn a_weight_not_on_the_inputs_device_is_a_device_error() {
    if !cuda_ready("a_weight_not_on_the_inputs_device_is_a_device_error") {
        return;
    }
    let host = Arc::new(weight("model.layers.3.mlp.up_proj", 16, 64, &QuantConfig::default(), 1000));
    let x = randn(&[3, 64], 1.0, 1001);
    let xd = put(&x, CUDA);
    let tape = Tape::new();
    let e = nf4_linear(&tape.leaf(xd.clone()), &host).unwrap_err();
    match &e {
        Error::Device(m) => {
            assert!(m.contains("model.layers.3.mlp.up_proj") && m.contains("to_device") && m.contains("Cuda(0)"), "{m}")
        }
        other => panic!("expected Error::Device, got {other:?}"),
    }
    let e = linear::backward(&put(&randn(&[3, 16], 1.0, 1002), CUDA), &host, DType::F32).unwrap_err();
    assert!(e.to_string().contains("to_device"), "{e}");
    // A CPU input with a device weight runs on the CPU from the host codes: the host result.
    let wd = Arc::new(host.to_device(CUDA).unwrap());
    let (a, b) = (linear::forward(&x, &wd).unwrap(), linear::forward(&x, &host).unwrap());
    assert_eq!(a.device(), Device::Cpu);
    assert_bit_exact("CPU input, device weight", &a, Device::Cpu, &b);
    // Back to the CPU: a host weight again.
    let back = wd.to_device(Device::Cpu).unwrap();
    assert!(back.device_tensors().is_none() && back.device() == Device::Cpu);
    assert!(wd.to_device(CUDA).unwrap().device_tensors().unwrap().0.same_storage(wd.device_tensors().unwrap().0));
}
