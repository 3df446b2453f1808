//! The tape, the one reverse loop that runs it, and the gradients it returns ([`Grads`]).
//!
//! A [`Tape`] is a value: a `Vec` of backward closures in execution order (dfdx's `OwnedTape`,
//! micrograd's `_backward`), so backward needs no graph sort. An op records a node only when one of
//! its inputs is on a tape and recording is enabled (ggml's `grads_needed`). Backward accumulates
//! (`+=`) into gradients: a var that feeds several ops receives the sum of their contributions.
//! Each closure is `FnOnce` and is dropped the moment it has run, so the tensors it saved are freed
//! as early as possible; an intermediate gradient is dropped once the node that produced its var
//! has consumed it.
//!
//! Deliberately not here: higher-order gradients (backward closures work on tensors, not vars),
//! thread safety (a tape is `Rc<RefCell<..>>`; one tape per training thread), and op rules
//! (`ops/`).

use crate::grad_mode;
use crate::var::Var;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use tensor::{Error, Result, Shape, Tensor};

/// What a node runs in backward: the gradient of its output in, one optional gradient per input
/// out (in the order the inputs were given when the node was recorded).
pub(crate) type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>>>;

/// One recorded op.
struct Node {
    op: &'static str,
    /// Id of the var this node produced.
    out: usize,
    /// Per input: its id and shape when it needs a gradient, `None` when it does not.
    inputs: Vec<Option<(usize, Shape)>>,
    backward: BackwardFn,
}

struct TapeInner {
    nodes: Vec<Node>,
    next_id: usize,
    leaves: HashSet<usize>,
    /// When false, nodes are dropped at once instead of stored (the forward pass of
    /// [`crate::checkpoint`]): vars still join the tape, so mixing tapes is still an error.
    keep_nodes: bool,
}

/// A handle to a tape of recorded ops. Cloning is cheap (a reference count) and every clone is
/// the same tape. Single-threaded by design.
#[derive(Clone)]
pub struct Tape {
    inner: Rc<RefCell<TapeInner>>,
    /// Unique per tape in this process, so [`Grads`] can refuse vars of another tape.
    uid: u64,
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tape#{}({} nodes)", self.uid, self.len())
    }
}

impl Default for Tape {
    fn default() -> Self {
        Self::new()
    }
}

static NEXT_TAPE: AtomicU64 = AtomicU64::new(1);

impl Tape {
    /// An empty tape.
    pub fn new() -> Self {
        Self::with_mode(true)
    }

    /// A tape that records nothing but still owns vars (checkpoint's forward pass).
    pub(crate) fn discarding() -> Self {
        Self::with_mode(false)
    }

    fn with_mode(keep_nodes: bool) -> Self {
        let inner = TapeInner { nodes: Vec::new(), next_id: 0, leaves: HashSet::new(), keep_nodes };
        Tape { inner: Rc::new(RefCell::new(inner)), uid: NEXT_TAPE.fetch_add(1, Ordering::Relaxed) }
    }

    /// A trainable variable on this tape: backward computes its gradient.
    pub fn leaf(&self, t: Tensor) -> Var {
        let mut inner = self.inner.borrow_mut();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.leaves.insert(id);
        Var { value: t, node: Some((self.clone(), id)) }
    }

    /// Number of nodes recorded and not yet run by a backward pass.
    pub fn len(&self) -> usize {
        self.inner.borrow().nodes.len()
    }

    /// True when no node is waiting for a backward pass.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// This tape's process-unique number (shown in Debug output).
    pub(crate) fn uid(&self) -> u64 {
        self.uid
    }

    /// True when both handles are the same tape.
    pub fn same(&self, other: &Tape) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// Append a node producing `out` from `inputs` and return the output var (internal; ops and
    /// [`crate::custom_op`] call this through [`record`]).
    fn push(&self, op: &'static str, inputs: Vec<Option<(usize, Shape)>>, out: Tensor, backward: BackwardFn) -> Var {
        crate::profile::forward(op);
        let mut inner = self.inner.borrow_mut();
        let id = inner.next_id;
        inner.next_id += 1;
        if inner.keep_nodes {
            inner.nodes.push(Node { op, out: id, inputs, backward });
        }
        Var { value: out, node: Some((self.clone(), id)) }
    }

    /// Backpropagate from a scalar (one-element) `loss`, seeded with 1.
    ///
    /// Runs every node recorded so far, in reverse, and empties the tape (so it can be reused for
    /// the next step; after an error it is empty too). Returns the gradients of the leaves that
    /// `loss` depends on; intermediate gradients are freed as soon as they have been used.
    pub fn backward(&self, loss: &Var) -> Result<Grads> {
        if loss.value.elem_count() != 1 {
            return Err(Error::invalid(
                "backward",
                format!("loss must have one element, got shape {:?}; use backward_with", loss.value.shape()),
            ));
        }
        let seed = Tensor::ones(loss.value.shape().clone(), loss.value.dtype());
        self.backward_with(loss, seed)
    }

