//! The tape's mechanics: recording rules, accumulation, freeing saved tensors, errors, no_grad,
//! custom ops, and gradcheck's ability to fail.

use autograd::{custom_op, gradcheck, no_grad, GradcheckConfig, Tape, Var};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use tensor::{DType, Tensor};

fn t(v: &[f32]) -> Tensor {
    Tensor::from_slice(v, [v.len()]).unwrap()
}

#[test]
fn leaves_constants_and_what_gets_recorded() {
    let tape = Tape::new();
    let x = tape.leaf(t(&[1.0, 2.0]));
    let c = Var::constant(t(&[3.0, 4.0]));
    assert!(x.requires_grad() && !c.requires_grad());
    let cc = c.mul(&c).unwrap();
    assert!(!cc.requires_grad());
    assert_eq!(tape.len(), 0, "ops on constants record nothing");
    let y = x.mul(&c).unwrap();
    assert!(y.requires_grad() && y.tape().unwrap().same(&tape));
    assert_eq!(tape.len(), 1);
    let d = y.detach();
    assert!(!d.requires_grad());
}

#[test]
fn gradients_accumulate_over_uses() {
    // y = x·x + x + x·c: dy/dx = 2x + 1 + c.
    let tape = Tape::new();
    let x = tape.leaf(t(&[1.0, -2.0, 0.5]));
    let c = Var::constant(t(&[10.0, 20.0, 30.0]));
    let y = x.mul(&x).unwrap().add(&x).unwrap().add(&x.mul(&c).unwrap()).unwrap();
    let grads = tape.backward(&y.sum_all().unwrap()).unwrap();
    assert_eq!(grads.get(&x).unwrap().to_vec::<f32>().unwrap(), vec![13.0, 17.0, 32.0]);
    assert!(grads.get(&c).is_none());
    assert_eq!(grads.len(), 1);
    assert!(tape.is_empty(), "backward consumes the tape");
}

#[test]
fn only_inputs_that_need_grad_get_one() {
    let tape = Tape::new();
    let a = tape.leaf(t(&[1.0, 2.0]));
    let b = Var::constant(t(&[3.0, 4.0]));
    let asked = Rc::new(Cell::new(0));
    let seen = asked.clone();
    let need = [a.requires_grad(), b.requires_grad()];
    let y = custom_op(&[&a, &b], a.value().mul(b.value()).unwrap(), move |g| {
        seen.set(seen.get() + 1);
        // Return a gradient for b too: the tape must ignore it.
        Ok(vec![Some(g.clone()), Some(g.clone())])
    })
    .unwrap();
    assert_eq!(need, [true, false]);
    let grads = tape.backward_with(&y, Tensor::ones([2], DType::F32)).unwrap();
    assert_eq!(asked.get(), 1);
    assert!(grads.get(&a).is_some() && grads.get(&b).is_none());
}

#[test]
fn backward_closures_are_dropped_right_after_they_run() {
    // Node 1 saves `saved`; node 2 (recorded later, so run earlier) only watches it. When node 1's
    // backward runs, node 2's closure (and its clone of a big tensor) must already be gone.
    let tape = Tape::new();
    let x = tape.leaf(t(&[1.0, 2.0]));
    let big = Tensor::zeros([1024], DType::F32);
    let big_weak = Arc::downgrade(big.storage());
    let big_seen_alive = Rc::new(Cell::new(true));
    let flag = big_seen_alive.clone();
    let weak_in_first = big_weak.clone();
    let y1 = custom_op(&[&x], x.value().clone(), move |g| {
        flag.set(weak_in_first.upgrade().is_some());
        Ok(vec![Some(g.clone())])
    })
    .unwrap();
    let y2 = custom_op(&[&y1], y1.value().clone(), move |g| {
        let _keep = &big; // saved by this node only
        Ok(vec![Some(g.clone())])
    })
    .unwrap();
    assert!(big_weak.upgrade().is_some(), "node 2 holds the tensor until backward");
    tape.backward_with(&y2, Tensor::ones([2], DType::F32)).unwrap();
    assert!(!big_seen_alive.get(), "node 2's saved tensor was still alive when node 1 ran");
    assert!(big_weak.upgrade().is_none());
}

#[test]
fn saved_tensors_of_unused_nodes_are_freed_by_backward() {
    let tape = Tape::new();
    let x = tape.leaf(t(&[1.0, 2.0]));
    let dead = x.exp().unwrap(); // saves its output; the loss does not use it
    let weak = Arc::downgrade(dead.value().storage());
    drop(dead);
    assert!(weak.upgrade().is_some(), "the tape keeps the saved output");
    let loss = x.sum_all().unwrap();
    tape.backward(&loss).unwrap();
    assert!(weak.upgrade().is_none());
}

#[test]
fn no_grad_records_nothing_and_restores() {
    let tape = Tape::new();
    let x = tape.leaf(t(&[1.0, 2.0]));
    let y = no_grad(|| {
        let inner = no_grad(|| x.exp().unwrap());
        assert!(!autograd::is_grad_enabled());
        inner.mul(&x).unwrap()
    });
    assert!(!y.requires_grad());
    assert!(tape.is_empty());
    assert!(autograd::is_grad_enabled());
    assert!(x.exp().unwrap().requires_grad());
}

