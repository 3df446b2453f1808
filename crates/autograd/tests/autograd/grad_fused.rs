//! Gradcheck of the fused nodes (rmsnorm, rope, swiglu, attention, cross-entropy), in f32 and,
//! where tensor has one, against the op's f64 `*_ref` forward.

use crate::common::{check, check_with, randn};
use autograd::{gradcheck_ref, ops, GradcheckConfig, Tape, Var};
use tensor::ops::{attention::cpu as attn_cpu, cross_entropy::cpu as ce_cpu, rmsnorm::cpu as rms_cpu};
use tensor::ops::{rope as trope, swiglu::cpu as swiglu_cpu};
use tensor::{Rng, Tensor};

fn f64s(t: &Tensor) -> Vec<f64> {
    t.to_vec_f32().unwrap().into_iter().map(f64::from).collect()
}

#[test]
fn rmsnorm_f32_and_reference() {
    let mut rng = Rng::new(30);
    for shape in [&[1, 1][..], &[4, 7], &[2, 3, 5]] {
        let c = *shape.last().unwrap();
        let (x, w) = (randn(shape, &mut rng), randn(&[c], &mut rng));
        check(&format!("rmsnorm {shape:?}"), |v| ops::rmsnorm(&v[0], &v[1], 1e-5), &[x.clone(), w.clone()]);
        let r = gradcheck_ref(
            |v| ops::rmsnorm(&v[0], &v[1], 1e-5),
            |x| rms_cpu::rmsnorm_fwd_ref(&x[0], &x[1], c, f64::from(1e-5f32)).0,
            &[x, w],
            &GradcheckConfig::f64_ref(),
        );
        if let Err(e) = r {
            panic!("rmsnorm ref {shape:?}: {e}");
        }
    }
    // Only one input trainable.
    let (x, w) = (randn(&[3, 4], &mut rng), randn(&[4], &mut rng));
    let wc = w.clone();
    check("rmsnorm const w", move |v| ops::rmsnorm(&v[0], &Var::constant(wc.clone()), 1e-5), &[x.clone()]);
    check("rmsnorm const x", move |v| ops::rmsnorm(&Var::constant(x.clone()), &v[0], 1e-5), &[w]);
}

#[test]
fn rope_f32_and_reference() {
    let mut rng = Rng::new(31);
    for (b, h, t, d, pos0) in [(1, 1, 1, 2, 0), (2, 3, 5, 4, 7), (1, 2, 3, 8, 100)] {
        let (cos, sin) = trope::tables(d, 10_000.0, pos0, t).unwrap();
        let x = randn(&[b, h, t, d], &mut rng);
        check(&format!("rope {:?}", x.dims()), |v| ops::rope(&v[0], &cos, &sin), &[x.clone()]);
        let (c64, s64) = (f64s(&cos), f64s(&sin));
        let r = gradcheck_ref(
            |v| ops::rope(&v[0], &cos, &sin),
            |x| trope::cpu::rope_fwd_ref(&x[0], &c64, &s64, t, d),
            &[x],
            &GradcheckConfig::f64_ref(),
        );
        if let Err(e) = r {
            panic!("rope ref: {e}");
        }
    }
}

#[test]
fn swiglu_f32_and_reference() {
    let mut rng = Rng::new(32);
    for shape in [&[1][..], &[3, 5], &[2, 2, 3]] {
        let (g, u) = (randn(shape, &mut rng).scale(2.0).unwrap(), randn(shape, &mut rng));
        check(&format!("swiglu {shape:?}"), |v| ops::swiglu(&v[0], &v[1]), &[g.clone(), u.clone()]);
        let r = gradcheck_ref(
            |v| ops::swiglu(&v[0], &v[1]),
            |x| swiglu_cpu::swiglu_fwd_ref(&x[0], &x[1]),
            &[g, u],
            &GradcheckConfig::f64_ref(),
        );
        if let Err(e) = r {
            panic!("swiglu ref {shape:?}: {e}");
        }
    }
}

