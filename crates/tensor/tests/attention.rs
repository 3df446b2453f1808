//! Tests of `ops::attention`: the flash-style fast path against the f64 full-softmax reference
//! over random shapes (size 1, odd D, several tiles, T < S for the KV-cache case, GQA groups) and
//! dtypes, for the outputs, lse and all three gradients; the reference backward against finite
//! differences; non-contiguous inputs; and the shape errors.

mod fused_common;

use fused_common::*;
use proptest::prelude::*;
use tensor::ops::attention::{self, cpu, cpu::Dims};
use tensor::{DType, Error, Rng, Tensor};

struct Case {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dout: Vec<f32>,
}

fn case(dims: Dims, seed: u64) -> Case {
    let mut rng = Rng::new(seed);
    let Dims { b, hq, hkv, t, s, d } = dims;
    // Larger q/k spread makes peaky softmaxes as well as flat ones.
    let spread = 0.5 + 2.0 * rng.uniform();
    Case {
        q: randn(&mut rng, b * hq * t * d, 0.0, spread),
        k: randn(&mut rng, b * hkv * s * d, 0.0, spread),
        v: randn(&mut rng, b * hkv * s * d, 0.0, 1.0),
        dout: randn(&mut rng, b * hq * t * d, 0.0, 1.0),
    }
}

/// Tolerance for a result whose elements are sums of many terms: absolute part scaled by the
/// largest reference magnitude.
fn scaled(tol: Tol, want: &[f64]) -> Tol {
    let m = want.iter().fold(0.0f64, |a, &x| a.max(x.abs()));
    Tol { abs: tol.abs + tol.rel * m, rel: tol.rel }
}

fn check_against_ref(dims: Dims, seed: u64, dtype: DType) {
    let Dims { b, hq, hkv, t, s, d } = dims;
    let c = case(dims, seed);
    let (q, q64) = tensor_of(&c.q, &[b, hq, t, d], dtype);
    let (k, k64) = tensor_of(&c.k, &[b, hkv, s, d], dtype);
    let (v, v64) = tensor_of(&c.v, &[b, hkv, s, d], dtype);
    let (dout, dout64) = tensor_of(&c.dout, &[b, hq, t, d], dtype);
    let scale = 1.0 / (d as f32).sqrt();
    let (out, lse) = attention::fwd(&q, &k, &v, scale).unwrap();
    assert_eq!((out.dtype(), out.dims(), lse.dtype(), lse.dims()), (dtype, q.dims(), DType::F32, &[b, hq, t][..]));
    let (out_ref, lse_ref) = cpu::attention_fwd_ref(&q64, &k64, &v64, dims, scale as f64);
    let tol = tol_for(dtype);
    assert_close("out", &out.to_vec_f32().unwrap(), &out_ref, scaled(tol, &out_ref));
    assert_close("lse", &lse.to_vec::<f32>().unwrap(), &lse_ref, scaled(F32, &lse_ref));

    let (dq_ref, dk_ref, dv_ref) = cpu::attention_bwd_ref(&dout64, &q64, &k64, &v64, dims, scale as f64);
    let check_grads = |out: &Tensor, gt: Tol, extra: Option<&(Vec<f64>, Vec<f64>)>| {
        let (dq, dk, dv) = attention::bwd(&dout, &q, &k, &v, out, &lse, scale).unwrap();
        assert_eq!((dq.dims(), dk.dims(), dv.dims()), (q.dims(), k.dims(), v.dims()));
        assert_eq!((dq.dtype(), dk.dtype(), dv.dtype()), (dtype, dtype, dtype));
        let (zq, zk) = (vec![0.0; dq_ref.len()], vec![0.0; dk_ref.len()]);
        let (xq, xk) = extra.map_or((&zq, &zk), |(a, b)| (a, b));
        assert_close_plus("dq", &dq.to_vec_f32().unwrap(), &dq_ref, scaled(gt, &dq_ref), xq);
        assert_close_plus("dk", &dk.to_vec_f32().unwrap(), &dk_ref, scaled(gt, &dk_ref), xk);
        assert_close("dv", &dv.to_vec_f32().unwrap(), &dv_ref, scaled(gt, &dv_ref));
    };
    // The kernel's own error: `out` in f32 (as the forward computed it before rounding), so only
    // the rounding of the gradients to the dtype remains.
    let out32 = Tensor::from_vec(out_ref.iter().map(|&x| x as f32).collect::<Vec<_>>(), q.dims()).unwrap();
    let gt = Tol { abs: 2.0 * tol.abs, rel: 2.0 * tol.rel };
    check_grads(&out32, gt, None);
    // As autograd calls it, with `out` rounded to the dtype: delta = dout·out then carries that
    // rounding into every dS = P·(dP − delta), where dP − delta may cancel (a peaked softmax), so
    // the error does not scale with dq, dk themselves. Same tolerance plus the propagated bound.
    let u = unit_roundoff(dtype) + F32.rel;
    check_grads(&out, gt, Some(&delta_rounding_bound(dims, scale as f64, u, &q64, &k64, &dout64, &out_ref, &lse_ref)));
}

