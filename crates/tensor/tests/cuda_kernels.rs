//! Every CUDA kernel against its CPU reference (`*_ref` in `ops/<op>/cpu.rs`, or the spec written
//! out here where the reference lives in a crate above `tensor`: AdamW, NF4). Feature `cuda`.
//!
//! The tests that compare kernels need a GPU and are `#[ignore]`d, so a machine without one
//! reports them as ignored, never as passed; `scripts/gpu-check.sh` runs them with
//! `--include-ignored` and fails if the driver is missing. The tests that need no GPU (driver
//! detection, device selection errors, embedded PTX) run everywhere. Tolerances are `abs + rel·|ref|`,
//! named per dtype; exact where the kernel promises bit-exactness (cast, AdamW, NF4).
#![cfg(feature = "cuda")]

use std::sync::Arc;
use tensor::cuda::run::{self, AdamStep, AttnDims};
use tensor::cuda::{self, CudaDevice};
use tensor::ops::attention::cpu::{attention_bwd_ref, attention_fwd_ref, Dims};
use tensor::ops::binary::BinaryOp;
use tensor::ops::reduce::ReduceOp;
use tensor::ops::unary::UnaryOp;
use tensor::ops::{binary, cast, cross_entropy, dropout, index, reduce, rmsnorm, rope, softmax, swiglu, unary};
use tensor::{bf16, DType, Device, Error, Rng, Tensor};

/// f32 kernels against f64 references.
const TOL_F32: (f64, f64) = (1e-5, 1e-4);
/// Transcendental maps and long sums in f32.
const TOL_F32_LOOSE: (f64, f64) = (1e-4, 1e-3);
/// bf16 storage: one bf16 rounding of the output (2^-8 relative) plus f32 compute.
const TOL_BF16: (f64, f64) = (1e-2, 1e-2);

fn gpu(test: &str) -> Option<Arc<CudaDevice>> {
    if !cuda::driver_present() {
        println!("SKIPPED: no CUDA driver ({test}: nothing compared)");
        // Reached only when a GPU test is run explicitly on a machine without a driver.
        return None;
    }
    match cuda::select(Device::Cuda(0)) {
        Ok(d) => Some(d),
        Err(e) => panic!("{test}: a CUDA driver is present but device 0 failed: {e}"),
    }
}

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.normal()).collect()
}
fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}
fn f64s<E: Copy + Into<f32>>(x: &[E]) -> Vec<f64> {
    x.iter().map(|&v| v.into() as f64).collect()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f64], (abs, rel): (f64, f64)) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        let bound = abs + rel * w.abs();
        let ok = err <= bound || (g.is_nan() && w.is_nan()) || (g.is_infinite() && g as f64 == w);
        if !ok {
            panic!("{what}: element {i}: got {g}, want {w} (|err| {err:e} > {bound:e})");
        }
        if err > worst.1 {
            worst = (i, err);
        }
    }
    println!("{what}: {} elements ok, max |err| {:e} at {}", got.len(), worst.1, worst.0);
}
fn widen<E: Copy + Into<f32>>(x: &[E]) -> Vec<f32> {
    x.iter().map(|&v| v.into()).collect()
}

// ------------------------------------------------------------------ no GPU needed

#[test]
fn selecting_cuda_without_a_driver_is_a_device_error() {
    if cuda::driver_present() {
        println!("driver present: checking a missing ordinal instead");
        assert!(matches!(cuda::select(Device::Cuda(1 << 20)), Err(Error::Device(_))));
        return;
    }
    assert!(matches!(cuda::select(Device::Cuda(0)), Err(Error::Device(_))));
    assert!(matches!(cuda::device_count(), Err(Error::Device(_))));
    assert!(matches!(cuda::select(Device::Cpu), Err(Error::Device(_))));
}

#[test]
fn every_kernel_is_in_the_embedded_ptx() {
    let kernels: &[(&str, &[&str])] = &[
        ("binary", &["binary_fwd_f32", "binary_fwd_bf16", "binary_fwd_f16"]),
        ("unary", &["unary_fwd_f32", "unary_fwd_bf16", "unary_fwd_f16"]),
        (
            "cast",
            &[
                "cast_fwd_f32_bf16",
                "cast_fwd_bf16_f32",
                "cast_fwd_f32_f16",
                "cast_fwd_f16_f32",
                "cast_fwd_i32_f32",
                "cast_fwd_u8_f32",
                "cast_fwd_f32_i32",
                "cast_fwd_f32_u8",
                "copy_fwd_u8",
                "copy_fwd_u16",
                "copy_fwd_u32",
            ],
        ),
        ("reduce", &["reduce_fwd_f32", "reduce_fwd_bf16", "reduce_sumsq_fwd_f32", "reduce_sumsq_finish_f32"]),
        ("softmax", &["softmax_fwd_f32", "softmax_fwd_bf16", "softmax_bwd_f32", "softmax_bwd_bf16"]),
        (
            "rmsnorm",
            &[
                "rmsnorm_fwd_f32",
                "rmsnorm_fwd_bf16",
                "rmsnorm_bwd_f32",
                "rmsnorm_bwd_bf16",
                "rmsnorm_bwd_dw_f32",
                "rmsnorm_bwd_dw_bf16",
            ],
        ),
        ("rope", &["rope_fwd_f32", "rope_fwd_bf16", "rope_bwd_f32", "rope_bwd_bf16"]),
        ("swiglu", &["swiglu_fwd_f32", "swiglu_fwd_bf16", "swiglu_bwd_f32", "swiglu_bwd_bf16"]),
        (
            "attention",
            &[
                "attention_fwd_f32",
                "attention_fwd_bf16",
                "attention_bwd_prep_f32",
                "attention_bwd_prep_bf16",
                "attention_bwd_dq_f32",
                "attention_bwd_dq_bf16",
                "attention_bwd_dkv_f32",
                "attention_bwd_dkv_bf16",
            ],
        ),
        ("index", &["index_fwd_f32", "index_fwd_bf16", "index_bwd_f32", "index_bwd_bf16"]),
        (
            "cross_entropy",
            &[
                "cross_entropy_fwd_f32",
                "cross_entropy_fwd_bf16",
                "cross_entropy_fwd_finish_f32",
                "cross_entropy_bwd_f32",
                "cross_entropy_bwd_bf16",
            ],
        ),
        ("dropout", &["dropout_fwd_f32", "dropout_fwd_bf16", "dropout_fwd_f16"]),
        ("adamw", &["adamw_fwd_f32", "adamw8bit_fwd_f32", "adamw_clip_fwd_f32"]),
        (
            "nf4",
            &[
                "nf4_quantize_f32",
                "nf4_quantize_bf16",
                "nf4_dq_offset_f32",
                "nf4_dq_quantize_f32",
                "nf4_dq_restore_f32",
                "nf4_dequantize_f32",
                "nf4_dequantize_bf16",
                "fp4_quantize_f32",
                "fp4_quantize_bf16",
                "fp4_dequantize_f32",
                "fp4_dequantize_bf16",
            ],
        ),
        ("nf4_linear", &["nf4_linear_fwd_bf16"]),
    ];
    assert_eq!(kernels.len(), cuda::ptx::STEMS.len(), "a kernel file without a test entry");
    for (stem, names) in kernels {
        for major in [8, 9] {
            let src = cuda::ptx::ptx(stem, major).unwrap_or_else(|| panic!("no PTX for {stem}"));
            assert!(src.contains(".version 9.0"), "{stem}: PTX ISA is not 9.0 (a 580 driver loads 9.0)");
            let target = if major >= 9 { ".target sm_90" } else { ".target sm_80" };
            assert!(src.contains(target), "{stem}: wrong target");
            for n in *names {
                assert!(src.contains(&format!(".entry {n}(")), "{stem}.sm_{major}0.ptx lacks {n}");
            }
        }
    }
}

