//! The fused NF4 linear: against the LoRA-Linear reference (forward and input gradient, the LoRA
//! part computed here with plain loops), against dense f32/f64 math on random shapes (blocks
//! straddling rows, odd widths), finite-difference gradcheck, and the autograd registration.

mod common;

use std::sync::Arc;

use autograd::{gradcheck, GradcheckConfig, Tape};
use common::*;
use nf4::{linear, Absmax, Nf4Weight, QuantConfig, QuantType};
use tensor::{DType, Rng, Tensor};

/// `a (m, k) · b (k, n)` in f64, row-major, with optional transposes given as closures.
fn matmul(m: usize, n: usize, k: usize, a: impl Fn(usize, usize) -> f64, b: impl Fn(usize, usize) -> f64) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| a(i, p) * b(p, j)).sum();
        }
    }
    out
}

/// `|got - want| <= atol + rtol * |want|` elementwise, named.
fn assert_close(what: &str, got: &[f32], want: &[f64], atol: f64, rtol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= atol + rtol * w.abs(), "{what}[{i}]: got {g}, want {w}");
    }
}

#[test]
fn lora_linear_reference() {
    let f = load("lora_linear.safetensors");
    let (tokens, d_in, d_out, r) = (6, 128, 48, 8);
    let scaling = 2.0f64;
    let w = f.f32s("W");
    let offset = f.f32s("W_dq_offset")[0];
    let q = Nf4Weight::quantize_slice("W", &w, &[d_out, d_in], &QuantConfig::default(), Some(offset)).unwrap();
    assert_eq!(q.packed(), &f.u8s("W_packed")[..]);
    let Absmax::Nested(n) = q.absmax() else { panic!() };
    assert_eq!(n.codes, f.u8s("W_dq_qabsmax"));
    assert_bits_eq("W_dq_nested_absmax", &n.nested_absmax, &f.f32s("W_dq_nested_absmax"));
    let mut wdq = vec![0f32; d_out * d_in];
    q.dequantize_into(&mut wdq).unwrap();
    assert_bits_eq("W_dq", &wdq, &f.f32s("W_dq"));

    let (x, a, b, gy) = (f.f32s("x"), f.f32s("lora_A"), f.f32s("lora_B"), f.f32s("grad_y"));
    let xt = Tensor::from_vec(x.clone(), [tokens, d_in]).unwrap();
    let base = linear::forward(&xt, &q).unwrap().to_vec::<f32>().unwrap();
    // LoRA part: s * (x Aᵀ) Bᵀ
    let xa = matmul(tokens, r, d_in, |i, p| x[i * d_in + p] as f64, |p, j| a[j * d_in + p] as f64);
    let lora = matmul(tokens, d_out, r, |i, p| xa[i * r + p], |p, j| b[j * r + p] as f64);
    let y: Vec<f32> = base.iter().zip(&lora).map(|(&y0, &l)| (y0 as f64 + scaling * l) as f32).collect();
    let y_ref: Vec<f64> = f.f32s("y").iter().map(|&v| v as f64).collect();
    assert_close("y", &y, &y_ref, 1e-5, 1e-5);

    let gyt = Tensor::from_vec(gy.clone(), [tokens, d_out]).unwrap();
    let dx_base = linear::backward(&gyt, &q, DType::F32).unwrap().to_vec::<f32>().unwrap();
    // LoRA part: s * (gy B) A
    let gb = matmul(tokens, r, d_out, |i, p| gy[i * d_out + p] as f64, |p, j| b[p * r + j] as f64);
    let dl = matmul(tokens, d_in, r, |i, p| gb[i * r + p], |p, j| a[p * d_in + j] as f64);
    let dx: Vec<f32> = dx_base.iter().zip(&dl).map(|(&d0, &l)| (d0 as f64 + scaling * l) as f32).collect();
    let dx_ref: Vec<f64> = f.f32s("dx").iter().map(|&v| v as f64).collect();
    assert_close("dx", &dx, &dx_ref, 1e-5, 1e-5);
}

/// Forward and backward against f64 dense math on the dequantized weight.
fn check_dense(n: usize, out_f: usize, in_f: usize, blocksize: usize, quant_type: QuantType, seed: u64) {
    let mut rng = Rng::new(seed);
    let w = Tensor::randn([out_f, in_f], 0.05, &mut rng);
    let cfg = QuantConfig { quant_type, blocksize, double_quant: true };
    let q = Nf4Weight::quantize("w", &w, &cfg).unwrap();
    let wd = q.dequantize_to(DType::F32).unwrap().to_vec::<f32>().unwrap();
    let x = Tensor::randn([n, in_f], 1.0, &mut rng);
    let xs = x.to_vec::<f32>().unwrap();
    let y = linear::forward(&x, &q).unwrap();
    assert_eq!(y.dims(), &[n, out_f]);
    let want = matmul(n, out_f, in_f, |i, p| xs[i * in_f + p] as f64, |p, j| wd[j * in_f + p] as f64);
    let tol = 1e-5 * (in_f as f64).sqrt();
    assert_close(&format!("y {n}x{out_f}x{in_f}"), &y.to_vec::<f32>().unwrap(), &want, tol, 1e-5);

    let dy = Tensor::randn([n, out_f], 1.0, &mut rng);
    let dys = dy.to_vec::<f32>().unwrap();
    let dx = linear::backward(&dy, &q, DType::F32).unwrap();
    assert_eq!(dx.dims(), &[n, in_f]);
    let want = matmul(n, in_f, out_f, |i, p| dys[i * out_f + p] as f64, |p, j| wd[p * in_f + j] as f64);
    let tol = 1e-5 * (out_f as f64).sqrt();
    assert_close(&format!("dx {n}x{out_f}x{in_f}"), &dx.to_vec::<f32>().unwrap(), &want, tol, 1e-5);
}