#[test]
fn attention_causal_gqa_f32_and_reference() {
    let mut rng = Rng::new(33);
    // (B, Hq, Hkv, T, S, D): single token, T == S, GQA with the query block at the end of keys.
    for (b, hq, hkv, t, s, d) in [(1, 1, 1, 1, 1, 2), (1, 2, 2, 4, 4, 3), (2, 4, 2, 3, 5, 4)] {
        let q = randn(&[b, hq, t, d], &mut rng);
        let (k, v) = (randn(&[b, hkv, s, d], &mut rng), randn(&[b, hkv, s, d], &mut rng));
        let scale = 1.0 / (d as f32).sqrt();
        let case = format!("attention q {:?} kv {:?}", q.dims(), k.dims());
        check(&case, |x| ops::attention(&x[0], &x[1], &x[2], scale), &[q.clone(), k.clone(), v.clone()]);
        let dims = attn_cpu::Dims { b, hq, hkv, t, s, d };
        let r = gradcheck_ref(
            |x| ops::attention(&x[0], &x[1], &x[2], scale),
            |x| attn_cpu::attention_fwd_ref(&x[0], &x[1], &x[2], dims, f64::from(scale)).0,
            &[q, k, v],
            &GradcheckConfig::f64_ref(),
        );
        if let Err(e) = r {
            panic!("{case} ref: {e}");
        }
    }
}

#[test]
fn cross_entropy_mean_sum_and_ignored_rows() {
    let mut rng = Rng::new(34);
    let vocab = 5;
    let logits = randn(&[2, 3, vocab], &mut rng).scale(2.0).unwrap();
    let tv = vec![4i32, -100, 0, 2, -100, 4];
    let targets = Tensor::from_vec(tv.clone(), [2, 3]).unwrap();
    check("cross_entropy mean", |v| ops::cross_entropy(&v[0], &targets, -100, None), &[logits.clone()]);
    check("cross_entropy / 13", |v| ops::cross_entropy(&v[0], &targets, -100, Some(13.0)), &[logits.clone()]);
    for norm in [None, Some(13.0f32)] {
        let tv = tv.clone();
        let r = gradcheck_ref(
            |v| ops::cross_entropy(&v[0], &targets, -100, norm),
            move |x| {
                let (sum, count, _) = ce_cpu::ce_fwd_ref(&x[0], &tv, vocab, -100);
                vec![sum / f64::from(norm.unwrap_or(count as f32))]
            },
            &[logits.clone()],
            &GradcheckConfig::f64_ref(),
        );
        if let Err(e) = r {
            panic!("cross_entropy ref {norm:?}: {e}");
        }
    }
    // A loss scaled afterwards (as a trainer might) scales the gradient too.
    check_with(
        "cross_entropy scaled",
        |v| ops::cross_entropy(&v[0].reshape([6, vocab])?, &targets.reshape(6)?, -100, None)?.scale(3.0),
        &[logits.clone()],
        &GradcheckConfig::f32(),
    );
}

#[test]
fn cross_entropy_normaliser_makes_micro_batches_add_up() {
    // Two micro-batches normalised by the total count give the gradient of one big batch.
    let mut rng = Rng::new(35);
    let logits = randn(&[4, 6], &mut rng);
    let targets = Tensor::from_vec(vec![1i32, -100, 5, 0], [4]).unwrap();
    let tape = Tape::new();
    let x = tape.leaf(logits.clone());
    let full = tape.backward(&ops::cross_entropy(&x, &targets, -100, None).unwrap()).unwrap();
    let mut acc = vec![0.0f32; 24];
    for half in 0..2 {
        let tape = Tape::new();
        let part = tape.leaf(logits.narrow(0, 2 * half, 2).unwrap());
        let t = targets.narrow(0, 2 * half, 2).unwrap();
        let loss = ops::cross_entropy(&part, &t, -100, Some(3.0)).unwrap();
        let g = tape.backward(&loss).unwrap().get(&part).unwrap().to_vec::<f32>().unwrap();
        acc[12 * half..12 * (half + 1)].copy_from_slice(&g);
    }
    let want = full.get(&x).unwrap().to_vec::<f32>().unwrap();
    for (a, w) in acc.iter().zip(&want) {
        assert!((a - w).abs() <= 1e-6, "{acc:?} vs {want:?}");
    }
}

#[test]
fn cross_entropy_all_ignored_is_zero() {
    let tape = Tape::new();
    let x = tape.leaf(Tensor::ones([2, 3], tensor::DType::F32));
    let targets = Tensor::from_vec(vec![-100i32, -100], [2]).unwrap();
    let loss = ops::cross_entropy(&x, &targets, -100, None).unwrap();
    assert_eq!(loss.value().to_scalar().unwrap(), 0.0);
    let g = tape.backward(&loss).unwrap();
    assert!(g.get(&x).unwrap().to_vec::<f32>().unwrap().iter().all(|&v| v == 0.0));
    assert!(ops::cross_entropy(&x, &targets, -100, Some(0.0)).is_err());
}

