//! Strided → contiguous copies (what `Tensor::contiguous` runs). The innermost dimension is copied
//! as a run when its stride is 1.

use crate::Layout;

/// Copy the elements of `layout` out of `src` into a new row-major vector.
pub fn strided_copy<T: Copy>(src: &[T], layout: &Layout) -> Vec<T> {
    let dims = layout.shape().dims();
    let n = layout.shape().elem_count();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    if let Some(r) = layout.contiguous_range() {
        out.extend_from_slice(&src[r]);
        return out;
    }
    let rank = dims.len();
    let (inner, inner_stride) = (dims[rank - 1], layout.strides()[rank - 1]);
    let outer = Layout::from_parts(
        crate::Shape::new(dims[..rank - 1].to_vec()),
        layout.strides()[..rank - 1].to_vec(),
        layout.offset(),
    );
    for start in outer.indices() {
        if inner_stride == 1 {
            out.extend_from_slice(&src[start..start + inner]);
        } else {
            out.extend((0..inner).map(|k| src[start + k * inner_stride]));
        }
    }
    out
}

/// The plain reference: one element at a time through the strided index iterator.
pub fn strided_copy_ref<T: Copy>(src: &[T], layout: &Layout) -> Vec<T> {
    layout.indices().map(|i| src[i]).collect()
}
