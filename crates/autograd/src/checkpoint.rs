//! Gradient checkpointing: trade compute for memory by saving only a block's inputs and re-running
//! the block in backward (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost";
//! PyTorch's `torch.utils.checkpoint`).
//!
//! Design: the block is a function of its `inputs` (activations) and its `params` (trainable vars
//! such as LoRA weights, which live on the OUTER tape). Both are passed explicitly and rebound
//! inside: the forward runs `f` on a discarding tape (vars join it, nodes are dropped at once, so
//! nothing is saved), and the one outer node's backward re-runs `f` on a fresh inner tape with
//! fresh leaves for every input and param that requires a gradient, backpropagates the incoming
//! gradient through it, and hands the leaves' gradients back to the outer tape, where they
//! accumulate (`+=`) like any other op's. A trainable var captured by `f` from outside instead of
//! passed in `params` would meet the rebound vars in some op and fail with a "different tapes"
//! error (already in the forward pass) rather than silently lose its gradient.
//!
//! Deliberately not here: RNG state replay. `f` must be deterministic (seed any dropout from
//! captured state), or backward differentiates a different function from the one run forward.

use crate::grad_mode;
use crate::tape::{common_tape, record, Tape};
use crate::Var;
use tensor::{Error, Result, Tensor};

/// Run `f(inputs, params)` without saving its activations; backward re-runs it.
///
/// `f` receives vars with the same values as `inputs` and `params` (rebound on an inner tape) and
/// must build its output only from them and from constants. Returns a var on the outer tape whose
/// backward yields gradients for every input and param that requires one. With nothing to
/// differentiate (or inside [`crate::no_grad`]) it is simply `f(inputs, params)`.
///
/// ```
/// use autograd::{checkpoint, Tape};
/// use tensor::Tensor;
/// let tape = Tape::new();
/// let x = tape.leaf(Tensor::from_vec(vec![1.0f32, 2.0], [1, 2]).unwrap());
/// let w = tape.leaf(Tensor::from_vec(vec![0.5f32, -1.0], [2, 1]).unwrap());
/// let y = checkpoint(&[&x], &[&w], |xs, ps| xs[0].matmul(&ps[0])?.silu()).unwrap();
/// let grads = tape.backward(&y.sum_all().unwrap()).unwrap();
/// assert!(grads.get(&x).is_some() && grads.get(&w).is_some());
/// ```
pub fn checkpoint<F>(inputs: &[&Var], params: &[&Var], f: F) -> Result<Var>
where
    F: Fn(&[Var], &[Var]) -> Result<Var> + 'static,
{
    let all: Vec<&Var> = inputs.iter().chain(params).copied().collect();
    if common_tape("checkpoint", &all)?.is_none() {
        let xs: Vec<Var> = inputs.iter().map(|v| (*v).clone()).collect();
        let ps: Vec<Var> = params.iter().map(|v| (*v).clone()).collect();
        return f(&xs, &ps);
    }

    let fwd = Tape::discarding();
    let value = {
        let (xs, ps) = (rebind(&fwd, inputs), rebind(&fwd, params));
        let out = f(&xs, &ps)?;
        check_output(&fwd, &out)?;
        out.into_value()
    };

    // The backward keeps each value and whether it wants a gradient, not the outer var itself
    // (which would keep the outer tape alive from inside one of its own nodes).
    let saved_x: Vec<(Tensor, bool)> = inputs.iter().map(|v| (v.value().clone(), v.requires_grad())).collect();
    let saved_p: Vec<(Tensor, bool)> = params.iter().map(|v| (v.value().clone(), v.requires_grad())).collect();
    record("checkpoint", &all, value, move |g| {
        grad_mode::with_grad_enabled(|| {
            let inner = Tape::new();
            let (xs, ps) = (rebind_saved(&inner, &saved_x), rebind_saved(&inner, &saved_p));
            let out = f(&xs, &ps)?;
            check_output(&inner, &out)?;
            let n = xs.len() + ps.len();
            if !out.requires_grad() {
                return Ok(vec![None; n]);
            }
            let mut grads = inner.backward_with(&out, g.clone())?;
            Ok(xs.iter().chain(&ps).map(|v| grads.remove(v)).collect())
        })
    })
}

/// Vars with the same values: a fresh leaf on `tape` for each var that requires a gradient, the
/// constant itself otherwise.
fn rebind(tape: &Tape, vars: &[&Var]) -> Vec<Var> {
    vars.iter().map(|v| if v.requires_grad() { tape.leaf(v.value().clone()) } else { (*v).clone() }).collect()
}

fn rebind_saved(tape: &Tape, saved: &[(Tensor, bool)]) -> Vec<Var> {
    saved.iter().map(|(t, g)| if *g { tape.leaf(t.clone()) } else { Var::constant(t.clone()) }).collect()
}

fn check_output(tape: &Tape, out: &Var) -> Result<()> {
    match out.tape() {
        Some(t) if !t.same(tape) => Err(Error::invalid(
            "checkpoint",
            "f returned a var on another tape; pass captured trainable vars as `params`",
        )),
        _ => Ok(()),
    }
}
