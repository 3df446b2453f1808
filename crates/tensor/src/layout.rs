//! Strided views: a shape, per-dimension strides (in elements) and a start offset into storage.
//! Transpose, narrow and broadcast change only the layout; nothing is copied until an op needs a
//! contiguous operand.

use crate::{Error, Result, Shape};

/// How a tensor's elements sit in its storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    shape: Shape,
    strides: Vec<usize>,
    offset: usize,
}

impl Layout {
    /// A row-major contiguous layout starting at element 0.
    pub fn contiguous(shape: impl Into<Shape>) -> Self {
        let shape = shape.into();
        let strides = shape.contiguous_strides();
        Layout { shape, strides, offset: 0 }
    }
    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
    /// Strides in elements (0 for a broadcast dimension).
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    /// First element's index in storage.
    pub fn offset(&self) -> usize {
        self.offset
    }
    /// True when the elements are row-major and dense, so `storage[offset..offset+n]` is the tensor.
    pub fn is_contiguous(&self) -> bool {
        let mut acc = 1;
        for (&d, &s) in self.shape.dims().iter().zip(&self.strides).rev() {
            if d != 1 && s != acc {
                return false;
            }
            acc = acc.saturating_mul(d);
        }
        true
    }
    /// The contiguous range in storage, if the layout is contiguous.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<usize>> {
        self.is_contiguous().then(|| self.offset..self.offset + self.shape.elem_count())
    }
    /// Swap two dimensions (a view).
    pub fn transpose(&self, d0: usize, d1: usize) -> Result<Self> {
        let rank = self.shape.rank();
        for d in [d0, d1] {
            if d >= rank {
                return Err(Error::DimOutOfRange { op: "transpose", dim: d, shape: self.shape.clone() });
            }
        }
        let mut dims = self.shape.dims().to_vec();
        let mut strides = self.strides.clone();
        dims.swap(d0, d1);
        strides.swap(d0, d1);
        Ok(Layout { shape: Shape::new(dims), strides, offset: self.offset })
    }
    /// Keep `len` indices of dimension `dim` starting at `start` (a view).
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Self> {
        let size = self.shape.dim("narrow", dim)?;
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::invalid(
                "narrow",
                format!(
                    "range {start}..{} out of bounds for dim {dim} of shape {:?}",
                    start.saturating_add(len),
                    self.shape
                ),
            ));
        }
        let mut dims = self.shape.dims().to_vec();
        dims[dim] = len;
        let shape = Shape::new(dims);
        // An empty view addresses nothing: keep the offset rather than compute a meaningless one.
        let offset = if shape.elem_count() == 0 {
            self.offset
        } else {
            start.checked_mul(self.strides[dim]).and_then(|o| o.checked_add(self.offset)).ok_or_else(|| {
                Error::invalid("narrow", format!("start {start} of dim {dim} of {:?} overflows the offset", self.shape))
            })?
        };
        Ok(Layout { shape, strides: self.strides.clone(), offset })
    }
    /// View as `shape`, stretching size-1 (or missing leading) dimensions with stride 0.
    pub fn broadcast_as(&self, shape: &Shape) -> Result<Self> {
        let err = || Error::ShapeMismatch { op: "broadcast_as", lhs: self.shape.clone(), rhs: shape.clone() };
        if shape.rank() < self.shape.rank() {
            return Err(err());
        }
        let extra = shape.rank() - self.shape.rank();
        let mut strides = vec![0; shape.rank()];
        for (i, &d) in shape.dims().iter().enumerate() {
            if i < extra {
                continue;
            }
            let src = self.shape.dims()[i - extra];
            strides[i] = if src == d {
                self.strides[i - extra]
            } else if src == 1 {
                0
            } else {
                return Err(err());
            };
        }
        Ok(Layout { shape: shape.clone(), strides, offset: self.offset })
    }
    /// A contiguous layout reshaped to `shape` (caller guarantees contiguity and element count).
    pub(crate) fn reshaped(&self, shape: Shape) -> Self {
        let strides = shape.contiguous_strides();
        Layout { shape, strides, offset: self.offset }
    }
    /// Storage index of every element in row-major order.
    pub fn indices(&self) -> StridedIndex<'_> {
        StridedIndex::new(self)
    }
}

/// Iterator over storage indices of a strided layout, in row-major element order.
pub struct StridedIndex<'a> {
    layout: &'a Layout,
    pos: Vec<usize>,
    next: Option<usize>,
}

impl<'a> StridedIndex<'a> {
    fn new(layout: &'a Layout) -> Self {
        let next = (layout.shape.elem_count() > 0).then_some(layout.offset);
        StridedIndex { layout, pos: vec![0; layout.shape.rank()], next }
    }
}

impl Iterator for StridedIndex<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let cur = self.next?;
        let dims = self.layout.shape.dims();
        let strides = &self.layout.strides;
        let mut idx = cur;
        let mut d = dims.len();
        loop {
            if d == 0 {
                self.next = None;
                break;
            }
            d -= 1;
            self.pos[d] += 1;
            idx += strides[d];
            if self.pos[d] < dims[d] {
                self.next = Some(idx);
                break;
            }
            idx -= strides[d] * dims[d];
            self.pos[d] = 0;
        }
        Some(cur)
    }
}

impl Layout {
    /// A layout from raw parts (used by squeeze/unsqueeze, which keep strides valid).
    pub(crate) fn from_parts(shape: Shape, strides: Vec<usize>, offset: usize) -> Self {
        Layout { shape, strides, offset }
    }
}
