//! Checkpointing: same gradients as the plain graph (captured params included), nothing saved in
//! the forward, misuse reported.

use crate::common::{check, randn};
use autograd::{checkpoint, no_grad, ops, Result, Tape, Var};
use tensor::{Rng, Tensor};

/// A two-layer block with LoRA-style params: `h = silu(x·W1 + (x·A)·B) ; out = rmsnorm(h·W2 + x, g)`
/// where `W1`, `W2` are frozen (captured constants) and `A`, `B`, `g` are trainable.
fn block(x: &Var, p: &[Var], frozen: &(Tensor, Tensor)) -> Result<Var> {
    let (a, b, g) = (&p[0], &p[1], &p[2]);
    let (w1, w2) = (Var::constant(frozen.0.clone()), Var::constant(frozen.1.clone()));
    let h = x.matmul(&w1)?.add(&x.matmul(a)?.matmul(b)?)?.silu()?;
    ops::rmsnorm(&h.matmul(&w2)?.add(x)?, g, 1e-5)
}

struct Setup {
    x: Tensor,
    params: Vec<Tensor>,
    frozen: (Tensor, Tensor),
}

fn setup() -> Setup {
    let mut rng = Rng::new(11);
    let (n, c, h, r) = (3, 6, 10, 2);
    Setup {
        x: randn(&[n, c], &mut rng),
        params: vec![randn(&[c, r], &mut rng), randn(&[r, h], &mut rng), randn(&[c], &mut rng)],
        frozen: (randn(&[c, h], &mut rng), randn(&[h, c], &mut rng)),
    }
}

/// Loss and gradients (x, then params) of two stacked blocks, with or without checkpointing.
fn run(s: &Setup, ckpt: bool) -> (f32, Vec<Vec<f32>>, usize) {
    let tape = Tape::new();
    let x = tape.leaf(s.x.clone());
    let params: Vec<Var> = s.params.iter().map(|p| tape.leaf(p.clone())).collect();
    let mut h = x.clone();
    for _ in 0..2 {
        h = if ckpt {
            let frozen = s.frozen.clone();
            let prefs: Vec<&Var> = params.iter().collect();
            checkpoint(&[&h], &prefs, move |xs, ps| block(&xs[0], ps, &frozen)).unwrap()
        } else {
            block(&h, &params, &s.frozen).unwrap()
        };
    }
    let nodes = tape.len();
    let loss = h.sqr().unwrap().mean_all().unwrap();
    let value = loss.value().to_scalar().unwrap();
    let grads = tape.backward(&loss).unwrap();
    let g = std::iter::once(&x).chain(&params).map(|v| grads.get(v).unwrap().to_vec::<f32>().unwrap()).collect();
    (value, g, nodes)
}

#[test]
fn checkpoint_gives_the_same_gradients_with_captured_params() {
    let s = setup();
    let (l0, g0, n0) = run(&s, false);
    let (l1, g1, n1) = run(&s, true);
    assert_eq!(l0, l1);
    assert_eq!(g0, g1, "gradients differ with checkpointing");
    assert_eq!(n1, 2, "one node per checkpointed block");
    assert!(n0 > 10);
}

#[test]
fn checkpoint_passes_gradcheck() {
    let s = setup();
    let frozen = s.frozen.clone();
    let mut inputs = vec![s.x.clone()];
    inputs.extend(s.params.iter().cloned());
    check(
        "checkpoint(block)",
        move |v| {
            let frozen = frozen.clone();
            checkpoint(&[&v[0]], &[&v[1], &v[2], &v[3]], move |xs, ps| block(&xs[0], ps, &frozen))
        },
        &inputs,
    );
}

#[test]
fn captured_trainable_var_is_an_error_not_a_lost_gradient() {
    let s = setup();
    let tape = Tape::new();
    let x = tape.leaf(s.x.clone());
    let a = tape.leaf(s.params[0].clone());
    let e = checkpoint(&[&x], &[], move |xs, _| xs[0].matmul(&a)).unwrap_err().to_string();
    assert!(e.contains("params"), "{e}");
}

#[test]
fn checkpoint_without_grad_is_a_plain_call() {
    let s = setup();
    let tape = Tape::new();
    let x = tape.leaf(s.x.clone());
    let y = no_grad(|| checkpoint(&[&x], &[], |xs, _| xs[0].exp())).unwrap();
    assert!(!y.requires_grad() && tape.is_empty());
    let c = Var::constant(s.x.clone());
    let y = checkpoint(&[&c], &[], |xs, _| xs[0].exp()).unwrap();
    assert!(!y.requires_grad() && tape.is_empty());
}

#[test]
fn nested_checkpoint_and_backward_under_no_grad() {
    let s = setup();
    let tape = Tape::new();
    let x = tape.leaf(s.x.clone());
    let y = checkpoint(&[&x], &[], |xs, _| {
        let inner = checkpoint(&[&xs[0]], &[], |ys, _| ys[0].sqr())?;
        inner.mul(&xs[0])
    })
    .unwrap();
    // The recompute must record even when backward is called inside no_grad.
    let loss = y.sum_all().unwrap();
    let grads = no_grad(|| tape.backward(&loss)).unwrap();
    let want: Vec<f32> = s.x.to_vec::<f32>().unwrap().iter().map(|v| 3.0 * v * v).collect();
    let got = grads.get(&x).unwrap().to_vec::<f32>().unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{got:?} vs {want:?}");
    }
}
