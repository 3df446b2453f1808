//! The tensor ops on every device, through the public API: each body below takes a `Device`,
//! builds its inputs on the host from a seeded `Rng`, moves them there with `to_device` (views
//! such as `t()` and `narrow` are taken on the device, so the op sees a strided view there),
//! brings the result back and compares it with the op's CPU reference (`*_ref`).
//!
//! `cpu::*` runs each body on the CPU (the fast CPU path against the reference) in every build.
//! `cuda::*` runs the same bodies with `Device::Cuda(0)`; those tests are `#[ignore]`d, so a
//! machine without a GPU reports them ignored, never passed, and run explicitly without a CUDA
//! driver they print `SKIPPED: no CUDA driver` and return. `scripts/gpu-check.sh` runs them with
//! `--include-ignored` and fails on that line. A few tests need two devices at once (mixed-device
//! errors, the model-like chain compared CPU vs CUDA) or are about CUDA only.
//!
//! Tolerances are named and scale with the value (`abs + rel·|ref|`), per dtype; casts, copies,
//! gathers and `cat` are bit exact.

use tensor::ops::binary::{cpu::binary_ref, cpu::sum_to_ref, BinaryOp};
use tensor::ops::reduce::{cpu::reduce_ref, ReduceOp};
use tensor::ops::unary::{cpu::unary_ref, UnaryOp};
use tensor::ops::{attention, cast, cat, cross_entropy, dropout, index, matmul, rmsnorm, rope, softmax, swiglu};
use tensor::{DType, Device, Error, Rng, Shape, Tensor};

// ------------------------------------------------------------------ tolerances and helpers

/// Allowed error `abs + rel·|want|`.
#[derive(Debug, Clone, Copy)]
struct Tol {
    abs: f64,
    rel: f64,
}

/// Bit for bit (casts, copies, gathers, argmax).
const EXACT: Tol = Tol { abs: 0.0, rel: 0.0 };
/// f32 results against f64 references: evaluation order and a few ulps of `expf`/`logf`.
const F32: Tol = Tol { abs: 1e-5, rel: 1e-4 };
/// f32 results of long sums or chains of ops.
const F32_LOOSE: Tol = Tol { abs: 1e-4, rel: 1e-3 };
/// bf16 storage: one or two bf16 roundings (2^-8 relative each) on top of f32 compute.
const BF16: Tol = Tol { abs: 1e-2, rel: 1.6e-2 };
/// f16 storage: one or two f16 roundings (2^-11 relative each).
const F16: Tol = Tol { abs: 1e-3, rel: 2e-3 };

fn tol_of(dtype: DType) -> Tol {
    match dtype {
        DType::BF16 => BF16,
        DType::F16 => F16,
        _ => F32,
    }
}

const FLOATS: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

fn randn(dims: &[usize], seed: u64) -> Tensor {
    Tensor::randn(dims.to_vec(), 1.0, &mut Rng::new(seed))
}

/// `t` on `dev` (a panic in a test is a failure, which is what a failed upload is).
fn put(t: &Tensor, dev: Device) -> Tensor {
    t.to_device(dev).unwrap_or_else(|e| panic!("to_device({dev:?}): {e}"))
}

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_vec_f32().unwrap().into_iter().map(f64::from).collect()
}

/// `got` lives on `dev` and each element is within `tol` of `want` (NaN meets NaN, infinities
/// match exactly).
#[track_caller]
fn assert_close(what: &str, got: &Tensor, dev: Device, want: &[f64], tol: Tol) {
    assert_eq!(got.device(), dev, "{what}: result on the wrong device");
    let g = got.to_vec_f32().unwrap();
    assert_eq!(g.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in g.iter().zip(want).enumerate() {
        let g = g as f64;
        let ok = if w.is_nan() || g.is_nan() || w.is_infinite() {
            g.is_nan() == w.is_nan() && (w.is_nan() || g == w)
        } else {
            (g - w).abs() <= tol.abs + tol.rel * w.abs()
        };
        assert!(ok, "{what} on {dev:?}: element {i} of {:?} is {g}, reference {w} ({tol:?})", got.dims());
    }
}

/// Same as [`assert_close`] against a reference tensor (shape and dtype must match too).
#[track_caller]
fn assert_close_t(what: &str, got: &Tensor, dev: Device, want: &Tensor, tol: Tol) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    assert_eq!(got.dtype(), want.dtype(), "{what}: dtype");
    assert_close(what, got, dev, &f64s(want), tol);
}

/// The elements' bits, whatever the dtype (NaNs compared as NaN by the callers).
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
    let (gf, wf) = (got.to_vec_f32().unwrap(), want.to_vec_f32().unwrap());
    for i in 0..g.len() {
        let both_nan = gf[i].is_nan() && wf[i].is_nan();
        assert!(g[i] == w[i] || both_nan, "{what} on {dev:?}: element {i}: bits {:#x} vs {:#x}", g[i], w[i]);
    }
}