// ------------------------------------------------------------------ elementwise

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn binary_broadcast_matches_ref() {
    let Some(dev) = gpu("binary") else { return };
    let a = Tensor::from_vec(randn(3 * 5 * 7, 1), [3, 5, 7]).unwrap();
    let b = Tensor::from_vec(randn(5, 2), [5, 1]).unwrap();
    let at = a.transpose(0, 2).unwrap(); // (7, 5, 3) non-contiguous view
    let bt = Tensor::from_vec(randn(3, 3), [3]).unwrap();
    for (op, code) in
        [(BinaryOp::Add, 0), (BinaryOp::Sub, 1), (BinaryOp::Mul, 2), (BinaryOp::Div, 3), (BinaryOp::Maximum, 4)]
    {
        for (x, y) in [(&a, &b), (&at, &bt)] {
            let got = run::run_binary(&dev, x, y, code).unwrap().to_vec::<f32>().unwrap();
            let want = binary::cpu::binary_ref(x, y, op).unwrap().to_vec::<f32>().unwrap();
            assert_close(&format!("binary {op:?} f32"), &got, &f64s(&want), TOL_F32);
        }
        let (xb, yb) = (a.to_dtype(DType::BF16).unwrap(), b.to_dtype(DType::BF16).unwrap());
        let got = run::run_binary(&dev, &xb, &yb, code).unwrap().to_vec_f32().unwrap();
        let want = binary::cpu::binary_ref(&xb, &yb, op).unwrap().to_vec_f32().unwrap();
        assert_close(&format!("binary {op:?} bf16"), &got, &f64s(&want), TOL_BF16);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn unary_matches_ref() {
    let Some(dev) = gpu("unary") else { return };
    let xs: Vec<f32> = randn(4099, 4).iter().map(|v| v.abs() + 0.1).collect();
    let x = Tensor::from_vec(xs.clone(), [4099]).unwrap();
    let ops = [
        (UnaryOp::Exp, 0, 0.0, 0.0),
        (UnaryOp::Log, 1, 0.0, 0.0),
        (UnaryOp::Sqrt, 2, 0.0, 0.0),
        (UnaryOp::Rsqrt, 3, 0.0, 0.0),
        (UnaryOp::Neg, 4, 0.0, 0.0),
        (UnaryOp::Sqr, 5, 0.0, 0.0),
        (UnaryOp::Recip, 6, 0.0, 0.0),
        (UnaryOp::Silu, 7, 0.0, 0.0),
        (UnaryOp::Affine(1.5, -0.25), 8, 1.5, -0.25),
        (UnaryOp::Powf(1.7), 9, 1.7, 0.0),
    ];
    for (op, code, p0, p1) in ops {
        let got = run::run_unary(&dev, &xs, code, p0, p1).unwrap();
        let want = unary::cpu::unary_ref(&x, op).unwrap().to_vec::<f32>().unwrap();
        assert_close(&format!("unary {op:?} f32"), &got, &f64s(&want), TOL_F32_LOOSE);
        let got = run::run_unary(&dev, &to_bf16(&xs), code, p0, p1).unwrap();
        let want = unary::cpu::unary_ref(&x.to_dtype(DType::BF16).unwrap(), op).unwrap().to_vec_f32().unwrap();
        assert_close(&format!("unary {op:?} bf16"), &widen(&got), &f64s(&want), TOL_BF16);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn cast_is_bit_exact() {
    let Some(dev) = gpu("cast") else { return };
    let mut xs = randn(10_007, 5);
    xs.extend([0.0, -0.0, 1e-40, -3.4e38, 65504.0, 65520.0, 1.0 + f32::EPSILON, f32::INFINITY]);
    let x = Tensor::from_vec(xs.clone(), [xs.len()]).unwrap();
    let got: Vec<bf16> = run::run_cast::<f32, bf16>(&dev, &xs).unwrap();
    let want = cast::cpu::cast_ref(&x, DType::BF16).unwrap().to_vec::<bf16>().unwrap();
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "f32 -> bf16 not bit exact");
    let got: Vec<tensor::f16> = run::run_cast::<f32, tensor::f16>(&dev, &xs).unwrap();
    let want = cast::cpu::cast_ref(&x, DType::F16).unwrap().to_vec::<tensor::f16>().unwrap();
    assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "f32 -> f16 not bit exact");
    let back: Vec<f32> = run::run_cast::<bf16, f32>(&dev, &to_bf16(&xs)).unwrap();
    assert!(back.iter().zip(&xs).all(|(a, b)| a.to_bits() == bf16::from_f32(*b).to_f32().to_bits()), "bf16 -> f32");
    println!("cast: {} values bit exact", xs.len());
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn reduce_matches_ref() {
    let Some(dev) = gpu("reduce") else { return };
    for (rows, cols) in [(1, 1), (7, 33), (64, 4096), (3, 50_000)] {
        let xs = randn(rows * cols, 6 + cols as u64);
        let x = Tensor::from_vec(xs.clone(), [rows, cols]).unwrap();
        for (op, code) in [(ReduceOp::Sum, 0), (ReduceOp::Mean, 1), (ReduceOp::Max, 2)] {
            let got = run::run_reduce(&dev, &xs, cols, code).unwrap();
            let want = reduce::cpu::reduce_ref(&x, 1, false, op).unwrap().to_vec::<f32>().unwrap();
            assert_close(&format!("reduce {op:?} ({rows}, {cols})"), &got, &f64s(&want), TOL_F32);
        }
        let got = run::run_argmax(&dev, &xs, cols).unwrap();
        let want = reduce::cpu::reduce_ref(&x, 1, false, ReduceOp::ArgMax).unwrap().to_vec::<i32>().unwrap();
        assert_eq!(got, want, "argmax ({rows}, {cols})");
    }
    let g = randn(3_000_001, 7);
    let (sumsq, norm) = run::run_sumsq(&dev, &g).unwrap();
    let want: f64 = g.iter().map(|&v| v as f64 * v as f64).sum();
    assert!((sumsq - want).abs() <= 1e-9 * want, "sumsq {sumsq} vs {want}");
    assert_eq!(norm, want.sqrt() as f32, "grad norm");
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn softmax_matches_ref() {
    let Some(dev) = gpu("softmax") else { return };
    for (rows, cols) in [(1, 1), (5, 31), (16, 32_000)] {
        let xs: Vec<f32> = randn(rows * cols, 8).iter().map(|v| v * 4.0).collect();
        let x = Tensor::from_vec(xs.clone(), [rows, cols]).unwrap();
        let y = run::run_softmax(&dev, &xs, cols).unwrap();
        let want = softmax::cpu::softmax_last_ref(&x).unwrap().to_vec::<f32>().unwrap();
        assert_close("softmax fwd f32", &y, &f64s(&want), TOL_F32);
        let dys = randn(rows * cols, 9);
        let (yt, dyt) = (
            Tensor::from_vec(want.clone(), [rows, cols]).unwrap(),
            Tensor::from_vec(dys.clone(), [rows, cols]).unwrap(),
        );
        let got = run::run_softmax_bwd(&dev, &want, &dys, cols).unwrap();
        let wantb = softmax::cpu::softmax_last_bwd_ref(&yt, &dyt).unwrap().to_vec::<f32>().unwrap();
        assert_close("softmax bwd f32", &got, &f64s(&wantb), TOL_F32);
        let yb = run::run_softmax(&dev, &to_bf16(&xs), cols).unwrap();
        assert_close("softmax fwd bf16", &widen(&yb), &f64s(&want), TOL_BF16);
    }
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn rmsnorm_matches_ref() {
    let Some(dev) = gpu("rmsnorm") else { return };
    for (rows, c) in [(1, 1), (9, 100), (128, 4096)] {
        let (xs, ws, dys) = (randn(rows * c, 10), randn(c, 11), randn(rows * c, 12));
        let (y, rstd) = run::run_rmsnorm(&dev, &xs, &ws, 1e-5).unwrap();
        let (wy, wr) = rmsnorm::cpu::rmsnorm_fwd_ref(&f64s(&xs), &f64s(&ws), c, 1e-5);
        assert_close("rmsnorm fwd y", &y, &wy, TOL_F32);
        assert_close("rmsnorm fwd rstd", &rstd, &wr, TOL_F32);
        let (dx, dw) = run::run_rmsnorm_bwd(&dev, &dys, &xs, &ws, &rstd).unwrap();
        let (wdx, wdw) = rmsnorm::cpu::rmsnorm_bwd_ref(&f64s(&dys), &f64s(&xs), &f64s(&ws), &wr, c);
        assert_close("rmsnorm bwd dx", &dx, &wdx, TOL_F32_LOOSE);
        assert_close("rmsnorm bwd dw", &dw, &wdw, TOL_F32_LOOSE);
        let (yb, _) = run::run_rmsnorm(&dev, &to_bf16(&xs), &to_bf16(&ws), 1e-5).unwrap();
        assert_close("rmsnorm fwd bf16", &widen(&yb), &wy, (3e-2, 1e-2));
    }
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn rope_matches_ref() {
    let Some(dev) = gpu("rope") else { return };
    let (b, h, t, d) = (2, 3, 17, 64);
    let xs = randn(b * h * t * d, 13);
    let (cos, sin) = rope::cpu::rope_tables(d, 10_000.0, 5, t);
    let y = run::run_rope(&dev, &xs, &cos, &sin, t, d, false).unwrap();
    assert_close("rope fwd", &y, &rope::cpu::rope_fwd_ref(&f64s(&xs), &f64s(&cos), &f64s(&sin), t, d), TOL_F32);
    let dx = run::run_rope(&dev, &xs, &cos, &sin, t, d, true).unwrap();
    assert_close("rope bwd", &dx, &rope::cpu::rope_bwd_ref(&f64s(&xs), &f64s(&cos), &f64s(&sin), t, d), TOL_F32);
    let yb = run::run_rope(&dev, &to_bf16(&xs), &cos, &sin, t, d, false).unwrap();
    assert_close(
        "rope fwd bf16",
        &widen(&yb),
        &rope::cpu::rope_fwd_ref(&f64s(&xs), &f64s(&cos), &f64s(&sin), t, d),
        (3e-2, 1e-2),
    );
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn swiglu_matches_ref() {
    let Some(dev) = gpu("swiglu") else { return };
    let n = 100_003;
    let (g, u, dy) = (randn(n, 14), randn(n, 15), randn(n, 16));
    let y = run::run_swiglu(&dev, &g, &u).unwrap();
    assert_close("swiglu fwd", &y, &swiglu::cpu::swiglu_fwd_ref(&f64s(&g), &f64s(&u)), TOL_F32);
    let (dg, du) = run::run_swiglu_bwd(&dev, &dy, &g, &u).unwrap();
    let (wdg, wdu) = swiglu::cpu::swiglu_bwd_ref(&f64s(&dy), &f64s(&g), &f64s(&u));
    assert_close("swiglu bwd dg", &dg, &wdg, TOL_F32);
    assert_close("swiglu bwd du", &du, &wdu, TOL_F32);
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn dropout_mask_is_bit_exact() {
    let Some(dev) = gpu("dropout") else { return };
    let (n, keep, seed) = (100_003, 0.8f32, 17u64);
    let want = dropout::cpu::mask_ref(n, keep, seed);
    let got = run::run_dropout_mask::<f32>(&dev, n, keep, seed).unwrap();
    assert!(got.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()), "dropout f32 differs from mask_ref");
    let got = run::run_dropout_mask::<bf16>(&dev, n, keep, seed).unwrap();
    assert_eq!(got, to_bf16(&want), "dropout bf16 differs from mask_ref");
    let got = run::run_dropout_mask::<tensor::f16>(&dev, n, keep, seed).unwrap();
    let want16: Vec<tensor::f16> = want.iter().map(|&v| tensor::f16::from_f32(v)).collect();
    assert_eq!(got, want16, "dropout f16 differs from mask_ref");
}

// ------------------------------------------------------------------ attention

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn attention_matches_ref() {
    let Some(dev) = gpu("attention") else { return };
    // (b, hq, hkv, t, s, d): GQA, queries at the end of the keys, odd sizes, D < 32 and D = 128.
    for (b, hq, hkv, t, s, d) in [
        (1, 1, 1, 1, 1, 8),
        (2, 4, 2, 33, 33, 16),
        (1, 6, 2, 5, 70, 64),
        (1, 2, 1, 65, 97, 128),
        (2, 8, 8, 40, 40, 100),
    ] {
        let a = AttnDims { b, hq, hkv, t, s, d };
        let dims = Dims { b, hq, hkv, t, s, d };
        let scale = 1.0 / (d as f32).sqrt();
        let (q, k, v, dout) = (
            randn(b * hq * t * d, 20),
            randn(b * hkv * s * d, 21),
            randn(b * hkv * s * d, 22),
            randn(b * hq * t * d, 23),
        );
        let (out, lse) = run::run_attention(&dev, &q, &k, &v, a, scale).unwrap();
        let (wout, wlse) = attention_fwd_ref(&f64s(&q), &f64s(&k), &f64s(&v), dims, scale as f64);
        assert_close(&format!("attention fwd out {a:?}"), &out, &wout, TOL_F32_LOOSE);
        assert_close(&format!("attention fwd lse {a:?}"), &lse, &wlse, TOL_F32_LOOSE);
        let (dq, dk, dv) = run::run_attention_bwd(&dev, &dout, &q, &k, &v, &out, &lse, a, scale).unwrap();
        let (wdq, wdk, wdv) = attention_bwd_ref(&f64s(&dout), &f64s(&q), &f64s(&k), &f64s(&v), dims, scale as f64);
        assert_close(&format!("attention bwd dq {a:?}"), &dq, &wdq, TOL_F32_LOOSE);
        assert_close(&format!("attention bwd dk {a:?}"), &dk, &wdk, TOL_F32_LOOSE);
        assert_close(&format!("attention bwd dv {a:?}"), &dv, &wdv, TOL_F32_LOOSE);
        let (ob, _) = run::run_attention(&dev, &to_bf16(&q), &to_bf16(&k), &to_bf16(&v), a, scale).unwrap();
        assert_close(&format!("attention fwd bf16 {a:?}"), &widen(&ob), &wout, (3e-2, 2e-2));
    }
}

// ------------------------------------------------------------------ index, cross-entropy

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn embedding_matches_ref() {
    let Some(dev) = gpu("embedding") else { return };
    let (vocab, c, n) = (300, 70, 2500);
    let table = randn(vocab * c, 30);
    let mut r = Rng::new(31);
    let ids: Vec<i32> = (0..n).map(|_| r.below(vocab) as i32).collect();
    let tt = Tensor::from_vec(table.clone(), [vocab, c]).unwrap();
    let got = run::run_embedding(&dev, &table, c, &ids).unwrap();
    let want = index::cpu::index_select_ref(&tt, &ids, 0).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(got, want, "embedding gather is a copy");
    let dy = randn(n * c, 32);
    let got = run::run_embedding_bwd(&dev, &dy, c, &ids, vocab).unwrap();
    let want = index::cpu::embedding_bwd_ref(&Tensor::from_vec(dy, [n, c]).unwrap(), &ids, vocab)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_close("embedding bwd", &got, &f64s(&want), TOL_F32);
    assert!(matches!(run::run_embedding(&dev, &table, c, &[0, vocab as i32]), Err(Error::IndexOutOfRange { .. })));
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn cross_entropy_matches_ref() {
    let Some(dev) = gpu("cross_entropy") else {
        return;
    };
    for (n, v) in [(1, 1), (7, 1000), (33, 32_000)] {
        let logits: Vec<f32> = randn(n * v, 40).iter().map(|x| x * 3.0).collect();
        let mut r = Rng::new(41);
        let targets: Vec<i32> = (0..n).map(|i| if i % 5 == 3 { -100 } else { r.below(v) as i32 }).collect();
        let (sum, count, lse) = run::run_cross_entropy(&dev, &logits, v, &targets, -100).unwrap();
        let (wsum, wcount, wlse) = cross_entropy::cpu::ce_fwd_ref(&f64s(&logits), &targets, v, -100);
        assert_eq!(count, wcount, "ce count");
        assert_close("ce loss sum", &[sum as f32], &[wsum], TOL_F32_LOOSE);
        assert_close("ce lse", &lse, &wlse, TOL_F32);
        let d = run::run_cross_entropy_bwd(&dev, &logits, v, &targets, &lse, -100, 0.5).unwrap();
        let wd = cross_entropy::cpu::ce_bwd_ref(&f64s(&logits), &targets, v, -100, 0.5);
        assert_close("ce bwd", &d, &wd, TOL_F32);
    }
}

// ------------------------------------------------------------------ optimizer (bit exact)

/// trainer `adamw_kernel`, transcribed (the trainer crate sits above this one).
fn adamw_cpu(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &AdamStep) {
    for i in 0..p.len() {
        let gi = g[i];
        let mi = m[i] * c.b1 + c.one_minus_b1 * gi;
        let vi = v[i] * c.b2 + c.one_minus_b2 * gi * gi;
        let mut pi = p[i];
        if let Some(d) = c.decay {
            pi *= d;
        }
        p[i] = pi + c.step_size * (mi / (vi.sqrt() + c.eps_hat));
        m[i] = mi;
        v[i] = vi;
    }
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn adamw_is_bit_exact() {
    let Some(dev) = gpu("adamw") else { return };
    let n = 100_001;
    let (mut p, mut m, mut v) = (randn(n, 50), vec![0.0f32; n], vec![0.0f32; n]);
    for step in 1..=3u64 {
        let g = randn(n, 50 + step);
        let c = AdamStep::new(0.9, 0.999, 1e-8, 0.01, 2e-4, step);
        let (gp, gm, gv) = run::run_adamw(&dev, &p, &g, &m, &v, c).unwrap();
        adamw_cpu(&mut p, &g, &mut m, &mut v, &c);
        assert!(gp.iter().zip(&p).all(|(a, b)| a.to_bits() == b.to_bits()), "adamw p step {step}");
        assert!(gm.iter().zip(&m).all(|(a, b)| a.to_bits() == b.to_bits()), "adamw m step {step}");
        assert!(gv.iter().zip(&v).all(|(a, b)| a.to_bits() == b.to_bits()), "adamw v step {step}");
    }
    println!("adamw: 3 steps of {n} bit exact");
    let g: Vec<f32> = randn(n, 60).iter().map(|x| x * 10.0).collect();
    let (clipped, norm) = run::run_clip(&dev, &g, 1.0).unwrap();
    let wnorm = g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt() as f32;
    assert_eq!(norm, wnorm, "clip norm");
    let coef = 1.0f32 / (wnorm + 1e-6);
    assert!(clipped.iter().zip(&g).all(|(a, b)| a.to_bits() == (b * coef).to_bits()), "clip");
}

/// `create_dynamic_map(signed, 7, 8)` (trainer `DynamicMap::generate`, transcribed).
fn dynamic_map(signed: bool) -> [f32; 256] {
    let scales = [1e-6f64, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];
    let mut data = Vec::with_capacity(256);
    for (i, &scale) in scales.iter().enumerate() {
        let n = if signed { (1usize << i) + 1 } else { (1usize << (i + 1)) + 1 };
        let step = (1.0f32 - 0.1) / (n - 1) as f32;
        let lin: Vec<f32> = (0..n)
            .map(|k| {
                if k < n / 2 {
                    (0.1f64 + step as f64 * k as f64) as f32
                } else {
                    (1.0f64 - step as f64 * (n - 1 - k) as f64) as f32
                }
            })
            .collect();
        for w in lin.windows(2) {
            let mean = (w[0] + w[1]) / 2.0;
            data.push(scale as f32 * mean);
            if signed {
                data.push(-(scale as f32) * mean);
            }
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(f32::total_cmp);
    let mut out = [0.0f32; 256];
    out.iter_mut().zip(&data).for_each(|(o, d)| *o = *d);
    out
}

fn dyn_quantize(code: &[f32; 256], signed: bool, x: f32) -> u8 {
    let (mut lo_i, mut hi_i, mut pivot) = (0usize, 255usize, 127usize);
    let (mut lo, mut hi) = (if signed { -1.0f32 } else { 0.0 }, 1.0f32);
    let mut val = code[pivot];
    let mut step = 64;
    while step > 0 {
        if x > val {
            (lo_i, lo) = (pivot, val);
            pivot += step;
        } else {
            (hi_i, hi) = (pivot, val);
            pivot -= step;
        }
        val = code[pivot];
        step >>= 1;
    }
    let pick = if x > val {
        if x > (hi + val) * 0.5 {
            hi_i
        } else {
            pivot
        }
    } else if x < (lo + val) * 0.5 {
        lo_i
    } else {
        pivot
    };
    pick as u8
}

/// trainer `adam8bit_block` over every block, transcribed.
fn adam8bit_cpu(p: &mut [f32], g: &[f32], st: &mut run::Adam8bitState, sm: &[f32; 256], um: &[f32; 256], c: &AdamStep) {
    for (b, start) in (0..p.len()).step_by(256).enumerate() {
        let n = (p.len() - start).min(256);
        let (mut s1, mut s2) = ([0.0f32; 256], [0.0f32; 256]);
        let (mut nm, mut nv) = (0.0f32, 0.0f32);
        for j in 0..n {
            let i = start + j;
            if g[i].is_finite() {
                let v = um[st.v_codes[i] as usize] * st.absmax_v[b];
                s2[j] = v * c.b2 + c.one_minus_b2 * g[i] * g[i];
                let m = sm[st.m_codes[i] as usize] * st.absmax_m[b];
                s1[j] = m * c.b1 + c.one_minus_b1 * g[i];
            }
            nm = nm.max(s1[j].abs());
            nv = nv.max(s2[j].abs());
        }
        st.absmax_m[b] = nm;
        st.absmax_v[b] = nv;
        for j in 0..n {
            let i = start + j;
            if g[i].is_finite() {
                let mut pj = p[i];
                if let Some(d) = c.decay {
                    pj *= d;
                }
                p[i] = pj + c.step_size * (s1[j] / (s2[j].sqrt() + c.eps_hat));
            }
            st.m_codes[i] = if nm > 0.0 {
                let mut q = dyn_quantize(sm, true, s1[j] / nm);
                if sm[q as usize].is_sign_negative() != s1[j].is_sign_negative() {
                    q = if s1[j] > 0.0 { q.wrapping_add(1) } else { q.wrapping_sub(1) };
                }
                q
            } else {
                127
            };
            st.v_codes[i] = if nv > 0.0 { dyn_quantize(um, false, s2[j] / nv) } else { 0 };
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn adamw8bit_is_bit_exact() {
    let Some(dev) = gpu("adamw8bit") else { return };
    let (sm, um) = (dynamic_map(true), dynamic_map(false));
    let n: usize = 256 * 40 + 77;
    let nb = n.div_ceil(256);
    let mut p = randn(n, 70);
    let mut st = run::Adam8bitState {
        m_codes: vec![127; n],
        v_codes: vec![0; n],
        absmax_m: vec![0.0; nb],
        absmax_v: vec![0.0; nb],
    };
    let mut gst = st.clone();
    let mut gp = p.clone();
    for step in 1..=3u64 {
        let mut g = randn(n, 70 + step);
        g[5] = f32::NAN;
        let c = AdamStep::new(0.9, 0.999, 1e-8, 0.0, 1e-3, step);
        gp = run::run_adamw8bit(&dev, &gp, &g, &mut gst, &sm, &um, c).unwrap();
        adam8bit_cpu(&mut p, &g, &mut st, &sm, &um, &c);
        assert!(gp.iter().zip(&p).all(|(a, b)| a.to_bits() == b.to_bits()), "adamw8bit p step {step}");
        assert_eq!(gst, st, "adamw8bit state step {step}");
    }
    println!("adamw8bit: 3 steps of {n} bit exact");
}

// ------------------------------------------------------------------ NF4 (bit exact, README §3)

/// README §3.1's decimal strings; each is exactly an f32.
#[allow(clippy::excessive_precision)]
const NF4: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// `searchsorted(midpoints, v, 'left')` over a sorted code book.
fn nearest(code: &[f32], v: f32) -> u8 {
    (0..code.len() - 1).filter(|&k| (code[k] + code[k + 1]) / 2.0 < v).count() as u8
}

/// README §3.2-3.4: `(packed, absmax)` with the 4-bit code of each scaled value from `code`; an
/// odd count is padded with the code of 0.0.
fn quantize_spec(x: &[f32], bs: usize, code: impl Fn(f32) -> u8) -> (Vec<u8>, Vec<f32>) {
    let mut codes = Vec::with_capacity(x.len() + 1);
    let mut absmax = Vec::new();
    for blk in x.chunks(bs) {
        let a = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        absmax.push(a);
        let den = a.max(1e-38);
        let inv = 1.0 / den;
        for &v in blk {
            let s = if blk.len() < bs { v / den } else { v * inv };
            codes.push(code(s.clamp(-1.0, 1.0)));
        }
    }
    if codes.len() % 2 == 1 {
        codes.push(code(0.0));
    }
    (codes.chunks(2).map(|c| (c[0] << 4) | c[1]).collect(), absmax)
}

/// NF4: the nearest code (pads with code 7, NF4's 0.0).
fn nf4_quantize_spec(x: &[f32], bs: usize) -> (Vec<u8>, Vec<f32>) {
    quantize_spec(x, bs, |v| nearest(&NF4, v))
}

/// bitsandbytes FP4 as the nf4 crate's CPU path holds it (crates/nf4/src/codebook.rs): the
/// dequant table by 4-bit code (code 8 is -0.0: sign x magnitude), its sorted values' fp32
/// midpoints, and sorted position -> code. Bit patterns copied verbatim from there.
const FP4_DEQUANT_BITS: [u32; 16] = [
    0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000, 0x3eaaaaab, 0x3f000000, 0x3e2aaaab, 0x3e800000, 0x80000000,
    0xbbaaaaab, 0xbf2aaaab, 0xbf800000, 0xbeaaaaab, 0xbf000000, 0xbe2aaaab, 0xbe800000,
];
const FP4_SORTED_TO_CODE: [u8; 16] = [11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3];

/// FP4's code of a scaled value: the code at sorted position `searchsorted(midpoints, v, 'left')`
/// over the sorted table (midpoints `(c[k] + c[k+1]) / 2` in f32, as the nf4 crate's).
fn fp4_code(v: f32) -> u8 {
    // The dequant table's -0.0 (code 8, sorted position 8) gives the same midpoints as +0.0.
    let sorted: Vec<f32> = FP4_SORTED_TO_CODE.iter().map(|&c| f32::from_bits(FP4_DEQUANT_BITS[c as usize])).collect();
    FP4_SORTED_TO_CODE[nearest(&sorted, v) as usize]
}

/// The nf4 crate's `quantize_4bit(.., QuantType::Fp4)`: NF4's blocks and scaling, FP4's codes,
/// an odd count padded with FP4's code of 0.0 (0).
fn fp4_quantize_spec(x: &[f32], bs: usize) -> (Vec<u8>, Vec<f32>) {
    quantize_spec(x, bs, fp4_code)
}

/// README §3.5: `(codes, nested absmax)` of `absmax - offset` in groups of 256.
fn double_quant_spec(absmax: &[f32], offset: f32, dynm: &[f32; 256]) -> (Vec<u8>, Vec<f32>) {
    let centred: Vec<f32> = absmax.iter().map(|a| a - offset).collect();
    let (mut codes, mut nested) = (Vec::new(), Vec::new());
    for blk in centred.chunks(256) {
        let a = blk.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        nested.push(a);
        let den = a.max(1e-38);
        let inv = 1.0 / den;
        for &v in blk {
            let s = if blk.len() < 256 { v / den } else { v * inv };
            codes.push(nearest(dynm, s.clamp(-1.0, 1.0)));
        }
    }
    (codes, nested)
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn nf4_quantize_and_dequantize_are_bit_exact() {
    let Some(dev) = gpu("nf4") else { return };
    // The README's blog vector first.
    let blog = [0.7f32, 0.8, 0.2, 0.4, 0.5, -0.9];
    let (packed, absmax) = run::run_nf4_quantize(&dev, &blog, 64).unwrap();
    assert_eq!(packed, vec![0xEF, 0xAC, 0xD0]);
    assert_eq!(absmax, vec![0.9]);
    let dynm = dynamic_map(true);
    for (n, seed) in [(6usize, 1u64), (64, 2), (1023, 3), (4096, 4), (65_536 + 33, 5)] {
        let mut x = randn(n, 80 + seed);
        if n > 700 {
            x[320..384].iter_mut().for_each(|v| *v = 0.0); // an all-zero block
            x[400] = 3000.0; // an outlier
        }
        let (packed, absmax) = run::run_nf4_quantize(&dev, &x, 64).unwrap();
        let (wp, wa) = nf4_quantize_spec(&x, 64);
        assert_eq!(absmax, wa, "nf4 absmax n={n}");
        assert_eq!(packed, wp, "nf4 packed n={n}");
        let xb = to_bf16(&x);
        let (pb, ab) = run::run_nf4_quantize(&dev, &xb, 64).unwrap();
        assert_eq!((pb, ab), nf4_quantize_spec(&widen(&xb), 64), "nf4 bf16 input n={n}");
        // Double quant with the CPU's offset (f64 mean rounded once).
        let offset = (absmax.iter().map(|&a| a as f64).sum::<f64>() / absmax.len() as f64) as f32;
        let nested = run::run_nf4_double_quant(&dev, &absmax, &dynm, Some(offset)).unwrap();
        let (wc, wn) = double_quant_spec(&absmax, offset, &dynm);
        assert_eq!(nested.codes, wc, "dq codes n={n}");
        assert_eq!(nested.nested_absmax, wn, "dq nested absmax n={n}");
        let dev_offset = run::run_nf4_double_quant(&dev, &absmax, &dynm, None).unwrap().offset;
        println!("nf4 n={n}: device mean offset {dev_offset:e} vs f64-sequential {offset:e}");
        let restored = run::run_nf4_restore_absmax(&dev, &nested, &dynm).unwrap();
        let wr: Vec<f32> = wc.iter().enumerate().map(|(b, &q)| dynm[q as usize] * wn[b / 256] + offset).collect();
        assert!(restored.iter().zip(&wr).all(|(a, b)| a.to_bits() == b.to_bits()), "dq restore n={n}");
        // Dequantize: plain and nested, f32 and bf16.
        let unpack = |a: &[f32]| -> Vec<f32> {
            (0..n).map(|i| NF4[((packed[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 15) as usize] * a[i / 64]).collect()
        };
        let (w_plain, w_nested) = (unpack(&absmax), unpack(&wr));
        let got: Vec<f32> = run::run_nf4_dequantize(&dev, &packed, n, 64, Some(&absmax), None).unwrap();
        assert!(got.iter().zip(&w_plain).all(|(a, b)| a.to_bits() == b.to_bits()), "dequant plain n={n}");
        let got: Vec<f32> = run::run_nf4_dequantize(&dev, &packed, n, 64, None, Some((&nested, &dynm))).unwrap();
        assert!(got.iter().zip(&w_nested).all(|(a, b)| a.to_bits() == b.to_bits()), "dequant nested n={n}");
        let got: Vec<bf16> = run::run_nf4_dequantize(&dev, &packed, n, 64, None, Some((&nested, &dynm))).unwrap();
        assert!(
            got.iter().zip(&w_nested).all(|(a, b)| a.to_bits() == bf16::from_f32(*b).to_bits()),
            "dequant bf16 n={n}"
        );
    }
}

#[test]
fn fp4_reference_tables_agree() {
    // The midpoints the scalar reference derives equal the nf4 crate's FP4_SORTED_MIDPOINT_BITS.
    const MIDS: [u32; 15] = [
        0xbf555556, 0xbf155556, 0xbed55556, 0xbe955556, 0xbe555556, 0xbdb00000, 0xbb2aaaab, 0x00000000, 0x3b2aaaab,
        0x3db00000, 0x3e555556, 0x3e955556, 0x3ed55556, 0x3f155556, 0x3f555556,
    ];
    let sorted: Vec<f32> = FP4_SORTED_TO_CODE.iter().map(|&c| f32::from_bits(FP4_DEQUANT_BITS[c as usize])).collect();
    assert!(sorted.windows(2).all(|w| w[0] <= w[1]), "FP4 sorted order");
    let mids: Vec<u32> = sorted.windows(2).map(|w| ((w[0] + w[1]) / 2.0).to_bits()).collect();
    assert_eq!(mids, MIDS);
    // Every code value quantizes to itself (the two zeros to code 0), ties to the lower index.
    for (c, &b) in FP4_DEQUANT_BITS.iter().enumerate() {
        let want = if c == 8 { 0 } else { c as u8 };
        assert_eq!(fp4_code(f32::from_bits(b)), want, "code {c}");
    }
    assert_eq!(fp4_code(f32::from_bits(MIDS[14])), FP4_SORTED_TO_CODE[14]);
    assert_eq!(fp4_code(f32::from_bits(MIDS[14]).next_up()), FP4_SORTED_TO_CODE[15]);
    assert_eq!(fp4_quantize_spec(&[1.0, -1.0, 0.5], 64).0, vec![0x3B, 0x50]);
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn fp4_quantize_and_dequantize_are_bit_exact() {
    let Some(dev) = gpu("nf4") else { return };
    let dynm = dynamic_map(true);
    for (n, seed) in [(3usize, 11u64), (64, 12), (1023, 13), (4096, 14), (65_536 + 33, 15)] {
        let mut x = randn(n, 180 + seed);
        if n > 700 {
            x[320..384].iter_mut().for_each(|v| *v = 0.0); // an all-zero block
            x[400] = 3000.0; // an outlier
            x[500] = -0.0;
        }
        let (packed, absmax) = run::run_fp4_quantize(&dev, &x, 64).unwrap();
        let (wp, wa) = fp4_quantize_spec(&x, 64);
        assert_eq!(absmax, wa, "fp4 absmax n={n}");
        assert_eq!(packed, wp, "fp4 packed n={n}");
        let xb = to_bf16(&x);
        let (pb, ab) = run::run_fp4_quantize(&dev, &xb, 64).unwrap();
        assert_eq!((pb, ab), fp4_quantize_spec(&widen(&xb), 64), "fp4 bf16 input n={n}");
        let offset = (absmax.iter().map(|&a| a as f64).sum::<f64>() / absmax.len() as f64) as f32;
        let nested = run::run_nf4_double_quant(&dev, &absmax, &dynm, Some(offset)).unwrap();
        let (wc, wn) = double_quant_spec(&absmax, offset, &dynm);
        let wr: Vec<f32> = wc.iter().enumerate().map(|(b, &q)| dynm[q as usize] * wn[b / 256] + offset).collect();
        let unpack = |a: &[f32]| -> Vec<f32> {
            (0..n)
                .map(|i| {
                    let q = (packed[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 15;
                    f32::from_bits(FP4_DEQUANT_BITS[q as usize]) * a[i / 64]
                })
                .collect()
        };
        let (w_plain, w_nested) = (unpack(&absmax), unpack(&wr));
        let got: Vec<f32> = run::run_fp4_dequantize(&dev, &packed, n, 64, Some(&absmax), None).unwrap();
        assert!(got.iter().zip(&w_plain).all(|(a, b)| a.to_bits() == b.to_bits()), "fp4 dequant plain n={n}");
        let got: Vec<f32> = run::run_fp4_dequantize(&dev, &packed, n, 64, None, Some((&nested, &dynm))).unwrap();
        assert!(got.iter().zip(&w_nested).all(|(a, b)| a.to_bits() == b.to_bits()), "fp4 dequant nested n={n}");
        let got: Vec<bf16> = run::run_fp4_dequantize(&dev, &packed, n, 64, Some(&absmax), None).unwrap();
        assert!(
            got.iter().zip(&w_plain).all(|(a, b)| a.to_bits() == bf16::from_f32(*b).to_bits()),
            "fp4 dequant bf16 n={n}"
        );
        // The NF4 kernels on the same bytes still use the NF4 table (separate kernels, one params).
        let nf: Vec<f32> = run::run_nf4_dequantize(&dev, &packed, n, 64, Some(&absmax), None).unwrap();
        assert!(n < 64 || nf.iter().zip(&w_plain).any(|(a, b)| a.to_bits() != b.to_bits()), "nf4 vs fp4 n={n}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU: scripts/gpu-check.sh runs it"]
fn nf4_linear_matches_dequantize_then_matmul() {
    let Some(dev) = gpu("nf4_linear") else { return };
    for (m, k, n) in [(1, 64, 8), (6, 128, 48), (70, 4096, 200), (33, 96, 130)] {
        let w = randn(n * k, 90);
        let (packed, absmax) = nf4_quantize_spec(&w, 64);
        let wdq: Vec<f32> = (0..n * k)
            .map(|i| {
                bf16::from_f32(NF4[((packed[i / 2] >> if i % 2 == 0 { 4 } else { 0 }) & 15) as usize] * absmax[i / 64])
                    .to_f32()
            })
            .collect();
        let x = to_bf16(&randn(m * k, 91));
        let mut want = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).map(|p| x[i * k + p].to_f32() as f64 * wdq[j * k + p] as f64).sum();
            }
        }
        let got = run::run_nf4_linear(&dev, &x, m, k, &packed, &absmax, n, 64, false).unwrap();
        assert_close(&format!("nf4_linear f32 out ({m}, {k}, {n})"), &got, &want, (1e-3 * (k as f64).sqrt(), 1e-3));
        let got = run::run_nf4_linear(&dev, &x, m, k, &packed, &absmax, n, 64, true).unwrap();
        assert_close(&format!("nf4_linear bf16 out ({m}, {k}, {n})"), &got, &want, (1e-2 * (k as f64).sqrt(), 1e-2));
    }
}

// ------------------------------------------------------------------ benchmarks (opt-in)

/// The kernel benchmark table (`scripts/gpu-check.sh` runs it with `--ignored --nocapture`).
#[test]
#[ignore = "benchmark: run on a GPU machine with --ignored --nocapture (scripts/gpu-check.sh)"]
fn bench_kernels() {
    let Some(dev) = gpu("bench_kernels") else {
        return;
    };
    let rows = cuda::bench::print_report(&dev).unwrap();
    assert!(rows.iter().all(|r| r.ms > 0.0 && r.ms.is_finite()), "a benchmark did not run");
}
