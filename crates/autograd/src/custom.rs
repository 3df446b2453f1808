//! `custom_op`: the public way for other crates to add a differentiable op (the NF4 linear, which
//! returns a gradient for its input only). The op computes its output itself and hands autograd
//! the value plus a backward closure; autograd records it like any built-in op.
//! Deliberately not here: any check that the closure is correct; run [`crate::gradcheck`] on it.

use crate::tape::record;
use crate::Var;
use tensor::{Result, Tensor};

/// Record a differentiable op computed outside autograd.
///
/// `output` is the op's value, already computed from `inputs`' values. `backward` receives the
/// gradient of `output` and returns one entry per input, in order: `Some(grad)` (shaped like that
/// input) or `None`. Entries for inputs that need no gradient are ignored, so return `None` for
/// them (check [`Var::requires_grad`] before the closure to skip the work). Contributions are
/// accumulated (`+=`) into the inputs' gradients.
///
/// When no input requires a gradient, or inside [`crate::no_grad`], nothing is recorded and
/// `backward` is dropped unrun. The closure must capture tensors, not vars (a var would keep its
/// tape alive until backward runs). Errors when inputs are on different tapes.
///
/// ```
/// use autograd::{custom_op, Tape};
/// use tensor::Tensor;
/// let tape = Tape::new();
/// let x = tape.leaf(Tensor::from_vec(vec![1.0f32, -2.0], [2]).unwrap());
/// // y = 3x, written by hand.
/// let y = custom_op(&[&x], x.value().scale(3.0).unwrap(), |g| Ok(vec![Some(g.scale(3.0)?)])).unwrap();
/// let grads = tape.backward_with(&y, Tensor::ones([2], tensor::DType::F32)).unwrap();
/// assert_eq!(grads.get(&x).unwrap().to_vec::<f32>().unwrap(), vec![3.0, 3.0]);
/// ```
pub fn custom_op(
    inputs: &[&Var],
    output: Tensor,
    backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
) -> Result<Var> {
    custom_op_named("custom_op", inputs, output, backward)
}

/// [`custom_op`] with a name that errors from its backward will carry (e.g. `"nf4_linear"`).
pub fn custom_op_named(
    name: &'static str,
    inputs: &[&Var],
    output: Tensor,
    backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + 'static,
) -> Result<Var> {
    record(name, inputs, output, backward)
}
