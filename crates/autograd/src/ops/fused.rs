//! The fused Llama ops, each one node around tensor's hand-written `fwd`/`bwd` pair (llm.c's
//! `x_forward`/`x_backward`): `rmsnorm`, `rope`, `swiglu`, `attention` (causal, GQA) and
//! `cross_entropy`. The node saves exactly what the `bwd` takes (the inputs plus the forward's
//! `rstd`/`lse`/`out`). Gradients accumulate (`+=`) on the tape.
//! Deliberately not here: gradients for the rope tables, targets or ids (constants by design).

use crate::tape::record;
use crate::Var;
use tensor::ops::{attention as tattn, cross_entropy as tce, rmsnorm as trms, rope as trope, swiglu as tswiglu};
use tensor::{Error, Result, Tensor};

/// RMSNorm over the last dim: `x (.., C)`, weight `w (C,)`, `x·rsqrt(mean(x²) + eps)·w`.
pub fn rmsnorm(x: &Var, w: &Var, eps: f32) -> Result<Var> {
    let (y, rstd) = trms::fwd(x.value(), w.value(), eps)?;
    let (xs, ws) = (x.value().clone(), w.value().clone());
    let (nx, nw) = (x.requires_grad(), w.requires_grad());
    record("rmsnorm", &[x, w], y, move |g| {
        let (dx, dw) = trms::bwd(g, &xs, &ws, &rstd)?;
        Ok(vec![nx.then_some(dx), nw.then_some(dw)])
    })
}

/// Rotary embedding of `x (B, H, T, D)` with tables `cos`, `sin (T, D/2)` from
/// `tensor::ops::rope::tables`. The backward is the inverse rotation.
pub fn rope(x: &Var, cos: &Tensor, sin: &Tensor) -> Result<Var> {
    let y = trope::fwd(x.value(), cos, sin)?;
    let (cos, sin) = (cos.clone(), sin.clone());
    record("rope", &[x], y, move |g| Ok(vec![Some(trope::bwd(g, &cos, &sin)?)]))
}

/// `silu(gate)·up` for two tensors of the same shape.
pub fn swiglu(gate: &Var, up: &Var) -> Result<Var> {
    let y = tswiglu::fwd(gate.value(), up.value())?;
    let (gs, us) = (gate.value().clone(), up.value().clone());
    let (ng, nu) = (gate.requires_grad(), up.requires_grad());
    record("swiglu", &[gate, up], y, move |g| {
        let (dgate, dup) = tswiglu::bwd(g, &gs, &us)?;
        Ok(vec![ng.then_some(dgate), nu.then_some(dup)])
    })
}

/// Causal attention `softmax(q·kᵀ·scale + mask)·v` with `q (B, Hq, T, D)`, `k`, `v (B, Hkv, S, D)`,
/// the query block at the end of the keys, and grouped-query heads (`Hq % Hkv == 0`).
pub fn attention(q: &Var, k: &Var, v: &Var, scale: f32) -> Result<Var> {
    let (out, lse) = tattn::fwd(q.value(), k.value(), v.value(), scale)?;
    let (qs, ks, vs, os) = (q.value().clone(), k.value().clone(), v.value().clone(), out.clone());
    let need = [q.requires_grad(), k.requires_grad(), v.requires_grad()];
    record("attention", &[q, k, v], out, move |g| {
        let (dq, dk, dv) = tattn::bwd(g, &qs, &ks, &vs, &os, &lse, scale)?;
        Ok(vec![need[0].then_some(dq), need[1].then_some(dk), need[2].then_some(dv)])
    })
}