#[test]
fn dense_random_shapes() {
    let cases = [
        (1, 1, 1, 32),
        (3, 5, 7, 32),
        (4, 48, 128, 64),
        (2, 33, 37, 64),     // blocks straddle rows, odd in: rows start mid-byte
        (7, 130, 65, 128),   // odd count overall
        (5, 300, 257, 64),   // several tiles and slabs
        (17, 64, 1500, 256), // tile of few rows, slab smaller than a row
        (2, 9, 3000, 4096),  // partial trailing block
        (9, 70, 160, 32),    // forward slab decoded transposed (AVX-512), rows % 16 != 0
        (3, 2100, 2048, 64), // the transposed decode over two slabs
    ];
    for (i, &(n, o, k, bs)) in cases.iter().enumerate() {
        check_dense(n, o, k, bs, QuantType::Nf4, 100 + i as u64);
    }
    check_dense(3, 40, 70, 64, QuantType::Fp4, 7);
}

#[test]
fn leading_dims_and_dtypes() {
    let mut rng = Rng::new(3);
    let w = Tensor::randn([12, 40], 0.1, &mut rng);
    let q = Nf4Weight::quantize("w", &w, &QuantConfig::default()).unwrap();
    let x = Tensor::randn([2, 3, 40], 1.0, &mut rng);
    let y = linear::forward(&x, &q).unwrap();
    assert_eq!(y.dims(), &[2, 3, 12]);
    let y2 = linear::forward(&x.reshape([6, 40]).unwrap(), &q).unwrap();
    assert_eq!(y.to_vec::<f32>().unwrap(), y2.to_vec::<f32>().unwrap());
    // Non-contiguous input (a transposed view) gives the same result.
    let xt = Tensor::randn([40, 6], 1.0, &mut rng);
    let a = linear::forward(&xt.t().unwrap(), &q).unwrap();
    let b = linear::forward(&xt.t().unwrap().contiguous().unwrap(), &q).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    // bf16 in, bf16 out; dx in the dtype asked for.
    let xb = Tensor::from_vec(
        x.to_vec::<f32>().unwrap().iter().map(|&v| half::bf16::from_f32(v)).collect::<Vec<_>>(),
        [6, 40],
    )
    .unwrap();
    let yb = linear::forward(&xb, &q).unwrap();
    assert_eq!(yb.dtype(), DType::BF16);
    let dx = linear::backward(&Tensor::ones([6, 12], DType::F32), &q, DType::BF16).unwrap();
    assert_eq!((dx.dtype(), dx.dims()), (DType::BF16, &[6usize, 40][..]));
    // Shape errors name the weight.
    let e = linear::forward(&Tensor::zeros([2, 41], DType::F32), &q).unwrap_err().to_string();
    assert!(e.contains("'w'") || e.contains("w:"), "{e}");
}

#[test]
fn autograd_registration_and_gradcheck() {
    let mut rng = Rng::new(11);
    let w = Tensor::randn([10, 70], 0.1, &mut rng);
    let q = Arc::new(Nf4Weight::quantize("w", &w, &QuantConfig::default()).unwrap());
    let x = Tensor::randn([4, 70], 1.0, &mut rng);
    // Through the tape: grad of sum(y * g) is g · deq(W).
    let tape = Tape::new();
    let xv = tape.leaf(x.clone());
    let y = linear::nf4_linear(&xv, &q).unwrap();
    let g = Tensor::randn([4, 10], 1.0, &mut rng);
    let grads = tape.backward_with(&y, g.clone()).unwrap();
    let want = linear::backward(&g, &q, DType::F32).unwrap();
    assert_eq!(grads.get(&xv).unwrap().to_vec::<f32>().unwrap(), want.to_vec::<f32>().unwrap());
    // Finite differences of the input gradient (the op is linear in x, so f32 differences are
    // accurate).
    let qc = Arc::clone(&q);
    let report = gradcheck(move |v| linear::nf4_linear(&v[0], &qc), &[x], &GradcheckConfig::f32()).unwrap();
    assert!(report.checked == 280 && report.worst_ratio <= 1.0, "{report:?}");
}