/// Example tensors of every dtype, with values that matter for casts (ties, overflow, negatives).
fn every_dtype(seed: u64) -> Vec<Tensor> {
    let x = randn(&[3, 5], seed).scale(3.0).unwrap();
    let mut out: Vec<Tensor> = FLOATS.iter().map(|&d| x.to_dtype(d).unwrap()).collect();
    out.push(Tensor::from_vec((0..15).map(|i| (i * 37 % 256) as u8).collect::<Vec<_>>(), [3, 5]).unwrap());
    out.push(Tensor::from_vec((0..15).map(|i| (i - 7) * 1_000_003).collect::<Vec<i32>>(), [3, 5]).unwrap());
    out
}

// ------------------------------------------------------------------ bodies: data movement

fn round_trip_and_views(dev: Device) {
    for x in every_dtype(1) {
        let d = put(&x, dev);
        assert_eq!(d.device(), dev);
        assert_eq!((d.dims(), d.dtype()), (x.dims(), x.dtype()));
        assert_bit_exact("round trip", &put(&d, Device::Cpu), Device::Cpu, &x);
        assert!(d.to_device(dev).unwrap().same_storage(&d), "same device must be a cheap clone");
        // Views downloaded, and made contiguous on the device.
        for (name, view, host) in [
            ("t()", d.t().unwrap(), x.t().unwrap()),
            ("narrow", d.narrow(1, 1, 3).unwrap(), x.narrow(1, 1, 3).unwrap()),
            (
                "broadcast",
                d.narrow(0, 1, 1).unwrap().broadcast_as([2, 4, 5]).unwrap(),
                x.narrow(0, 1, 1).unwrap().broadcast_as([2, 4, 5]).unwrap(),
            ),
        ] {
            assert_bit_exact(&format!("download of {name}"), &put(&view, Device::Cpu), Device::Cpu, &host);
            let c = view.contiguous().unwrap();
            assert!(c.is_contiguous());
            assert_bit_exact(&format!("contiguous {name}"), &c, dev, &host.contiguous().unwrap());
        }
        let z = d.zeros_like().unwrap();
        assert_eq!((z.device(), z.dims(), z.dtype()), (dev, x.dims(), x.dtype()));
        assert!(z.to_vec_f32().unwrap().iter().all(|&v| v == 0.0));
        let r = d.reshape([5, 3]).unwrap();
        assert_bit_exact("reshape", &r, dev, &x.reshape([5, 3]).unwrap());
    }
    let s = put(&Tensor::scalar(2.5), dev);
    assert_eq!(s.to_scalar().unwrap(), 2.5);
    let e = put(&Tensor::zeros([0, 3], DType::F32), dev);
    assert_eq!(e.to_vec_f32().unwrap(), Vec::<f32>::new());
}

fn casts_are_bit_exact(dev: Device) {
    let specials = Tensor::from_vec(
        vec![1.0f32 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -0.0, 65504.0, 70000.0, 1e-8, -3.7, 300.5, 3e9, 16_777_217.0],
        [10],
    )
    .unwrap();
    let mut inputs = every_dtype(2);
    inputs.push(specials);
    for x in &inputs {
        for to in [DType::F32, DType::BF16, DType::F16, DType::U8, DType::I32] {
            let want = cast::cpu::cast_ref(x, to).unwrap();
            let got = put(x, dev).to_dtype(to).unwrap();
            assert_bit_exact(&format!("{:?} -> {to:?}", x.dtype()), &got, dev, &want);
            // A transposed view casts the same.
            if x.rank() == 2 {
                let got_t = put(x, dev).t().unwrap().to_dtype(to).unwrap();
                assert_bit_exact("cast of t()", &got_t, dev, &cast::cpu::cast_ref(&x.t().unwrap(), to).unwrap());
            }
        }
    }
}

fn cat_any_dtype_and_views(dev: Device) {
    for x in every_dtype(3) {
        let y = x.narrow(1, 0, 2).unwrap(); // (3, 2), a view with row gaps
        let (dx, dy) = (put(&x, dev), put(&x, dev).narrow(1, 0, 2).unwrap());
        let got = Tensor::cat(&[&dx, &dy, &dx], 1).unwrap();
        assert_bit_exact("cat dim 1", &got, dev, &Tensor::cat(&[&x, &y, &x], 1).unwrap());
        let got0 = Tensor::cat(&[&dx.t().unwrap(), &dx.t().unwrap()], 0).unwrap();
        let want0 = cat::cpu::cat_ref(&[&x.t().unwrap(), &x.t().unwrap()], 0).unwrap();
        assert_bit_exact("cat dim 0 of t()", &got0, dev, &want0);
    }
}

// ------------------------------------------------------------------ bodies: elementwise

