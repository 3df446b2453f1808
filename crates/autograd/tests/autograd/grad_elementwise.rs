//! Gradcheck of the binary, unary, reduction, softmax and matmul rules on seeded random shapes.

use crate::common::{broadcast_partners, check, check_with, randn, uniform, SHAPES};
use autograd::{gradcheck_ref, GradcheckConfig, Var};
use tensor::{Rng, Tensor};

#[test]
fn binary_ops_with_broadcasting() {
    let mut rng = Rng::new(1);
    for shape in SHAPES {
        for other in broadcast_partners(shape) {
            let (a, b) = (randn(shape, &mut rng), randn(&other, &mut rng));
            let bpos = uniform(&other, 0.5, 2.0, &mut rng);
            let case = format!("{shape:?} op {other:?}");
            check(&format!("add {case}"), |v| v[0].add(&v[1]), &[a.clone(), b.clone()]);
            check(&format!("sub {case}"), |v| v[0].sub(&v[1]), &[a.clone(), b.clone()]);
            check(&format!("mul {case}"), |v| v[0].mul(&v[1]), &[a.clone(), b.clone()]);
            check(&format!("div {case}"), |v| v[0].div(&v[1]), &[a.clone(), bpos.clone()]);
            // Broadcast on the left operand too.
            check(&format!("sub rev {case}"), |v| v[1].sub(&v[0]), &[a.clone(), b.clone()]);
            check(&format!("div rev {case}"), |v| v[1].div(&v[0]), &[uniform(shape, 0.5, 2.0, &mut rng), b.clone()]);
        }
    }
}

#[test]
fn binary_with_one_constant_operand() {
    let mut rng = Rng::new(2);
    let (a, b) = (randn(&[3, 4], &mut rng), uniform(&[4], 0.5, 2.0, &mut rng));
    let bc = b.clone();
    check("mul const rhs", move |v| v[0].mul(&Var::constant(bc.clone())), &[a.clone()]);
    let ac = a.clone();
    check("div const lhs", move |v| Var::constant(ac.clone()).div(&v[0]), &[b]);
}

#[test]
fn unary_ops() {
    let mut rng = Rng::new(3);
    for shape in SHAPES {
        let x = randn(shape, &mut rng);
        let pos = uniform(shape, 0.5, 3.0, &mut rng);
        check("exp", |v| v[0].exp(), &[x.clone()]);
        check("log", |v| v[0].log(), &[pos.clone()]);
        check("sqrt", |v| v[0].sqrt(), &[pos.clone()]);
        check("rsqrt", |v| v[0].rsqrt(), &[pos.clone()]);
        check("neg", |v| v[0].neg(), &[x.clone()]);
        check("sqr", |v| v[0].sqr(), &[x.clone()]);
        check("recip", |v| v[0].recip(), &[pos.clone()]);
        check("silu", |v| v[0].silu(), &[x.clone().scale(3.0).unwrap()]);
        check("affine", |v| v[0].affine(-1.5, 0.25), &[x.clone()]);
        check("scale", |v| v[0].scale(0.3), &[x.clone()]);
        check("powf 2.5", |v| v[0].powf(2.5), &[pos.clone()]);
        check("powf -0.5", |v| v[0].powf(-0.5), &[pos.clone()]);
    }
}

#[test]
fn unary_on_strided_views() {
    let mut rng = Rng::new(4);
    let xt = randn(&[5, 3], &mut rng).t().unwrap();
    check("exp of a transposed view", |v| v[0].exp(), &[xt.clone()]);
    check("silu of a transposed view", |v| v[0].silu()?.mul(&v[0]), &[xt]);
}

