//! Operations, one folder each (see `docs/ops.md` for the list and contracts): `mod.rs` holds the
//! public op and its device dispatch, `cpu.rs` the fast CPU path with the plain scalar `*_ref`
//! beside it, and the tests compare the two.

pub mod attention;
pub mod binary;
pub mod cast;
pub mod cat;
pub mod copy;
pub mod cross_entropy;
pub mod dropout;
pub(crate) mod fused;
pub mod index;
pub mod matmul;
pub mod reduce;
pub mod rmsnorm;
pub mod rope;
pub mod softmax;
pub mod swiglu;
#[cfg(test)]
pub(crate) mod testing;
pub mod unary;

/// `Error::Device` unless every tensor is on the same device: an op never moves operands
/// between devices itself (call `to_device` first). Without feature `cuda` every tensor is on the
/// CPU and this compiles to nothing.
#[cfg(feature = "cuda")]
pub(crate) fn same_device(op: &str, tensors: &[&crate::Tensor]) -> crate::Result<()> {
    if let Some((first, rest)) = tensors.split_first() {
        let d = first.device();
        if let Some(other) = rest.iter().map(|t| t.device()).find(|&o| o != d) {
            return Err(crate::Error::Device(format!(
                "{op}: operands on different devices, {d:?} and {other:?} (move them with to_device first)"
            )));
        }
    }
    Ok(())
}

#[cfg(not(feature = "cuda"))]
#[inline(always)]
pub(crate) fn same_device(_op: &str, _tensors: &[&crate::Tensor]) -> crate::Result<()> {
    Ok(())
}