#[test]
fn errors_not_panics() {
    let (t1, t2) = (Tape::new(), Tape::new());
    let a = t1.leaf(t(&[1.0]));
    let b = t2.leaf(t(&[2.0]));
    let e = a.add(&b).unwrap_err().to_string();
    assert!(e.contains("add") && e.contains("different tapes"), "{e}");

    let v = t1.leaf(t(&[1.0, 2.0]));
    let y = v.exp().unwrap();
    assert!(t1.backward(&y).unwrap_err().to_string().contains("one element"));
    assert!(t1.backward_with(&y, t(&[1.0])).is_err(), "seed shape must match");
    assert!(t2.backward(&a.sum_all().unwrap()).is_err(), "output on another tape");
    assert!(t1.backward(&Var::constant(Tensor::scalar(1.0))).is_err(), "constant output");

    // A bad custom backward: wrong count, wrong shape, or an error, all name the op.
    let tape = Tape::new();
    let x = tape.leaf(t(&[1.0, 2.0]));
    let y = custom_op(&[&x], x.value().clone(), |_| Ok(vec![])).unwrap();
    assert!(tape.backward(&y.sum_all().unwrap()).unwrap_err().to_string().contains("custom_op"));
    let y = custom_op(&[&x], x.value().clone(), |_| Ok(vec![Some(t(&[1.0]))])).unwrap();
    assert!(tape.backward(&y.sum_all().unwrap()).unwrap_err().to_string().contains("shape"));
    let y = autograd::custom_op_named("nf4_linear", &[&x], x.value().clone(), |_| {
        Err(tensor::Error::invalid("inner", "boom"))
    })
    .unwrap();
    let e = tape.backward(&y.sum_all().unwrap()).unwrap_err().to_string();
    assert!(e.contains("nf4_linear") && e.contains("boom"), "{e}");
}

#[test]
fn grads_refuse_vars_of_other_tapes() {
    let (t1, t2) = (Tape::new(), Tape::new());
    let a = t1.leaf(t(&[1.0]));
    let b = t2.leaf(t(&[1.0])); // same id as `a` on its own tape
    let mut grads = t1.backward(&a.scale(2.0).unwrap().sum_all().unwrap()).unwrap();
    assert!(grads.get(&b).is_none());
    assert_eq!(grads.remove(&a).unwrap().to_vec::<f32>().unwrap(), vec![2.0]);
    assert!(grads.is_empty());
}

#[test]
fn tape_is_reusable_after_backward() {
    let tape = Tape::new();
    let w = tape.leaf(t(&[3.0]));
    for _ in 0..2 {
        let loss = w.sqr().unwrap().sum_all().unwrap();
        let grads = tape.backward(&loss).unwrap();
        assert_eq!(grads.get(&w).unwrap().to_vec::<f32>().unwrap(), vec![6.0]);
    }
}

#[test]
fn gradcheck_catches_a_wrong_backward() {
    // y = x², with a backward that forgets the factor 2.
    let wrong = |v: &[Var]| {
        let x = v[0].value().clone();
        custom_op(&[&v[0]], x.sqr()?, move |g| Ok(vec![Some(g.mul(&x)?)]))
    };
    let right = |v: &[Var]| {
        let x = v[0].value().clone();
        custom_op(&[&v[0]], x.sqr()?, move |g| Ok(vec![Some(g.mul(&x)?.scale(2.0)?)]))
    };
    let x = Tensor::randn([3, 4], 1.0, &mut tensor::Rng::new(7));
    let e = gradcheck(wrong, &[x.clone()], &GradcheckConfig::f32()).unwrap_err().to_string();
    assert!(e.contains("gradient mismatch"), "{e}");
    gradcheck(right, &[x.clone()], &GradcheckConfig::f32()).unwrap();
    // A rule that drops one element's gradient is caught too.
    let sparse_wrong = |v: &[Var]| {
        let x = v[0].value().clone();
        custom_op(&[&v[0]], x.scale(2.0)?, move |g| {
            let mut d = g.scale(2.0)?.to_vec::<f32>()?;
            d[5] = 0.0;
            Ok(vec![Some(Tensor::from_vec(d, g.shape().clone())?)])
        })
    };
    assert!(gradcheck(sparse_wrong, &[x.clone()], &GradcheckConfig::f32()).is_err());
    // The reference mode catches it as well, and checks the forward against the reference.
    let e = autograd::gradcheck_ref(
        wrong,
        |x| x[0].iter().map(|v| v * v).collect(),
        &[x.clone()],
        &GradcheckConfig::f64_ref(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("gradient mismatch"), "{e}");
    let e =
        autograd::gradcheck_ref(right, |x| x[0].iter().map(|v| v * v * v).collect(), &[x], &GradcheckConfig::f64_ref())
            .unwrap_err()
            .to_string();
    assert!(e.contains("forward mismatch"), "{e}");
}