/// An op, and its f64 reference applied elementwise.
type RefCase = (&'static str, fn(&Var) -> autograd::Result<Var>, fn(f64) -> f64);

#[test]
fn unary_against_f64_references() {
    let mut rng = Rng::new(5);
    let x = uniform(&[4, 5], 0.5, 2.0, &mut rng);
    let cfg = GradcheckConfig::f64_ref();
    let cases: Vec<RefCase> = vec![
        ("exp", |v| v.exp(), f64::exp),
        ("log", |v| v.log(), f64::ln),
        ("sqrt", |v| v.sqrt(), f64::sqrt),
        ("rsqrt", |v| v.rsqrt(), |x| 1.0 / x.sqrt()),
        ("recip", |v| v.recip(), |x| 1.0 / x),
        ("silu", |v| v.silu(), |x| x / (1.0 + (-x).exp())),
        ("powf", |v| v.powf(1.7), |x| x.powf(f64::from(1.7f32))),
    ];
    for (name, op, r) in cases {
        if let Err(e) = gradcheck_ref(|v| op(&v[0]), |x| x[0].iter().map(|&a| r(a)).collect(), &[x.clone()], &cfg) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn reductions_over_every_dim() {
    let mut rng = Rng::new(6);
    for shape in [&[5][..], &[3, 4], &[2, 3, 5], &[4, 1, 3]] {
        let x = randn(shape, &mut rng);
        for dim in 0..shape.len() {
            for keepdim in [false, true] {
                let case = format!("{shape:?} dim {dim} keepdim {keepdim}");
                check(&format!("sum {case}"), |v| v[0].sum(dim, keepdim), &[x.clone()]);
                check(&format!("mean {case}"), |v| v[0].mean(dim, keepdim), &[x.clone()]);
                check(&format!("max {case}"), |v| v[0].max(dim, keepdim), &[spread(shape, &mut rng)]);
            }
        }
        check("sum_all", |v| v[0].sum_all(), &[x.clone()]);
        check("mean_all", |v| v[0].mean_all(), &[x.clone()]);
        check("softmax_last", |v| v[0].softmax_last(), &[x.clone()]);
    }
}

/// Distinct values at least 0.1 apart, shuffled, so a max never changes under the step.
fn spread(shape: &[usize], rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| i as f32 * 0.1 - 0.05 * n as f32).collect();
    rng.shuffle(&mut v);
    Tensor::from_vec(v, shape.to_vec()).unwrap()
}

#[test]
fn max_routes_the_gradient_to_one_of_ties() {
    let tape = autograd::Tape::new();
    let x = tape.leaf(Tensor::from_vec(vec![1.0f32, 3.0, 3.0, 2.0, 0.0, -1.0], [2, 3]).unwrap());
    let grads = tape.backward(&x.max(1, false).unwrap().sum_all().unwrap()).unwrap();
    let g = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(g.iter().sum::<f32>(), 2.0);
    assert_eq!(g[3], 1.0);
    assert_eq!(g[1] + g[2], 1.0);
}

#[test]
fn matmul_plain_batched_broadcast_and_transposed() {
    let mut rng = Rng::new(8);
    let cases: &[(&[usize], &[usize])] = &[
        (&[1, 1], &[1, 1]),
        (&[3, 4], &[4, 5]),
        (&[2, 3, 4], &[2, 4, 1]),
        (&[3, 4], &[2, 4, 5]),
        (&[2, 3, 4], &[4, 5]),
        (&[2, 1, 3, 4], &[1, 3, 4, 2]),
    ];
    for (sa, sb) in cases {
        let (a, b) = (randn(sa, &mut rng), randn(sb, &mut rng));
        check(&format!("matmul {sa:?} x {sb:?}"), |v| v[0].matmul(&v[1]), &[a, b]);
    }
    // Operands given as transposed views, and a transpose inside the graph (x·Wᵀ).
    let a = randn(&[4, 3], &mut rng).t().unwrap();
    let b = randn(&[5, 4], &mut rng).t().unwrap();
    check("matmul of views", |v| v[0].matmul(&v[1]), &[a.clone(), b.clone()]);
    let w = randn(&[5, 3], &mut rng);
    check("x·Wᵀ", |v| v[0].matmul(&v[1].t()?), &[randn(&[2, 3], &mut rng), w]);
    // One operand constant: only the other gets a gradient.
    let bc = b.clone();
    check("matmul const rhs", move |v| v[0].matmul(&Var::constant(bc.clone())), &[a]);
}

#[test]
fn matmul_against_f64_reference() {
    let mut rng = Rng::new(9);
    let (m, k, n) = (3, 5, 4);
    let (a, b) = (randn(&[m, k], &mut rng), randn(&[k, n], &mut rng));
    let reference = move |x: &[Vec<f64>]| {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| x[0][i * k + p] * x[1][p * n + j]).sum();
            }
        }
        c
    };
    if let Err(e) = gradcheck_ref(|v| v[0].matmul(&v[1]), reference, &[a, b], &GradcheckConfig::f64_ref()) {
        panic!("matmul: {e}");
    }
}

#[test]
fn composite_expression() {
    // A small MLP with a softmax head: many rules chained, with reuse of `w`.
    let mut rng = Rng::new(10);
    let (x, w, b) = (randn(&[3, 4], &mut rng), randn(&[4, 4], &mut rng), randn(&[4], &mut rng));
    check_with(
        "mlp",
        |v| {
            let h = v[0].matmul(&v[1])?.add(&v[2])?.silu()?;
            h.matmul(&v[1])?.softmax_last()?.mul(&h)?.sum(0, true)
        },
        &[x, w, b],
        &GradcheckConfig::f32(),
    );
}