#[test]
fn lora_f32_and_reference() {
    let mut rng = Rng::new(36);
    for (n, inp, out, r, scale) in [(1, 1, 1, 1, 1.0f32), (5, 7, 6, 3, 2.0), (4, 9, 3, 2, 0.25)] {
        let xs = [randn(&[n, out], &mut rng), randn(&[n, inp], &mut rng), randn(&[r, inp], &mut rng), {
            randn(&[out, r], &mut rng)
        }];
        check(&format!("lora {n}x{inp}->{out} r{r}"), |v| ops::lora(v[0].clone(), &v[1], &v[2], &v[3], scale), &xs);
        let reference = move |v: &[Vec<f64>]| -> Vec<f64> {
            let (base, x, a, b) = (&v[0], &v[1], &v[2], &v[3]);
            let mut y = base.clone();
            for i in 0..n {
                for o in 0..out {
                    let mut acc = 0.0;
                    for k in 0..r {
                        let u: f64 = (0..inp).map(|j| x[i * inp + j] * a[k * inp + j]).sum();
                        acc += u * b[o * r + k];
                    }
                    y[i * out + o] += f64::from(scale) * acc;
                }
            }
            y
        };
        let res = gradcheck_ref(
            |v| ops::lora(v[0].clone(), &v[1], &v[2], &v[3], scale),
            reference,
            &xs,
            &GradcheckConfig::f64_ref(),
        );
        if let Err(e) = res {
            panic!("lora ref {n}x{inp}->{out} r{r}: {e}");
        }
    }
    // Frozen x (no dx) and a bad shape.
    let (base, x, a, b) =
        (randn(&[3, 4], &mut rng), randn(&[3, 5], &mut rng), randn(&[2, 5], &mut rng), randn(&[4, 2], &mut rng));
    let xc = x.clone();
    check(
        "lora const x",
        move |v| ops::lora(v[0].clone(), &Var::constant(xc.clone()), &v[1], &v[2], 0.5),
        &[base.clone(), a.clone(), b.clone()],
    );
    let tape = Tape::new();
    let bad = ops::lora(tape.leaf(base), &tape.leaf(x), &tape.leaf(b), &tape.leaf(a), 1.0);
    assert!(bad.unwrap_err().to_string().contains("lora"));
}

/// Handing `lora` the only reference to base (the model's case: a fresh projection output)
/// accumulates into base's storage in place, with the same value and gradients as the copying
/// path that a shared base takes.
#[test]
fn lora_in_place_matches_the_copy() {
    let mut rng = Rng::new(37);
    let (n, inp, out, r) = (33, 70, 90, 8);
    let (x, w, a, b) = (
        randn(&[n, inp], &mut rng),
        randn(&[out, inp], &mut rng),
        randn(&[r, inp], &mut rng),
        randn(&[out, r], &mut rng),
    );
    let run = |shared: bool| {
        let tape = Tape::new();
        let (xv, wv, av, bv) =
            (tape.leaf(x.clone()), Var::constant(w.clone()), tape.leaf(a.clone()), tape.leaf(b.clone()));
        let base = xv.matmul(&wv.transpose(0, 1).unwrap()).unwrap();
        let keep = shared.then(|| base.clone());
        let ptr = std::sync::Arc::as_ptr(base.value().storage());
        let y = ops::lora(base, &xv, &av, &bv, 0.5).unwrap();
        let in_place = std::sync::Arc::as_ptr(y.value().storage()) == ptr;
        drop(keep);
        let loss = y.mul(&y).unwrap().sum_all().unwrap();
        let g = tape.backward(&loss).unwrap();
        let grads: Vec<Vec<f32>> = [&xv, &av, &bv].iter().map(|v| g.get(v).unwrap().to_vec::<f32>().unwrap()).collect();
        (in_place, y.value().to_vec::<f32>().unwrap(), grads)
    };
    let (owned_in_place, y1, g1) = run(false);
    let (shared_in_place, y2, g2) = run(true);
    assert!(owned_in_place, "a uniquely held base must be updated in place");
    assert!(!shared_in_place, "a shared base must not be written");
    assert_eq!(y1, y2);
    assert_eq!(g1, g2);
}