fn binary_broadcast_and_views(dev: Device) {
    let ops = [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Maximum];
    for dt in FLOATS {
        let a = randn(&[3, 4, 5], 10).to_dtype(dt).unwrap();
        let b_row = randn(&[5], 11).to_dtype(dt).unwrap();
        let b_col = randn(&[4, 1], 12).affine(1.0, 3.0).unwrap().to_dtype(dt).unwrap();
        let b_t = randn(&[3, 5, 4], 13).to_dtype(dt).unwrap();
        for op in ops {
            let run = |x: &Tensor, y: &Tensor| tensor::ops::binary::binary(x, y, op).unwrap();
            let cases: [(&str, Tensor, Tensor, Tensor); 4] = [
                ("same shape", run(&put(&a, dev), &put(&a.sqr().unwrap(), dev)), a.clone(), a.sqr().unwrap()),
                ("row broadcast", run(&put(&a, dev), &put(&b_row, dev)), a.clone(), b_row.clone()),
                ("column broadcast", run(&put(&b_col, dev), &put(&a, dev)), b_col.clone(), a.clone()),
                (
                    "transposed view",
                    run(&put(&a, dev), &put(&b_t, dev).transpose(1, 2).unwrap()),
                    a.clone(),
                    b_t.transpose(1, 2).unwrap(),
                ),
            ];
            for (name, got, x, y) in cases {
                let want = binary_ref(&x, &y, op).unwrap();
                assert_close_t(&format!("{} {name} {dt:?}", op.name()), &got, dev, &want, tol_of(dt));
            }
        }
    }
}

fn sum_to_undoes_broadcast(dev: Device) {
    for dt in FLOATS {
        let g = randn(&[2, 3, 4], 20).to_dtype(dt).unwrap();
        for target in [vec![3, 1], vec![4], vec![2, 1, 4], vec![1, 1, 1], vec![]] {
            let shape = Shape::new(target.clone());
            let got = put(&g, dev).sum_to(&shape).unwrap();
            let want = sum_to_ref(&g, &shape).unwrap();
            assert_close_t(&format!("sum_to {target:?} {dt:?}"), &got, dev, &want, tol_of(dt));
        }
        let got = put(&g, dev).transpose(0, 2).unwrap().sum_to(&Shape::new([3, 1])).unwrap();
        let want = sum_to_ref(&g.transpose(0, 2).unwrap(), &Shape::new([3, 1])).unwrap();
        assert_close_t("sum_to of a view", &got, dev, &want, tol_of(dt));
    }
}

fn unary_maps(dev: Device) {
    let ops = [
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Neg,
        UnaryOp::Sqr,
        UnaryOp::Recip,
        UnaryOp::Silu,
        UnaryOp::Affine(1.5, -0.25),
        UnaryOp::Powf(1.7),
    ];
    for dt in FLOATS {
        // Positive values so log, sqrt, powf are defined; a transposed view on the device.
        let x = randn(&[6, 7], 30).sqr().unwrap().affine(1.0, 0.1).unwrap().to_dtype(dt).unwrap();
        for op in ops {
            let got = tensor::ops::unary::unary(&put(&x, dev).t().unwrap(), op).unwrap();
            let want = unary_ref(&x.t().unwrap(), op).unwrap();
            assert_close_t(&format!("{} {dt:?}", op.name()), &got, dev, &want, tol_of(dt));
        }
    }
}

fn reductions(dev: Device) {
    for dt in FLOATS {
        let x = randn(&[4, 5, 300], 40).to_dtype(dt).unwrap();
        for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::ArgMax] {
            for dim in 0..3 {
                for keepdim in [false, true] {
                    let got = tensor::ops::reduce::reduce(&put(&x, dev), dim, keepdim, op).unwrap();
                    let want = reduce_ref(&x, dim, keepdim, op).unwrap();
                    let tol = if op == ReduceOp::ArgMax { EXACT } else { tol_of(dt) };
                    let what = format!("{} dim {dim} keepdim {keepdim} {dt:?}", op.name());
                    assert_close_t(&what, &got, dev, &want, tol);
                }
            }
        }
        let got = put(&x, dev).sum_all().unwrap();
        assert_close_t("sum_all", &got, dev, &x.sum_all().unwrap(), tol_of(dt));
    }
}

fn softmax_fwd_bwd(dev: Device) {
    for dt in FLOATS {
        let x = randn(&[300, 6], 50).scale(4.0).unwrap().to_dtype(dt).unwrap(); // viewed as t(): (6, 300)
        let got = put(&x, dev).t().unwrap().softmax_last().unwrap();
        let want = softmax::cpu::softmax_last_ref(&x.t().unwrap()).unwrap();
        assert_close_t(&format!("softmax {dt:?}"), &got, dev, &want, tol_of(dt));
        let y = want.contiguous().unwrap();
        let dy = randn(&[6, 300], 51).to_dtype(dt).unwrap();
        let got = softmax::softmax_last_bwd(&put(&y, dev), &put(&dy, dev)).unwrap();
        let want = softmax::cpu::softmax_last_bwd_ref(&y, &dy).unwrap();
        assert_close_t(&format!("softmax_bwd {dt:?}"), &got, dev, &want, tol_of(dt));
    }
}

// ------------------------------------------------------------------ bodies: fused Llama ops