/// Per-element bound on the error that rounding `out` (relative error ≤ `u`) adds to dq and dk:
/// `delta_t = dout_t·out_t` is off by `e_t ≤ u·Σ_c |dout_tc·out_tc|`, so `dS_tj = P_tj(dP_tj − delta_t)`
/// by `P_tj·e_t`, hence `|Δdq_tc| ≤ scale·e_t·Σ_j P_tj|k_jc|` and
/// `|Δdk_jc| ≤ scale·Σ_t P_tj·e_t·|q_tc|` (over every query head of the KV head's group).
#[allow(clippy::too_many_arguments)]
fn delta_rounding_bound(
    dims: Dims,
    scale: f64,
    u: f64,
    q: &[f64],
    k: &[f64],
    dout: &[f64],
    out: &[f64],
    lse: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let Dims { b, hq, hkv, t, s, d } = dims;
    let group = hq / hkv;
    let (mut bq, mut bk) = (vec![0.0; q.len()], vec![0.0; k.len()]);
    for bh in 0..b * hq {
        let kv = (bh / hq * hkv + bh % hq / group) * s * d;
        for i in 0..t {
            let row = (bh * t + i) * d;
            let e: f64 = u * (0..d).map(|c| (dout[row + c] * out[row + c]).abs()).sum::<f64>();
            for j in 0..s - t + i + 1 {
                let sc = scale * (0..d).map(|c| q[row + c] * k[kv + j * d + c]).sum::<f64>();
                let p = (sc - lse[bh * t + i]).exp();
                for c in 0..d {
                    bq[row + c] += scale * e * p * k[kv + j * d + c].abs();
                    bk[kv + j * d + c] += scale * e * p * q[row + c].abs();
                }
            }
        }
    }
    (bq, bk)
}