/// A LoRA adapter on a frozen projection, as one node: `base + scale·(x·Aᵀ)·Bᵀ` for
/// `base (N, out)` (the frozen layer's output), `x (N, in)` (its input after dropout), `A (r, in)`,
/// `B (out, r)`. The rank-r intermediate is scaled (not the N×out product) and the product is
/// accumulated into `base` (in place when `base` holds the only reference to its value, else into
/// a copy: one output pass instead of matmul, scale and add); backward
/// runs at rank r throughout. Reference: PEFT `lora.Linear.forward`
/// (`result + lora_B(lora_A(dropout(x))) * scaling`).
pub fn lora(base: Var, x: &Var, a: &Var, b: &Var, scale: f32) -> Result<Var> {
    let bad = || {
        Error::invalid(
            "lora",
            format!(
                "needs base (N, out), x (N, in), A (r, in), B (out, r); got {:?}, {:?}, {:?}, {:?}",
                base.dims(),
                x.dims(),
                a.dims(),
                b.dims()
            ),
        )
    };
    let [(n, out), (nx, inp), (r, ina), (outb, rb)] = [&base, x, a, b].map(|v| match v.dims() {
        [p, q] => (*p, *q),
        _ => (usize::MAX, 0),
    });
    if n == usize::MAX || nx != n || ina != inp || outb != out || rb != r {
        return Err(bad());
    }
    // u = scale·x·Aᵀ (N, r) is small; the product with Bᵀ accumulates straight into base (in
    // place when the caller handed over the only reference, else into a copy).
    let u = x.value().matmul(&a.value().t()?)?.scale(scale)?;
    let Var { value: base_value, node: base_node } = base;
    let y = base_value.addmm_into(&u, &b.value().t()?, 1.0)?;
    // The tape needs only base's id and shape (= y's).
    let base = Var { value: y.clone(), node: base_node };
    let (gx, ga, gb) = (x.requires_grad(), a.requires_grad(), b.requires_grad());
    let xv = ga.then(|| x.value().clone());
    let av = gx.then(|| a.value().clone());
    let bv = (gx || ga).then(|| b.value().clone());
    let us = gb.then_some(u);
    record("lora", &[&base, x, a, b], y, move |g| {
        // gu = scale·g·B (N, r); dx = gu·A, dA = guᵀ·x, dB = gᵀ·u (u already carries the scale).
        let gu = match &bv {
            Some(b) => Some(g.matmul(b)?.scale(scale)?),
            None => None,
        };
        let dx = match (&gu, &av) {
            (Some(gu), Some(a)) => Some(gu.matmul(a)?),
            _ => None,
        };
        let da = match (&gu, &xv) {
            (Some(gu), Some(x)) => Some(gu.t()?.matmul(x)?),
            _ => None,
        };
        let db = match &us {
            Some(u) => Some(g.t()?.matmul(u)?),
            None => None,
        };
        Ok(vec![Some(g.clone()), dx, da, db])
    })
}

/// Cross-entropy of `logits (.., V)` against `targets (..)` (I32), as a 0-dim f32 loss
/// `Σ_rows −log softmax(logits)[target] / normaliser`. Rows whose target is `ignore_index`
/// contribute nothing. `normaliser` defaults to the number of non-ignored rows (the mean; 1 when
/// every row is ignored, giving loss 0). Pass the total token count of all micro-batches to make
/// gradient accumulation match one big batch.
pub fn cross_entropy(logits: &Var, targets: &Tensor, ignore_index: i32, normaliser: Option<f32>) -> Result<Var> {
    let dims = logits.dims().to_vec();
    let Some((&v, rows)) = dims.split_last() else {
        return Err(Error::invalid("cross_entropy", "logits must have rank >= 1"));
    };
    let n: usize = rows.iter().product();
    if targets.elem_count() != n {
        return Err(Error::ShapeMismatch {
            op: "cross_entropy",
            lhs: logits.shape().clone(),
            rhs: targets.shape().clone(),
        });
    }
    let (l2, t1) = (logits.value().reshape([n, v])?, targets.reshape(n)?);
    let shape = logits.shape().clone();
    let bad_norm =
        |norm: f32| Error::invalid("cross_entropy", format!("normaliser must be finite and > 0, got {norm}"));
    if logits.requires_grad() && crate::is_grad_enabled() {
        // The loss is the last op: compute the gradient for an upstream 1 in the same pass over
        // the logits (one exp per logit), and only rescale in backward if the upstream is not 1.
        let mut norm = 1.0f32;
        let (loss_sum, _, dl) = tce::fwd_grad(&l2, &t1, ignore_index, |count| {
            norm = normaliser.unwrap_or(count.max(1) as f32);
            1.0 / norm
        })?;
        if !(norm.is_finite() && norm > 0.0) {
            return Err(bad_norm(norm));
        }
        let loss = loss_sum.reshape(())?.scale(1.0 / norm)?;
        return record("cross_entropy", &[logits], loss, move |g| {
            let up = g.to_scalar()?;
            let dl = if up == 1.0 { dl } else { dl.scale(up)? };
            Ok(vec![Some(dl.reshape(shape)?)])
        });
    }
    let (loss_sum, count, lse) = tce::fwd(&l2, &t1, ignore_index)?;
    let norm = normaliser.unwrap_or(count.max(1) as f32);
    if !(norm.is_finite() && norm > 0.0) {
        return Err(bad_norm(norm));
    }
    let loss = loss_sum.reshape(())?.scale(1.0 / norm)?;
    record("cross_entropy", &[logits], loss, move |g| {
        // The upstream gradient is a scalar; reading it back is one element per step.
        let scale = g.to_scalar()? / norm;
        Ok(vec![Some(tce::bwd(&l2, &t1, &lse, ignore_index, scale)?.reshape(shape)?)])
    })
}
