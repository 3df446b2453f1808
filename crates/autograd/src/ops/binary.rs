//! Broadcasting elementwise binaries: `add`, `sub`, `mul`, `div`. Reference: NumPy broadcasting;
//! the gradient of a broadcast operand is the output gradient summed back to the operand's shape
//! (`Tensor::sum_to`), as in PyTorch's `sum_to_size`. Gradients accumulate (`+=`) on the tape.
//! Deliberately not here: `maximum` (its subgradient at ties is a choice no caller needs).

use super::when;
use crate::tape::record;
use crate::Var;
use tensor::Result;

impl Var {
    /// `self + rhs`, broadcasting.
    pub fn add(&self, rhs: &Var) -> Result<Var> {
        let out = self.value().add(rhs.value())?;
        let (na, nb) = (self.requires_grad(), rhs.requires_grad());
        let (sa, sb) = (self.shape().clone(), rhs.shape().clone());
        record("add", &[self, rhs], out, move |g| Ok(vec![when(na, || g.sum_to(&sa))?, when(nb, || g.sum_to(&sb))?]))
    }

    /// `self - rhs`, broadcasting.
    pub fn sub(&self, rhs: &Var) -> Result<Var> {
        let out = self.value().sub(rhs.value())?;
        let (na, nb) = (self.requires_grad(), rhs.requires_grad());
        let (sa, sb) = (self.shape().clone(), rhs.shape().clone());
        record("sub", &[self, rhs], out, move |g| {
            Ok(vec![when(na, || g.sum_to(&sa))?, when(nb, || g.sum_to(&sb)?.neg())?])
        })
    }

    /// `self * rhs`, broadcasting.
    pub fn mul(&self, rhs: &Var) -> Result<Var> {
        let out = self.value().mul(rhs.value())?;
        let (na, nb) = (self.requires_grad(), rhs.requires_grad());
        let (sa, sb) = (self.shape().clone(), rhs.shape().clone());
        // Each operand is saved only if the other one's gradient needs it.
        let a = nb.then(|| self.value().clone());
        let b = na.then(|| rhs.value().clone());
        record("mul", &[self, rhs], out, move |g| {
            let ga = match &b {
                Some(b) => Some(g.mul(b)?.sum_to(&sa)?),
                None => None,
            };
            let gb = match &a {
                Some(a) => Some(g.mul(a)?.sum_to(&sb)?),
                None => None,
            };
            Ok(vec![ga, gb])
        })
    }

    /// `self / rhs`, broadcasting.
    pub fn div(&self, rhs: &Var) -> Result<Var> {
        let out = self.value().div(rhs.value())?;
        let (na, nb) = (self.requires_grad(), rhs.requires_grad());
        let (sa, sb) = (self.shape().clone(), rhs.shape().clone());
        let b = rhs.value().clone();
        let y = nb.then(|| out.clone());
        record("div", &[self, rhs], out, move |g| {
            let ga = when(na, || g.div(&b)?.sum_to(&sa))?;
            // d(a/b)/db = -a/b² = -y/b.
            let gb = match &y {
                Some(y) => Some(g.mul(y)?.div(&b)?.sum_to(&sb)?.neg()?),
                None => None,
            };
            Ok(vec![ga, gb])
        })
    }
}
