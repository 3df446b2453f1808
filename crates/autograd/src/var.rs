//! `Var`: a tensor value plus its place on a tape (tape handle and id), or no tape at all for a
//! constant. Ops on vars live in `ops/`; recording and backward in `tape.rs`, which accumulates
//! (`+=`) gradients into the vars that feed several ops.
//! Deliberately not here: a gradient slot on the var (gradients live in [`crate::Grads`]).

use crate::tape::Tape;
use tensor::{DType, Shape, Tensor};

/// A tensor value that may be on a tape. A var on a tape requires a gradient (a leaf, or the
/// output of an op with such an input); a var without one is a constant.
///
/// Cloning is cheap (the tensor's storage is shared) and the clone is the same variable.
#[derive(Clone)]
pub struct Var {
    pub(crate) value: Tensor,
    /// The tape and this var's id on it; `None` for a constant.
    pub(crate) node: Option<(Tape, usize)>,
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Some((tape, id)) => write!(f, "Var({:?}, tape#{} id {id})", self.value, tape.uid()),
            None => write!(f, "Var({:?}, constant)", self.value),
        }
    }
}

impl Var {
    /// A constant: ops on it record nothing for it and backward gives it no gradient.
    pub fn constant(t: Tensor) -> Var {
        Var { value: t, node: None }
    }
    /// The value.
    pub fn value(&self) -> &Tensor {
        &self.value
    }
    /// Take the value out.
    pub fn into_value(self) -> Tensor {
        self.value
    }
    /// True when the var is on a tape (a gradient flows to it or through it).
    pub fn requires_grad(&self) -> bool {
        self.node.is_some()
    }
    /// The tape this var is on, if any.
    pub fn tape(&self) -> Option<&Tape> {
        self.node.as_ref().map(|(t, _)| t)
    }
    /// The same value as a constant, cut from the tape.
    pub fn detach(&self) -> Var {
        Var::constant(self.value.clone())
    }
    /// The shape of the value.
    pub fn shape(&self) -> &Shape {
        self.value.shape()
    }
    /// The dims of the value.
    pub fn dims(&self) -> &[usize] {
        self.value.dims()
    }
    /// The rank of the value.
    pub fn rank(&self) -> usize {
        self.value.rank()
    }
    /// The dtype of the value.
    pub fn dtype(&self) -> DType {
        self.value.dtype()
    }
    pub(crate) fn id(&self) -> Option<usize> {
        self.node.as_ref().map(|(_, id)| *id)
    }
}