fn dims_strategy() -> impl Strategy<Value = Dims> {
    (1usize..3, 1usize..3, 1usize..4, 1usize..150, 0usize..150, 1usize..40).prop_map(|(b, hkv, g, s, t, d)| Dims {
        b,
        hq: hkv * g,
        hkv,
        t: 1 + t % s,
        s,
        d,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn fast_matches_ref(dims in dims_strategy(), seed in any::<u64>(), dt in 0usize..3) {
        check_against_ref(dims, seed, FLOATS[dt]);
    }

    /// `L = Σ dout·out`; the reference backward is its gradient with respect to q, k and v.
    #[test]
    fn ref_bwd_matches_finite_differences(hkv in 1usize..3, g in 1usize..3, s in 1usize..5, t in 0usize..5, d in 1usize..4, seed in any::<u64>()) {
        let dims = Dims { b: 1, hq: hkv * g, hkv, t: 1 + t % s, s, d };
        let c = case(dims, seed);
        let (q, k, v, dout) = (f64s(&c.q), f64s(&c.k), f64s(&c.v), f64s(&c.dout));
        let scale = 0.7;
        let (dq, dk, dv) = cpu::attention_bwd_ref(&dout, &q, &k, &v, dims, scale);
        let fwd = |q: &[f64], k: &[f64], v: &[f64]| dot64(&dout, &cpu::attention_fwd_ref(q, k, v, dims, scale).0);
        assert_close64("dq", &dq, &numeric_grad(|q| fwd(q, &k, &v), &q), FD);
        assert_close64("dk", &dk, &numeric_grad(|k| fwd(&q, k, &v), &k), FD);
        assert_close64("dv", &dv, &numeric_grad(|v| fwd(&q, &k, v), &v), FD);
    }
}

/// Fixed cases: several query and key tiles, decode (one query over a long cache), size 1.
#[test]
fn tiled_and_edge_shapes() {
    let cases = [
        Dims { b: 1, hq: 6, hkv: 2, t: 130, s: 130, d: 64 },
        Dims { b: 2, hq: 3, hkv: 3, t: 1, s: 200, d: 16 },
        Dims { b: 1, hq: 2, hkv: 1, t: 70, s: 200, d: 7 },
        Dims { b: 1, hq: 1, hkv: 1, t: 1, s: 1, d: 1 },
    ];
    for (i, dims) in cases.into_iter().enumerate() {
        check_against_ref(dims, i as u64, DType::F32);
    }
}

/// The model transposes `(B, T, H, D)` projections to `(B, H, T, D)` views.
#[test]
fn non_contiguous_inputs_match() {
    let dims = Dims { b: 2, hq: 4, hkv: 2, t: 5, s: 9, d: 6 };
    let c = case(dims, 3);
    let bthd = |v: &[f32], h: usize, n: usize| {
        let x = Tensor::from_slice(v, [2, h, n, 6]).unwrap();
        let y = x.transpose(1, 2).unwrap().contiguous().unwrap(); // (B, N, H, D) storage
        (x, y.transpose(1, 2).unwrap()) // same values as x, strided
    };
    let ((q, qn), (k, kn), (v, vn), (dout, doutn)) =
        (bthd(&c.q, 4, 5), bthd(&c.k, 2, 9), bthd(&c.v, 2, 9), bthd(&c.dout, 4, 5));
    assert!(!qn.is_contiguous() && !kn.is_contiguous());
    let (out, lse) = attention::fwd(&q, &k, &v, 0.4).unwrap();
    let (out2, lse2) = attention::fwd(&qn, &kn, &vn, 0.4).unwrap();
    assert_eq!(out.to_vec::<f32>().unwrap(), out2.to_vec::<f32>().unwrap());
    assert_eq!(lse.to_vec::<f32>().unwrap(), lse2.to_vec::<f32>().unwrap());
    let g = attention::bwd(&dout, &q, &k, &v, &out, &lse, 0.4).unwrap();
    let g2 = attention::bwd(&doutn, &qn, &kn, &vn, &noncontig(&out), &noncontig(&lse), 0.4).unwrap();
    assert_eq!(g.0.to_vec::<f32>().unwrap(), g2.0.to_vec::<f32>().unwrap());
    assert_eq!(g.1.to_vec::<f32>().unwrap(), g2.1.to_vec::<f32>().unwrap());
    assert_eq!(g.2.to_vec::<f32>().unwrap(), g2.2.to_vec::<f32>().unwrap());
}

#[test]
fn errors_name_the_op() {
    let t = |d: [usize; 4]| Tensor::ones(d, DType::F32);
    let (q, k) = (t([1, 4, 3, 8]), t([1, 2, 5, 8]));
    let e = attention::fwd(&q, &t([1, 3, 5, 8]), &t([1, 3, 5, 8]), 0.3).unwrap_err();
    assert!(matches!(e, Error::Invalid { op: "attention::fwd", .. }) && e.to_string().contains("[1, 3, 5, 8]"), "{e}");
    let e = attention::fwd(&q, &t([1, 2, 2, 8]), &t([1, 2, 2, 8]), 0.3).unwrap_err();
    assert!(e.to_string().contains("T > S"), "{e}");
    assert!(matches!(attention::fwd(&q, &t([1, 2, 5, 4]), &t([1, 2, 5, 4]), 0.3), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(attention::fwd(&q, &t([2, 2, 5, 8]), &t([2, 2, 5, 8]), 0.3), Err(Error::ShapeMismatch { .. })));
    assert!(matches!(attention::fwd(&q, &k, &t([1, 2, 6, 8]), 0.3), Err(Error::ShapeMismatch { .. })));
    assert!(attention::fwd(&Tensor::ones([4, 3, 8], DType::F32), &k, &k, 0.3).is_err());
    assert!(attention::fwd(
        &q,
        &k,
        &k.to_vec_f32()
            .map(|v| Tensor::from_vec(v.iter().map(|&x| tensor::bf16::from_f32(x)).collect::<Vec<_>>(), [1, 2, 5, 8])
                .unwrap())
            .unwrap(),
        0.3
    )
    .is_err());
    let (out, lse) = attention::fwd(&q, &k, &k, 0.3).unwrap();
    let e = attention::bwd(&q, &q, &k, &k, &out, &Tensor::ones([1, 4, 5], DType::F32), 0.3).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { op: "attention::bwd", .. }), "{e}");
    assert!(matches!(attention::bwd(&t([1, 4, 3, 7]), &q, &k, &k, &out, &lse, 0.3), Err(Error::ShapeMismatch { .. })));
}

/// The mask, checked without `Dims`' helpers (which the reference shares): perturbing key `j`
/// changes query `t`'s output exactly when `j <= S − T + t`.
#[test]
fn causal_mask_positions() {
    let dims = Dims { b: 1, hq: 1, hkv: 1, t: 4, s: 7, d: 3 };
    let c = case(dims, 21);
    let q = Tensor::from_slice(&c.q, [1, 1, 4, 3]).unwrap();
    let v = Tensor::from_slice(&c.v, [1, 1, 7, 3]).unwrap();
    let out_of = |k: &[f32]| {
        attention::fwd(&q, &Tensor::from_slice(k, [1, 1, 7, 3]).unwrap(), &v, 0.5).unwrap().0.to_vec::<f32>().unwrap()
    };
    let base = out_of(&c.k);
    for j in 0..7 {
        let mut k = c.k.clone();
        k[j * 3] += 1.0;
        let out = out_of(&k);
        for t in 0..4 {
            let changed = out[t * 3..t * 3 + 3] != base[t * 3..t * 3 + 3];
            assert_eq!(changed, j <= 7 - 4 + t, "key {j}, query {t}");
        }
    }
}

/// GQA mapping, checked head by head against single-head calls: query head `h` uses KV head
/// `h / (Hq/Hkv)` (consecutive query heads share a KV head, as `repeat_kv` lays them out).
#[test]
fn gqa_heads_use_kv_head_h_over_group() {
    let dims = Dims { b: 1, hq: 6, hkv: 2, t: 3, s: 5, d: 4 };
    let c = case(dims, 22);
    let q = Tensor::from_slice(&c.q, [1, 6, 3, 4]).unwrap();
    let (k, v) = (Tensor::from_slice(&c.k, [1, 2, 5, 4]).unwrap(), Tensor::from_slice(&c.v, [1, 2, 5, 4]).unwrap());
    let out = attention::fwd(&q, &k, &v, 0.5).unwrap().0;
    for h in 0..6 {
        let one = |x: &Tensor, i: usize| x.narrow(1, i, 1).unwrap();
        let single = attention::fwd(&one(&q, h), &one(&k, h / 3), &one(&v, h / 3), 0.5).unwrap().0;
        assert_eq!(one(&out, h).to_vec::<f32>().unwrap(), single.to_vec::<f32>().unwrap(), "head {h}");
    }
}

#[test]
fn empty_batch_and_queries() {
    let t = |d: [usize; 4]| Tensor::ones(d, DType::F32);
    let (out, lse) = attention::fwd(&t([0, 2, 3, 4]), &t([0, 1, 5, 4]), &t([0, 1, 5, 4]), 0.5).unwrap();
    assert_eq!((out.dims(), lse.dims()), (&[0, 2, 3, 4][..], &[0, 2, 3][..]));
    // No queries (T = 0): nothing attends, every gradient is zero.
    let (q, k) = (t([1, 2, 0, 4]), t([1, 1, 5, 4]));
    let (out, lse) = attention::fwd(&q, &k, &k, 0.5).unwrap();
    let (dq, dk, dv) = attention::bwd(&q, &q, &k, &k, &out, &lse, 0.5).unwrap();
    assert_eq!((dq.dims(), dk.dims()), (&[1, 2, 0, 4][..], &[1, 1, 5, 4][..]));
    assert!(dk.to_vec::<f32>().unwrap().iter().chain(&dv.to_vec::<f32>().unwrap()).all(|&x| x == 0.0));
}

/// Every task owns its outputs and GQA partials are summed in head order: the same bits with 1
/// thread as with many.
#[test]
fn deterministic_across_thread_counts() {
    let dims = Dims { b: 2, hq: 4, hkv: 2, t: 70, s: 90, d: 8 };
    let c = case(dims, 31);
    let q = Tensor::from_slice(&c.q, [2, 4, 70, 8]).unwrap();
    let (k, v) = (Tensor::from_slice(&c.k, [2, 2, 90, 8]).unwrap(), Tensor::from_slice(&c.v, [2, 2, 90, 8]).unwrap());
    let dout = Tensor::from_slice(&c.dout, [2, 4, 70, 8]).unwrap();
    let run = || {
        let (out, lse) = attention::fwd(&q, &k, &v, 0.3).unwrap();
        let (dq, dk, dv) = attention::bwd(&dout, &q, &k, &v, &out, &lse, 0.3).unwrap();
        [out, dq, dk, dv].map(|t| t.to_vec::<f32>().unwrap())
    };
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
    let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(run);
    assert_eq!(one, three);
}
