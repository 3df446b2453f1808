//! `matmul`: `(.., M, K) x (.., K, N) -> (.., M, N)` with broadcast batch dims. Backward
//! `dA = dC·Bᵀ`, `dB = Aᵀ·dC` through transposed views (no copies), each summed back over the
//! batch dims its operand was broadcast along. Gradients accumulate (`+=`) on the tape.
//! Deliberately not here: rank-1 operands (vector products); reshape to `(1, K)` first.

use crate::tape::record;
use crate::Var;
use tensor::Result;

impl Var {
    /// Matrix product over the last two dims, broadcasting the batch dims.
    pub fn matmul(&self, rhs: &Var) -> Result<Var> {
        let out = self.value().matmul(rhs.value())?;
        let (na, nb) = (self.requires_grad(), rhs.requires_grad());
        let (sa, sb) = (self.shape().clone(), rhs.shape().clone());
        let a = nb.then(|| self.value().clone());
        let b = na.then(|| rhs.value().clone());
        record("matmul", &[self, rhs], out, move |g| {
            let ga = match &b {
                Some(b) => Some(g.matmul(&b.t()?)?.sum_to(&sa)?),
                None => None,
            };
            let gb = match &a {
                Some(a) => Some(a.t()?.matmul(g)?.sum_to(&sb)?),
                None => None,
            };
            Ok(vec![ga, gb])
        })
    }
}
