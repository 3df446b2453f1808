//! Shapes and broadcasting (NumPy rules: align from the right, size-1 dims stretch).
//! Shapes come from files we do not trust, so no product of dimensions here can overflow: element
//! counts are checked (`try_elem_count`), and a zero dimension makes the count 0 whatever sits
//! next to it.

use crate::{Error, Result};

/// The dimensions of a tensor, outermost first.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Shape(Vec<usize>);

impl std::fmt::Debug for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Shape {
    /// A shape from its dimensions.
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }
    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements (1 for a scalar, 0 when any dimension is 0). A shape whose count does
    /// not fit in `usize` reports `usize::MAX`, which no storage can hold, so every length check
    /// against it fails; [`try_elem_count`](Self::try_elem_count) turns that into an error.
    pub fn elem_count(&self) -> usize {
        self.checked_elem_count().unwrap_or(usize::MAX)
    }
    /// Number of elements, or an error naming `op` when the product of the dimensions overflows.
    pub fn try_elem_count(&self, op: &'static str) -> Result<usize> {
        self.checked_elem_count()
            .ok_or_else(|| Error::invalid(op, format!("shape {self:?} has more elements than fit in usize")))
    }
    fn checked_elem_count(&self) -> Option<usize> {
        if self.0.contains(&0) {
            return Some(0);
        }
        self.0.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }
    /// Row-major strides of a contiguous tensor of this shape. A stride that would overflow
    /// saturates at `usize::MAX`: that only happens outside a dimension of size 0 (no element is
    /// ever addressed through it) or in a shape whose element count overflows (which no tensor has).
    pub fn contiguous_strides(&self) -> Vec<usize> {
        let mut strides = vec![0; self.0.len()];
        let mut acc = 1usize;
        for (s, &d) in strides.iter_mut().zip(&self.0).rev() {
            *s = acc;
            acc = acc.saturating_mul(d);
        }
        strides
    }
    /// The size of dimension `dim`, or an error naming `op`.
    pub fn dim(&self, op: &'static str, dim: usize) -> Result<usize> {
        self.0.get(dim).copied().ok_or_else(|| Error::DimOutOfRange { op, dim, shape: self.clone() })
    }
    /// The broadcast of two shapes, or a shape error naming `op`.
    pub fn broadcast(op: &'static str, a: &Shape, b: &Shape) -> Result<Shape> {
        let rank = a.rank().max(b.rank());
        let mut out = vec![0; rank];
        for i in 0..rank {
            let da = if i < rank - a.rank() { 1 } else { a.0[i - (rank - a.rank())] };
            let db = if i < rank - b.rank() { 1 } else { b.0[i - (rank - b.rank())] };
            out[i] = match (da, db) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => return Err(Error::ShapeMismatch { op, lhs: a.clone(), rhs: b.clone() }),
            };
        }
        let out = Shape(out);
        out.try_elem_count(op)?;
        Ok(out)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}
impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl From<()> for Shape {
    fn from(_: ()) -> Self {
        Shape(vec![])
    }
}
impl From<usize> for Shape {
    fn from(v: usize) -> Self {
        Shape(vec![v])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUGE: usize = 1 << 40;

    #[test]
    fn a_zero_dim_next_to_huge_dims_counts_zero_without_overflow() {
        for dims in [vec![HUGE, HUGE, 0], vec![0, HUGE, HUGE], vec![HUGE, 0, HUGE], vec![usize::MAX, usize::MAX, 0]] {
            let s = Shape::new(dims.clone());
            assert_eq!(s.elem_count(), 0, "{dims:?}");
            assert_eq!(s.try_elem_count("test").unwrap(), 0, "{dims:?}");
            let strides = s.contiguous_strides();
            assert_eq!(strides.len(), 3);
            assert_eq!(strides[2], 1);
        }
        assert_eq!(Shape::new(vec![0, HUGE, HUGE]).contiguous_strides(), vec![usize::MAX, HUGE, 1]);
        assert_eq!(Shape::new(vec![HUGE, HUGE, 0]).contiguous_strides(), vec![0, 0, 1]);
    }

    #[test]
    fn an_overflowing_count_is_an_error_naming_the_op_and_shape() {
        let s = Shape::new(vec![HUGE, HUGE, 3]);
        assert_eq!(s.elem_count(), usize::MAX);
        let e = s.try_elem_count("from_vec").unwrap_err().to_string();
        assert!(e.contains("from_vec") && e.contains(&HUGE.to_string()), "{e}");
        assert_eq!(Shape::new(vec![2, 3, 4]).try_elem_count("t").unwrap(), 24);
        assert_eq!(Shape::new(vec![]).try_elem_count("t").unwrap(), 1);
        assert_eq!(Shape::new(vec![2, 3, 4]).contiguous_strides(), vec![12, 4, 1]);
        // Broadcasting [HUGE, 1] with [1, HUGE] would describe 2^80 elements.
        let e = Shape::broadcast("add", &Shape::new(vec![HUGE, 1]), &Shape::new(vec![1, HUGE])).unwrap_err();
        assert!(e.to_string().contains("add"), "{e}");
        assert_eq!(
            Shape::broadcast("add", &Shape::new(vec![0, 1]), &Shape::new(vec![1, HUGE])).unwrap().dims(),
            [0, HUGE]
        );
    }
}