fn rmsnorm_fwd_bwd(dev: Device) {
    let (rows, c, eps) = (6, 300, 1e-5);
    for dt in FLOATS {
        let x = randn(&[2, rows / 2, c], 60).to_dtype(dt).unwrap();
        let w = randn(&[c], 61).affine(0.2, 1.0).unwrap().to_dtype(dt).unwrap();
        let (y, rstd) = rmsnorm::fwd(&put(&x, dev), &put(&w, dev), eps).unwrap();
        let (y_ref, rstd_ref) = rmsnorm::cpu::rmsnorm_fwd_ref(&f64s(&x), &f64s(&w), c, eps as f64);
        assert_close(&format!("rmsnorm y {dt:?}"), &y, dev, &y_ref, tol_of(dt));
        assert_eq!((y.dtype(), rstd.dtype(), rstd.dims()), (dt, DType::F32, &[2, rows / 2][..]));
        assert_close("rmsnorm rstd", &rstd, dev, &rstd_ref, F32);
        let dy = randn(&[2, rows / 2, c], 62).to_dtype(dt).unwrap();
        let (dx, dw) = rmsnorm::bwd(&put(&dy, dev), &put(&x, dev), &put(&w, dev), &rstd).unwrap();
        let (dx_ref, dw_ref) = rmsnorm::cpu::rmsnorm_bwd_ref(&f64s(&dy), &f64s(&x), &f64s(&w), &rstd_ref, c);
        assert_close(&format!("rmsnorm dx {dt:?}"), &dx, dev, &dx_ref, tol_of(dt));
        let dw_tol = if dt == DType::F32 { F32_LOOSE } else { tol_of(dt) };
        assert_close(&format!("rmsnorm dw {dt:?}"), &dw, dev, &dw_ref, dw_tol);
    }
    // An f32 weight with bf16 activations (mixed dtypes compute in f32, as on the CPU).
    let x = randn(&[4, 64], 63).to_dtype(DType::BF16).unwrap();
    let w = randn(&[64], 64);
    let (y, _) = rmsnorm::fwd(&put(&x, dev), &put(&w, dev), 1e-6).unwrap();
    let (y_ref, _) = rmsnorm::cpu::rmsnorm_fwd_ref(&f64s(&x), &f64s(&w), 64, 1e-6);
    assert_close("rmsnorm bf16 x, f32 w", &y, dev, &y_ref, BF16);
}

fn rope_fwd_bwd(dev: Device) {
    let (b, h, t, d) = (2, 3, 5, 16);
    let (cos, sin) = rope::tables(d, 10_000.0, 3, t).unwrap();
    let (c64, s64) = (f64s(&cos), f64s(&sin));
    for dt in FLOATS {
        // (B, T, H, D) stored, viewed as (B, H, T, D): what attention code does after a projection.
        let x = randn(&[b, t, h, d], 70).to_dtype(dt).unwrap();
        let xv = x.transpose(1, 2).unwrap();
        let y = rope::fwd(&put(&x, dev).transpose(1, 2).unwrap(), &put(&cos, dev), &put(&sin, dev)).unwrap();
        let want = rope::cpu::rope_fwd_ref(&f64s(&xv), &c64, &s64, t, d);
        assert_close(&format!("rope fwd {dt:?}"), &y, dev, &want, tol_of(dt));
        let dy = randn(&[b, h, t, d], 71).to_dtype(dt).unwrap();
        let dx = rope::bwd(&put(&dy, dev), &put(&cos, dev), &put(&sin, dev)).unwrap();
        let want = rope::cpu::rope_bwd_ref(&f64s(&dy), &c64, &s64, t, d);
        assert_close(&format!("rope bwd {dt:?}"), &dx, dev, &want, tol_of(dt));
    }
}

fn swiglu_fwd_bwd(dev: Device) {
    for dt in FLOATS {
        let g = randn(&[7, 33], 80).scale(2.0).unwrap().to_dtype(dt).unwrap();
        let u = randn(&[33, 7], 81).to_dtype(dt).unwrap(); // used as u.t(): a view
        let (gd, ud) = (put(&g, dev), put(&u, dev).t().unwrap());
        let y = swiglu::fwd(&gd, &ud).unwrap();
        let (g64, u64s) = (f64s(&g), f64s(&u.t().unwrap()));
        assert_close(&format!("swiglu fwd {dt:?}"), &y, dev, &swiglu::cpu::swiglu_fwd_ref(&g64, &u64s), tol_of(dt));
        let dy = randn(&[7, 33], 82).to_dtype(dt).unwrap();
        let (dg, du) = swiglu::bwd(&put(&dy, dev), &gd, &ud).unwrap();
        let (dg_ref, du_ref) = swiglu::cpu::swiglu_bwd_ref(&f64s(&dy), &g64, &u64s);
        assert_close(&format!("swiglu dg {dt:?}"), &dg, dev, &dg_ref, tol_of(dt));
        assert_close(&format!("swiglu du {dt:?}"), &du, dev, &du_ref, tol_of(dt));
    }
}

