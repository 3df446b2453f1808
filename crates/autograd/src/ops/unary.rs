//! Elementwise maps: `exp`, `log`, `sqrt`, `rsqrt`, `neg`, `sqr`, `recip`, `silu`, `affine`,
//! `scale`, `powf`. Each backward multiplies the incoming gradient by the map's derivative,
//! written through whichever of input or output is cheaper (`exp`: `y`, `log`: `1/x`), and saves
//! only that one; gradients accumulate (`+=`) on the tape.
//! Deliberately not here: integer dtypes (indices are not values).

use crate::tape::record;
use crate::Var;
use tensor::{Result, Tensor};

/// Which tensor a map's derivative is written in.
enum Saved {
    Input,
    Output,
    Nothing,
}

impl Var {
    /// One-input op: `fwd` on the value; `bwd(g, s)` with `s` the saved input or output.
    fn map(
        &self,
        op: &'static str,
        fwd: impl FnOnce(&Tensor) -> Result<Tensor>,
        saved: Saved,
        bwd: impl FnOnce(&Tensor, Option<&Tensor>) -> Result<Tensor> + 'static,
    ) -> Result<Var> {
        let y = fwd(self.value())?;
        let s = match saved {
            Saved::Input => Some(self.value().clone()),
            Saved::Output => Some(y.clone()),
            Saved::Nothing => None,
        };
        record(op, &[self], y, move |g| Ok(vec![Some(bwd(g, s.as_ref())?)]))
    }

    /// `e^x`.
    pub fn exp(&self) -> Result<Var> {
        self.map("exp", Tensor::exp, Saved::Output, |g, y| g.mul(saved(y)?))
    }
    /// Natural log.
    pub fn log(&self) -> Result<Var> {
        self.map("log", Tensor::log, Saved::Input, |g, x| g.div(saved(x)?))
    }
    /// `√x`; the derivative is `1/(2y)`.
    pub fn sqrt(&self) -> Result<Var> {
        self.map("sqrt", Tensor::sqrt, Saved::Output, |g, y| g.div(saved(y)?)?.scale(0.5))
    }
    /// `1/√x`; the derivative is `−y³/2`.
    pub fn rsqrt(&self) -> Result<Var> {
        self.map("rsqrt", Tensor::rsqrt, Saved::Output, |g, y| {
            let y = saved(y)?;
            g.mul(&y.sqr()?.mul(y)?)?.scale(-0.5)
        })
    }
    /// `−x`.
    pub fn neg(&self) -> Result<Var> {
        self.map("neg", Tensor::neg, Saved::Nothing, |g, _| g.neg())
    }
    /// `x²`.
    pub fn sqr(&self) -> Result<Var> {
        self.map("sqr", Tensor::sqr, Saved::Input, |g, x| g.mul(saved(x)?)?.scale(2.0))
    }
    /// `1/x`; the derivative is `−y²`.
    pub fn recip(&self) -> Result<Var> {
        self.map("recip", Tensor::recip, Saved::Output, |g, y| g.mul(&saved(y)?.sqr()?)?.neg())
    }
    /// `x·σ(x)`; the derivative is `σ(x)·(1 + x·(1 − σ(x)))`.
    pub fn silu(&self) -> Result<Var> {
        self.map("silu", Tensor::silu, Saved::Input, |g, x| {
            let x = saved(x)?;
            let s = x.neg()?.exp()?.affine(1.0, 1.0)?.recip()?;
            let d = x.mul(&s.affine(-1.0, 1.0)?)?.affine(1.0, 1.0)?.mul(&s)?;
            g.mul(&d)
        })
    }
    /// `x·mul + add`.
    pub fn affine(&self, mul: f32, add: f32) -> Result<Var> {
        self.map("affine", |x| x.affine(mul, add), Saved::Nothing, move |g, _| g.scale(mul))
    }
    /// `x·f`.
    pub fn scale(&self, f: f32) -> Result<Var> {
        self.map("scale", |x| x.scale(f), Saved::Nothing, move |g, _| g.scale(f))
    }
    /// `xᵉ`; the derivative is `e·xᵉ⁻¹`.
    pub fn powf(&self, e: f32) -> Result<Var> {
        self.map("powf", |x| x.powf(e), Saved::Input, move |g, x| g.mul(&saved(x)?.powf(e - 1.0)?.scale(e)?))
    }
}

fn saved(t: Option<&Tensor>) -> Result<&Tensor> {
    t.ok_or_else(|| tensor::Error::invalid("autograd", "a unary rule lost its saved tensor"))
}
