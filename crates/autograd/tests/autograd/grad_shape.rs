//! Gradcheck of the shape, layout, cast and gather rules.

use crate::common::{check, check_with, randn};
use autograd::{ops, GradcheckConfig, Var};
use tensor::{DType, Rng, Tensor};

#[test]
fn views_and_reshapes() {
    let mut rng = Rng::new(20);
    let x = randn(&[2, 3, 4], &mut rng);
    // A non-linear tail so a wrong permutation of the gradient cannot cancel out.
    let tail = |v: Var| v.sqr();
    check("reshape", |v| tail(v[0].reshape([6, 4])?), &[x.clone()]);
    check("flatten_all", |v| tail(v[0].flatten_all()?), &[x.clone()]);
    check("transpose(0, 2)", |v| tail(v[0].transpose(0, 2)?), &[x.clone()]);
    check("t", |v| tail(v[0].t()?), &[x.clone()]);
    check("reshape of a view", |v| tail(v[0].t()?.reshape([2, 12])?), &[x.clone()]);
    check("contiguous", |v| tail(v[0].transpose(0, 1)?.contiguous()?), &[x.clone()]);
    check("unsqueeze", |v| tail(v[0].unsqueeze(1)?), &[x.clone()]);
    check("squeeze", |v| tail(v[0].squeeze(1)?), &[randn(&[3, 1, 2], &mut rng)]);
    check("broadcast_as", |v| tail(v[0].broadcast_as([2, 3, 4])?), &[randn(&[3, 1], &mut rng)]);
    check("broadcast_as scalar", |v| tail(v[0].broadcast_as([2, 2])?), &[randn(&[1], &mut rng)]);
}

#[test]
fn narrow_every_dim_and_edge() {
    let mut rng = Rng::new(21);
    let x = randn(&[4, 5, 3], &mut rng);
    for (dim, start, len) in [(0, 0, 2), (0, 1, 3), (1, 4, 1), (1, 0, 5), (2, 1, 2), (2, 0, 1)] {
        check(&format!("narrow({dim}, {start}, {len})"), |v| v[0].narrow(dim, start, len)?.sqr(), &[x.clone()]);
    }
}

#[test]
fn cat_with_a_constant_part() {
    let mut rng = Rng::new(22);
    for dim in 0..2 {
        let mut shapes = [[2, 3], [2, 3], [2, 3]];
        shapes[1][dim] = 1;
        shapes[2][dim] = 4;
        let (a, b) = (randn(&shapes[0], &mut rng), randn(&shapes[1], &mut rng));
        let c = randn(&shapes[2], &mut rng);
        check(
            &format!("cat dim {dim}"),
            move |v| ops::cat(&[&v[0], &Var::constant(c.clone()), &v[1]], dim)?.sqr(),
            &[a, b],
        );
    }
}

#[test]
fn to_dtype_round_trip() {
    // bf16 rounds to 8 bits, so use a step of many bf16 ulps on a linear function of the cast.
    let mut rng = Rng::new(23);
    let x = randn(&[3, 4], &mut rng);
    let cfg = GradcheckConfig { eps: 0.25, atol: 1e-2, rtol: 5e-2, ..GradcheckConfig::f32() };
    check_with(
        "to_dtype bf16 -> f32",
        |v| v[0].to_dtype(DType::BF16)?.to_dtype(DType::F32)?.scale(1.5),
        &[x.clone()],
        &cfg,
    );
    check_with(
        "to_dtype f16 -> f32",
        |v| v[0].to_dtype(DType::F16)?.to_dtype(DType::F32)?.scale(1.5),
        &[x.clone()],
        &cfg,
    );
    // The gradient of a bf16 var comes back in bf16.
    let tape = autograd::Tape::new();
    let h = tape.leaf(x.to_dtype(DType::BF16).unwrap());
    let loss = h.to_dtype(DType::F32).unwrap().sum_all().unwrap();
    assert_eq!(tape.backward(&loss).unwrap().get(&h).unwrap().dtype(), DType::BF16);
}

#[test]
fn index_select_every_dim_with_repeats() {
    let mut rng = Rng::new(24);
    let x = randn(&[4, 3, 5], &mut rng);
    for dim in 0..3 {
        let size = x.dims()[dim] as i32;
        let ids = Tensor::from_vec(vec![size - 1, 0, size - 1, 1 % size, 0], [5]).unwrap();
        check(&format!("index_select dim {dim}"), |v| v[0].index_select(&ids, dim)?.sqr(), &[x.clone()]);
    }
}

#[test]
fn embedding_with_repeated_ids() {
    let mut rng = Rng::new(25);
    let table = randn(&[6, 4], &mut rng);
    let ids = Tensor::from_vec(vec![5i32, 0, 5, 2, 5], [5]).unwrap();
    check("embedding", |v| ops::embedding(&v[0], &ids)?.sqr(), &[table]);
}