    /// Backpropagate from `out` seeded with `grad` (same shape as `out`), i.e. compute the
    /// vector–Jacobian product `gradᵀ · ∂out/∂leaf` for every leaf. Empties the tape.
    pub fn backward_with(&self, out: &Var, grad: Tensor) -> Result<Grads> {
        let out_id = match &out.node {
            Some((tape, id)) if tape.same(self) => *id,
            Some(_) => return Err(Error::invalid("backward", "the output var belongs to another tape")),
            None => return Err(Error::invalid("backward", "the output var is a constant (no input requires grad)")),
        };
        if grad.shape() != out.value.shape() {
            return Err(Error::ShapeMismatch {
                op: "backward",
                lhs: out.value.shape().clone(),
                rhs: grad.shape().clone(),
            });
        }
        // Take the nodes out so closures may use other tapes (checkpoint) without a borrow clash.
        let mut nodes = std::mem::take(&mut self.inner.borrow_mut().nodes);
        let mut grads: HashMap<usize, Tensor> = HashMap::new();
        grads.insert(out_id, grad);
        while let Some(node) = nodes.pop() {
            let Node { op, out, inputs, backward } = node;
            let Some(g) = grads.remove(&out) else {
                continue; // `out` does not depend on this node; dropping it frees what it saved.
            };
            let t0 = crate::profile::is_on().then(std::time::Instant::now);
            let input_grads = backward(&g).map_err(|e| Error::invalid(op, format!("backward: {e}")))?;
            if let Some(t0) = t0 {
                crate::profile::backward(op, t0.elapsed());
            }
            drop(g);
            if input_grads.len() != inputs.len() {
                return Err(Error::invalid(
                    op,
                    format!("backward returned {} gradients for {} inputs", input_grads.len(), inputs.len()),
                ));
            }
            for (slot, gi) in inputs.into_iter().zip(input_grads) {
                let (Some((id, shape)), Some(gi)) = (slot, gi) else {
                    continue;
                };
                if gi.shape() != &shape {
                    return Err(Error::invalid(
                        op,
                        format!(
                            "backward returned a gradient of shape {:?} for an input of shape {shape:?}",
                            gi.shape()
                        ),
                    ));
                }
                accumulate(&mut grads, id, gi)?;
            }
        }
        let leaves = &self.inner.borrow().leaves;
        let mut map = HashMap::with_capacity(grads.len());
        for (id, g) in grads {
            if leaves.contains(&id) {
                map.insert(id, g.contiguous()?);
            }
        }
        Ok(Grads { tape_uid: self.uid, map })
    }
}

/// `grads[id] += g`.
fn accumulate(grads: &mut HashMap<usize, Tensor>, id: usize, g: Tensor) -> Result<()> {
    let sum = match grads.remove(&id) {
        Some(prev) => add_grads(&prev, &g)?,
        None => g,
    };
    grads.insert(id, sum);
    Ok(())
}

fn add_grads(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() != b.dtype() {
        return Err(Error::DTypeMismatch { op: "backward (accumulate)", lhs: a.dtype(), rhs: b.dtype() });
    }
    a.add(b)
}

/// The gradients a backward pass produced, keyed by leaf.
#[derive(Debug)]
pub struct Grads {
    tape_uid: u64,
    map: HashMap<usize, Tensor>,
}

impl Grads {
    /// The gradient of leaf `v`; `None` if `v` is a constant, is not a leaf, belongs to another
    /// tape, or the output does not depend on it. Gradients are contiguous.
    pub fn get(&self, v: &Var) -> Option<&Tensor> {
        self.key(v).and_then(|id| self.map.get(&id))
    }

    /// Take the gradient of `v` out (no copy).
    pub fn remove(&mut self, v: &Var) -> Option<Tensor> {
        self.key(v).and_then(|id| self.map.remove(&id))
    }

    /// Number of leaves with a gradient.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no leaf received a gradient.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn key(&self, v: &Var) -> Option<usize> {
        match &v.node {
            Some((tape, id)) if tape.uid == self.tape_uid => Some(*id),
            _ => None,
        }
    }
}

/// The tape `inputs` share, or `None` when none is on a tape or recording is off (no_grad).
/// Errors when inputs are on two different tapes.
pub(crate) fn common_tape(op: &'static str, inputs: &[&Var]) -> Result<Option<Tape>> {
    if !grad_mode::is_grad_enabled() {
        return Ok(None);
    }
    let mut found: Option<&Tape> = None;
    for v in inputs {
        if let Some(t) = v.tape() {
            match found {
                Some(f) if !f.same(t) => {
                    return Err(Error::invalid(
                        op,
                        "inputs are on different tapes (inside checkpoint, pass captured trainable vars as `params`)",
                    ))
                }
                _ => found = Some(t),
            }
        }
    }
    Ok(found.cloned())
}

/// Record `op` with output value `out`: on the inputs' tape if any input requires a gradient and
/// recording is on, otherwise return a constant and drop `backward` unrun.
///
/// `backward` gets the output's gradient and returns one entry per input; entries for inputs that
/// need no gradient are ignored (return `None` for them to skip the work).
pub(crate) fn record(
    op: &'static str,
    inputs: &[&Var],
    out: Tensor,
    backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
) -> Result<Var> {
    let Some(tape) = common_tape(op, inputs)? else {
        return Ok(Var::constant(out));
    };
    let slots = inputs.iter().map(|v| v.id().map(|id| (id, v.value.shape().clone()))).collect();
    Ok(tape.push(op, slots, out, Box::new(backward)))
}
