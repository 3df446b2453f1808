//! `no_grad`: a thread-local switch that stops ops from recording (PyTorch's `torch.no_grad`).
//! Inside it every op returns a constant, so evaluation and checkpoint forwards save nothing.
//! Deliberately per thread and scoped by a closure: there is no global setter to forget to undo.

use std::cell::Cell;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Run `f` with recording off on this thread: ops inside return constants and record no nodes.
/// Nests, and restores the previous state even if `f` panics.
///
/// ```
/// use autograd::{no_grad, Tape};
/// use tensor::Tensor;
/// let tape = Tape::new();
/// let x = tape.leaf(Tensor::from_vec(vec![1.0f32, 2.0], [2]).unwrap());
/// let y = no_grad(|| x.scale(3.0)).unwrap();
/// assert!(!y.requires_grad());
/// assert!(tape.is_empty());
/// ```
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    scoped(false, f)
}

/// False inside [`no_grad`].
pub fn is_grad_enabled() -> bool {
    ENABLED.with(|e| e.get())
}

/// Run `f` with recording on, whatever the caller's state (checkpoint's recompute in backward must
/// record even when backward itself was called inside `no_grad`).
pub(crate) fn with_grad_enabled<R>(f: impl FnOnce() -> R) -> R {
    scoped(true, f)
}

fn scoped<R>(enabled: bool, f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ENABLED.with(|e| e.set(self.0));
        }
    }
    let _restore = Restore(ENABLED.with(|e| e.replace(enabled)));
    f()
}