fn attention_fwd_bwd(dev: Device) {
    use attention::cpu::{attention_bwd_ref, attention_fwd_ref, Dims};
    // GQA (4 query heads on 2 KV heads), more keys than queries (the query block at the end).
    let dims = Dims { b: 2, hq: 4, hkv: 2, t: 37, s: 45, d: 24 };
    let scale = 1.0 / (dims.d as f32).sqrt();
    for dt in FLOATS {
        let q = randn(&[dims.b, dims.hq, dims.t, dims.d], 90).to_dtype(dt).unwrap();
        let k = randn(&[dims.b, dims.hkv, dims.s, dims.d], 91).to_dtype(dt).unwrap();
        let v = randn(&[dims.b, dims.hkv, dims.s, dims.d], 92).to_dtype(dt).unwrap();
        let (qd, kd, vd) = (put(&q, dev), put(&k, dev), put(&v, dev));
        let (out, lse) = attention::fwd(&qd, &kd, &vd, scale).unwrap();
        let (q64, k64, v64) = (f64s(&q), f64s(&k), f64s(&v));
        let (out_ref, lse_ref) = attention_fwd_ref(&q64, &k64, &v64, dims, scale as f64);
        assert_close(&format!("attention out {dt:?}"), &out, dev, &out_ref, tol_of(dt));
        assert_close(&format!("attention lse {dt:?}"), &lse, dev, &lse_ref, if dt == DType::F32 { F32 } else { BF16 });
        let dout = randn(&[dims.b, dims.hq, dims.t, dims.d], 93).to_dtype(dt).unwrap();
        let (dq, dk, dv) = attention::bwd(&put(&dout, dev), &qd, &kd, &vd, &out, &lse, scale).unwrap();
        let (dq_ref, dk_ref, dv_ref) = attention_bwd_ref(&f64s(&dout), &q64, &k64, &v64, dims, scale as f64);
        let tol = if dt == DType::F32 { F32_LOOSE } else { tol_of(dt) };
        assert_close(&format!("attention dq {dt:?}"), &dq, dev, &dq_ref, tol);
        assert_close(&format!("attention dk {dt:?}"), &dk, dev, &dk_ref, tol);
        assert_close(&format!("attention dv {dt:?}"), &dv, dev, &dv_ref, tol);
    }
}

fn gathers_and_scatter_add(dev: Device) {
    let ids = Tensor::from_vec(vec![3i32, 0, 3, 1, 4, 3], [6]).unwrap();
    let ids_d = put(&ids, dev);
    let idv = ids.to_vec::<i32>().unwrap();
    for dt in [DType::F32, DType::BF16, DType::F16, DType::I32] {
        let x = every_dtype(100).into_iter().find(|t| t.dtype() == dt).unwrap().t().unwrap().contiguous().unwrap();
        let x = Tensor::cat(&[&x, &x], 1).unwrap(); // (5, 6)
        for dim in 0..2 {
            let got = put(&x, dev).index_select(&ids_d, dim).unwrap();
            let want = index::cpu::index_select_ref(&x, &idv, dim).unwrap();
            assert_bit_exact(&format!("index_select dim {dim} {dt:?}"), &got, dev, &want);
        }
        let got = put(&x, dev).t().unwrap().index_select(&ids_d.narrow(0, 0, 4).unwrap(), 1).unwrap();
        let want = index::cpu::index_select_ref(&x.t().unwrap(), &idv[..4], 1).unwrap();
        assert_bit_exact("index_select of a view", &got, dev, &want);
    }
    for dt in FLOATS {
        let table = randn(&[5, 40], 101).to_dtype(dt).unwrap();
        let got = index::embedding(&put(&table, dev), &ids_d).unwrap();
        assert_bit_exact(
            &format!("embedding {dt:?}"),
            &got,
            dev,
            &index::cpu::index_select_ref(&table, &idv, 0).unwrap(),
        );
        let dy = randn(&[6, 40], 102).to_dtype(dt).unwrap();
        let got = index::embedding_bwd(&put(&dy, dev), &ids_d, 7).unwrap();
        let want = index::cpu::embedding_bwd_ref(&dy, &idv, 7).unwrap();
        assert_close_t(&format!("embedding_bwd {dt:?}"), &got, dev, &want, tol_of(dt));
    }
    let bad = put(&Tensor::from_vec(vec![0i32, 5], [2]).unwrap(), dev);
    let e = index::embedding(&put(&randn(&[5, 4], 103), dev), &bad).unwrap_err();
    assert!(matches!(e, Error::IndexOutOfRange { index: 5, size: 5, .. }), "{e}");
}

fn cross_entropy_fwd_bwd(dev: Device) {
    let (n, v) = (9, 301);
    let targets: Vec<i32> = (0..n as i32).map(|i| if i % 4 == 1 { -100 } else { (i * 97) % v as i32 }).collect();
    let tt = Tensor::from_vec(targets.clone(), [n]).unwrap();
    for dt in FLOATS {
        let logits = randn(&[n, v], 110).scale(3.0).unwrap().to_dtype(dt).unwrap();
        let (ld, td) = (put(&logits, dev), put(&tt, dev));
        let l64 = f64s(&logits);
        let (loss_ref, count_ref, lse_ref) = cross_entropy::cpu::ce_fwd_ref(&l64, &targets, v, -100);
        let (loss, count, lse) = cross_entropy::fwd(&ld, &td, -100).unwrap();
        assert_eq!(count, count_ref);
        assert_close(&format!("ce loss {dt:?}"), &loss, dev, &[loss_ref], F32);
        assert_close(&format!("ce lse {dt:?}"), &lse, dev, &lse_ref, F32);
        let scale = 1.0 / count as f32;
        let want = cross_entropy::cpu::ce_bwd_ref(&l64, &targets, v, -100, scale as f64);
        let dx = cross_entropy::bwd(&ld, &td, &lse, -100, scale).unwrap();
        assert_close(&format!("ce dlogits {dt:?}"), &dx, dev, &want, tol_of(dt));
        let (loss2, count2, dx2) = cross_entropy::fwd_grad(&ld, &td, -100, |c| 1.0 / c as f32).unwrap();
        assert_eq!(count2, count_ref);
        assert_close(&format!("ce fwd_grad loss {dt:?}"), &loss2, dev, &[loss_ref], F32);
        assert_close(&format!("ce fwd_grad dlogits {dt:?}"), &dx2, dev, &want, tol_of(dt));
    }
}

// ------------------------------------------------------------------ bodies: random masks

/// Dropout masks made on `dev` equal `mask_ref` rounded to the dtype, bit for bit: a size that
/// is not a multiple of the 256-thread block, one past 65535 blocks of 256 (the grid-stride
/// loop), keep exactly at one element's draw (the threshold's boundary) and keep = 1.
fn dropout_masks(dev: Device) {
    let big = 65_535 * 256 + 1001;
    let on_draw = (dropout::cpu::bits(1, 100) >> 40) as f32 / (1u32 << 24) as f32;
    let cases: [(&[usize], f32, u64); 5] = [
        (&[7, 33], 0.9, 1),
        (&[7, 33], on_draw, 1),
        (&[3, 1000], 0.5, u64::MAX),
        (&[big], 0.75, 0x5EED),
        (&[5, 77], 1.0, 9),
    ];
    for (dims, keep, seed) in cases {
        let want = dropout::cpu::mask_ref(dims.iter().product(), keep, seed);
        let want = Tensor::from_vec(want, dims.to_vec()).unwrap();
        for dt in FLOATS {
            let got = dropout::mask(dims.to_vec(), keep, seed, dt, dev).unwrap();
            let what = format!("dropout mask {dims:?} keep {keep} {dt:?}");
            assert_bit_exact(&what, &got, dev, &want.to_dtype(dt).unwrap());
        }
    }
    let e = dropout::mask([4], 0.0, 1, DType::F32, dev).unwrap_err();
    assert!(matches!(e, Error::Invalid { op: "dropout::mask", .. }), "{e}");
}

// ------------------------------------------------------------------ bodies: matmul

fn matmul_shapes_views_dtypes(dev: Device) {
    for dt in FLOATS {
        let tol = |k: usize| {
            let t = tol_of(dt);
            Tol { abs: t.abs * (k as f64).sqrt(), rel: t.rel }
        };
        let a = randn(&[5, 70], 120).to_dtype(dt).unwrap();
        let w = randn(&[3, 70], 121).to_dtype(dt).unwrap(); // used as w.t()
        let b = randn(&[70, 3], 122).to_dtype(dt).unwrap();
        let a3 = randn(&[2, 3, 5, 70], 123).to_dtype(dt).unwrap();
        let bb = randn(&[3, 70, 4], 124).to_dtype(dt).unwrap();
        let wide = randn(&[70, 9], 125).to_dtype(dt).unwrap(); // narrowed to columns 2..6
        let at = randn(&[70, 5], 127).to_dtype(dt).unwrap(); // used as at.t(): a column-major lhs
        let a3t = randn(&[2, 3, 70, 5], 128).to_dtype(dt).unwrap(); // used as a3t.transpose(2, 3)
        let (ad, wd, bd, a3d, bbd) = (put(&a, dev), put(&w, dev), put(&b, dev), put(&a3, dev), put(&bb, dev));
        let (wided, atd, a3td) = (put(&wide, dev), put(&at, dev), put(&a3t, dev));
        let cases: Vec<(&str, Tensor, Tensor, Tensor)> = vec![
            ("plain", ad.matmul(&bd).unwrap(), a.clone(), b.clone()),
            ("x·wᵀ", ad.matmul(&wd.t().unwrap()).unwrap(), a.clone(), w.t().unwrap()),
            ("transposed lhs", atd.t().unwrap().matmul(&bd).unwrap(), at.t().unwrap(), b.clone()),
            (
                "narrowed columns",
                ad.matmul(&wided.narrow(1, 2, 4).unwrap()).unwrap(),
                a.clone(),
                wide.narrow(1, 2, 4).unwrap(),
            ),
            ("batched, shared rhs", a3d.matmul(&bd).unwrap(), a3.clone(), b.clone()),
            ("batch broadcast", a3d.matmul(&bbd).unwrap(), a3.clone(), bb.clone()),
            (
                "batched transposed lhs",
                a3td.transpose(2, 3).unwrap().matmul(&bbd).unwrap(),
                a3t.transpose(2, 3).unwrap(),
                bb.clone(),
            ),
            (
                "row vector",
                ad.narrow(0, 2, 1).unwrap().matmul(&wd.t().unwrap()).unwrap(),
                a.narrow(0, 2, 1).unwrap(),
                w.t().unwrap(),
            ),
        ];
        for (name, got, x, y) in cases {
            let want = matmul::cpu::matmul_ref(&x, &y).unwrap();
            assert_close_t(&format!("matmul {name} {dt:?}"), &got, dev, &want, tol(70));
        }
        // addmm: acc + beta·a·b.
        let acc = randn(&[5, 3], 126).to_dtype(dt).unwrap();
        let accd = put(&acc, dev);
        let got = accd.addmm(&ad, &wd.t().unwrap(), 0.5).unwrap();
        let prod = f64s(&matmul::cpu::matmul_ref(&a, &w.t().unwrap()).unwrap());
        let want: Vec<f64> = f64s(&acc).iter().zip(&prod).map(|(c, p)| c + 0.5 * p).collect();
        assert_close(&format!("addmm {dt:?}"), &got, dev, &want, tol(70));
        assert_eq!(accd.to_vec_f32().unwrap(), acc.to_vec_f32().unwrap(), "addmm wrote into its accumulator");
    }
    let empty = put(&Tensor::zeros([4, 0], DType::F32), dev).matmul(&put(&Tensor::zeros([0, 3], DType::F32), dev));
    assert_eq!(empty.unwrap().to_vec_f32().unwrap(), vec![0.0; 12]);
}

// ------------------------------------------------------------------ the tests

/// True when a CUDA test can run; otherwise prints the SKIPPED line gpu-check.sh looks for.
fn cuda_ready(test: &str) -> bool {
    #[cfg(feature = "cuda")]
    if tensor::cuda::driver_present() {
        return true;
    }
    let why = if cfg!(feature = "cuda") { "" } else { ", or tensor built without feature cuda" };
    println!("SKIPPED: no CUDA driver{why} ({test}: nothing compared)");
    false
}

const CUDA: Device = Device::Cuda(0);

macro_rules! on_every_device {
    ($($body:ident),* $(,)?) => {
        /// Every body on the CPU: the fast path against the reference.
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

on_every_device!(
    round_trip_and_views,
    casts_are_bit_exact,
    cat_any_dtype_and_views,
    binary_broadcast_and_views,
    sum_to_undoes_broadcast,
    unary_maps,
    reductions,
    softmax_fwd_bwd,
    rmsnorm_fwd_bwd,
    rope_fwd_bwd,
    swiglu_fwd_bwd,
    attention_fwd_bwd,
    gathers_and_scatter_add,
    cross_entropy_fwd_bwd,
    dropout_masks,
    matmul_shapes_views_dtypes,
    model_like_chain_matches_cpu,
);

#[test]
fn cuda_without_a_driver_is_a_device_error() {
    #[cfg(feature = "cuda")]
    if tensor::cuda::driver_present() {
        println!("driver present: checking a missing ordinal instead");
        let e = Tensor::scalar(1.0).to_device(Device::Cuda(1 << 20)).unwrap_err();
        assert!(matches!(e, Error::Device(_)), "{e}");
        return;
    }
    let e = Tensor::scalar(1.0).to_device(CUDA).unwrap_err();
    assert!(matches!(e, Error::Device(_)), "{e}");
    let e = dropout::mask([4], 0.5, 1, DType::F32, CUDA).unwrap_err();
    assert!(matches!(&e, Error::Device(m) if m.contains("dropout::mask") || m.contains("driver")), "{e}");
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn mixed_devices_are_a_device_error_naming_op_and_devices() {
    if !cuda_ready("mixed_devices_are_a_device_error_naming_op_and_devices") {
        return;
    }
    let (h, w) = (randn(&[4, 8], 130), randn(&[8], 131));
    let d = put(&h, CUDA);
    let ids = Tensor::from_vec(vec![0i32, 1], [2]).unwrap();
    let (cos, sin) = rope::tables(8, 10_000.0, 0, 4).unwrap();
    let x4 = randn(&[1, 2, 4, 8], 132);
    let t4 = Tensor::from_vec(vec![0i32, 1, 2, 3], [4]).unwrap();
    let results: Vec<(&str, tensor::Result<Tensor>)> = vec![
        ("add", d.add(&h)),
        ("add", h.add(&d)),
        ("matmul", h.matmul(&d.t().unwrap())),
        ("addmm", h.narrow(1, 0, 4).unwrap().addmm(&h, &d.t().unwrap(), 1.0)),
        ("cat", Tensor::cat(&[&h, &d], 0)),
        ("rmsnorm::fwd", rmsnorm::fwd(&d, &w, 1e-5).map(|r| r.0)),
        ("rope::fwd", rope::fwd(&put(&x4, CUDA), &cos, &sin)),
        ("swiglu::fwd", swiglu::fwd(&d, &h)),
        ("attention::fwd", attention::fwd(&put(&x4, CUDA), &x4, &x4, 0.3).map(|r| r.0)),
        ("embedding", index::embedding(&d, &ids)),
        ("cross_entropy::fwd", cross_entropy::fwd(&d, &t4, -100).map(|r| r.0)),
        ("softmax_last_bwd", softmax::softmax_last_bwd(&d, &h)),
    ];
    for (op, r) in results {
        match r {
            Err(Error::Device(msg)) => {
                assert!(msg.contains(op) && msg.contains("Cpu") && msg.contains("Cuda(0)"), "{op}: {msg}");
            }
            other => panic!("{op}: expected Error::Device naming both devices, got {other:?}"),
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU"]
fn what_cuda_lacks_is_a_device_error_not_a_panic() {
    if !cuda_ready("what_cuda_lacks_is_a_device_error_not_a_panic") {
        return;
    }
    let codes = put(&Tensor::from_vec(vec![1u8, 2, 3, 4], [2, 2]).unwrap(), CUDA);
    let ids = put(&Tensor::from_vec(vec![1i32], [1]).unwrap(), CUDA);
    let e = codes.index_select(&ids, 0).unwrap_err();
    assert!(matches!(&e, Error::Device(m) if m.contains("not implemented on CUDA")), "{e}");
    // Head dim 160 > the kernels' 128.
    let q = put(&randn(&[1, 1, 2, 160], 140), CUDA);
    let e = attention::fwd(&q, &q, &q, 0.1).unwrap_err();
    assert!(matches!(&e, Error::Device(m) if m.contains("attention::fwd: not implemented on CUDA")), "{e}");
}

/// A small Llama block and LM head as model code would chain them, on `dev`: rmsnorm → q/k/v
/// projections (x·wᵀ) → heads as views → rope → GQA attention → output projection + residual
/// → rmsnorm → swiglu MLP → logits → cross-entropy with its gradient. Returns the logits, the
/// loss and dlogits on the host.
fn model_like_chain(dev: Device) -> (Vec<f32>, f32, Vec<f32>) {
    let (t, c, hq, hkv, hd, ffn, vocab) = (6, 32, 4, 2, 8, 48, 50);
    let p = |dims: &[usize], seed: u64| put(&randn(dims, seed).scale(0.3).unwrap(), dev);
    let x = put(&randn(&[t, c], 150), dev);
    let (n1, n2) = (p(&[c], 151).affine(1.0, 1.0).unwrap(), p(&[c], 152).affine(1.0, 1.0).unwrap());
    let (wq, wk, wv, wo) =
        (p(&[hq * hd, c], 153), p(&[hkv * hd, c], 154), p(&[hkv * hd, c], 155), p(&[c, hq * hd], 156));
    let (wg, wu, wd, head) = (p(&[ffn, c], 157), p(&[ffn, c], 158), p(&[c, ffn], 159), p(&[vocab, c], 160));
    let (cos, sin) = rope::tables(hd, 10_000.0, 0, t).unwrap();
    let (cos, sin) = (put(&cos, dev), put(&sin, dev));
    let heads = |y: Tensor, h: usize| y.reshape([1, t, h, hd]).unwrap().transpose(1, 2).unwrap(); // (1, h, T, hd) view

    let (h1, _) = rmsnorm::fwd(&x, &n1, 1e-5).unwrap();
    let q = rope::fwd(&heads(h1.matmul(&wq.t().unwrap()).unwrap(), hq), &cos, &sin).unwrap();
    let k = rope::fwd(&heads(h1.matmul(&wk.t().unwrap()).unwrap(), hkv), &cos, &sin).unwrap();
    let v = heads(h1.matmul(&wv.t().unwrap()).unwrap(), hkv);
    let (att, _) = attention::fwd(&q, &k, &v, 1.0 / (hd as f32).sqrt()).unwrap();
    let att = att.transpose(1, 2).unwrap().reshape([t, hq * hd]).unwrap();
    let x2 = x.addmm(&att, &wo.t().unwrap(), 1.0).unwrap();
    let (h2, _) = rmsnorm::fwd(&x2, &n2, 1e-5).unwrap();
    let mlp = swiglu::fwd(&h2.matmul(&wg.t().unwrap()).unwrap(), &h2.matmul(&wu.t().unwrap()).unwrap()).unwrap();
    let x3 = x2.add(&mlp.matmul(&wd.t().unwrap()).unwrap()).unwrap();
    let logits = x3.matmul(&head.t().unwrap()).unwrap();
    let targets = put(&Tensor::from_vec(vec![3i32, 17, -100, 42, 0, 9], [t]).unwrap(), dev);
    let (loss, count, dlogits) = cross_entropy::fwd_grad(&logits, &targets, -100, |n| 1.0 / n as f32).unwrap();
    assert_eq!((count, logits.device(), dlogits.device(), loss.device()), (5, dev, dev, dev));
    (logits.to_vec_f32().unwrap(), loss.to_scalar().unwrap() / count as f32, dlogits.to_vec_f32().unwrap())
}

fn model_like_chain_matches_cpu(dev: Device) {
    let (logits, loss, dlogits) = model_like_chain(dev);
    let (logits_c, loss_c, dlogits_c) = model_like_chain(Device::Cpu);
    // Both results are on the host here; compare the device's against the CPU's.
    let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let host = |v: Vec<f32>| Tensor::from_vec(v.clone(), v.len()).unwrap();
    assert_close(&format!("chain logits {dev:?}"), &host(logits), Device::Cpu, &f(&logits_c), F32_LOOSE);
    assert_close(&format!("chain loss {dev:?}"), &host(vec![loss]), Device::Cpu, &[loss_c as f64], F32_LOOSE);
    assert_close(&format!("chain dlogits {dev:?}"), &host(dlogits), Device::Cpu, &f(&dlogits_c), F32_LOOSE);
}
