//! `gradcheck`: compare every backward rule with finite differences (ggml's `test-backend-ops`
//! gradient mode, PyTorch's `torch.autograd.gradcheck`).
//!
//! The scalar being differentiated is `L(x) = Σ out(x)·r` for a fixed random cotangent `r`, so one
//! backward pass (`backward_with(out, r)`) gives the analytic gradient of every input, and central
//! differences `(L(x + h) − L(x − h)) / 2h`, one element at a time and accumulated in f64, give
//! the numeric one. Two ways to evaluate `L`:
//! - [`gradcheck`]: through the op itself, in f32. The step is large (`h ≈ 1e-2·max(1, |x|)`) so
//!   f32 rounding in the forward stays small next to the difference, the denominator is the step
//!   actually taken after rounding `x ± h` to f32, and tolerances are loose but far below the
//!   error a wrong rule makes (a missing term or factor is off by O(|grad|)).
//! - [`gradcheck_ref`]: through an f64 reference of the forward (tensor's `*_ref` functions where
//!   they exist), with a tiny step and tight tolerances; it also checks the op's forward against
//!   the reference.
//!
//! A mismatch is an `Err` naming the input, the element and both values. Deliberately not here:
//! second derivatives, and non-smooth points (callers keep inputs away from kinks and ties).

use crate::grad_mode::no_grad;
use crate::{Tape, Var};
use tensor::{DType, Error, Result, Rng, Tensor};

/// Step and tolerances: an element passes when `|analytic − numeric| ≤ atol + rtol·max(|a|, |n|)`.
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckConfig {
    /// Relative step: `h = eps·max(1, |x|)`.
    pub eps: f64,
    pub atol: f64,
    pub rtol: f64,
    /// Seed of the random cotangent `r`.
    pub seed: u64,
}

impl GradcheckConfig {
    /// For [`gradcheck`] (forward evaluated in f32).
    pub fn f32() -> Self {
        GradcheckConfig { eps: 1e-2, atol: 2e-3, rtol: 2e-2, seed: 0x5eed }
    }
    /// For [`gradcheck_ref`] (forward evaluated in f64; the analytic side is still f32).
    pub fn f64_ref() -> Self {
        GradcheckConfig { eps: 1e-6, atol: 1e-4, rtol: 2e-3, seed: 0x5eed }
    }
}

impl Default for GradcheckConfig {
    fn default() -> Self {
        Self::f32()
    }
}

/// What a passing check looked at.
#[derive(Debug, Clone, PartialEq)]
pub struct GradcheckReport {
    /// Input elements compared.
    pub checked: usize,
    /// Largest `|a − n| / (atol + rtol·max(|a|, |n|))` seen (≤ 1 means every element passed).
    pub worst_ratio: f64,
}

/// Check the backward of `f` at `wrt` (f32 tensors, any layout) against f32 central differences
/// of `f` itself. `f` gets one leaf per `wrt` tensor; constants (indices, tables) are captured.
///
/// ```
/// use autograd::{gradcheck, GradcheckConfig};
/// use tensor::{Rng, Tensor};
/// let x = Tensor::randn([3, 4], 1.0, &mut Rng::new(1));
/// gradcheck(|v| v[0].exp()?.sum(1, false), &[x], &GradcheckConfig::f32()).unwrap();
/// ```
pub fn gradcheck(f: impl Fn(&[Var]) -> Result<Var>, wrt: &[Tensor], cfg: &GradcheckConfig) -> Result<GradcheckReport> {
    let (_, analytic, r) = analytic(&f, wrt, cfg)?;
    let shapes: Vec<_> = wrt.iter().map(|t| t.shape().clone()).collect();
    let eval = |xs: &[Vec<f64>]| -> Result<Vec<f64>> {
        let vars = xs
            .iter()
            .zip(&shapes)
            .map(|(x, s)| {
                Ok(Var::constant(Tensor::from_vec(x.iter().map(|&v| v as f32).collect::<Vec<_>>(), s.clone())?))
            })
            .collect::<Result<Vec<_>>>()?;
        let y = no_grad(|| f(&vars))?;
        Ok(y.value().to_vec_f32()?.into_iter().map(f64::from).collect())
    };
    numeric_compare(eval, wrt, &analytic, &r, cfg, true)
}

/// Check the backward of `f` at `wrt` against central differences of `f_ref`, an f64 reference
/// of the same forward taking each input flattened row-major and returning the output flattened.
/// Also checks `f`'s forward against `f_ref` with the same tolerances.
pub fn gradcheck_ref(
    f: impl Fn(&[Var]) -> Result<Var>,
    f_ref: impl Fn(&[Vec<f64>]) -> Vec<f64>,
    wrt: &[Tensor],
    cfg: &GradcheckConfig,
) -> Result<GradcheckReport> {
    let (out, analytic, r) = analytic(&f, wrt, cfg)?;
    let x0 = wrt.iter().map(to_f64).collect::<Result<Vec<_>>>()?;
    let want = f_ref(&x0);
    let got = to_f64(&out)?;
    if want.len() != got.len() {
        return Err(Error::invalid("gradcheck", format!("reference gives {} outputs, op {}", want.len(), got.len())));
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if (g - w).abs() > cfg.atol + cfg.rtol * w.abs() {
            return Err(Error::invalid(
                "gradcheck",
                format!("forward mismatch at output {i}: op {g} vs reference {w}"),
            ));
        }
    }
    numeric_compare(|xs: &[Vec<f64>]| Ok(f_ref(xs)), wrt, &analytic, &r, cfg, false)
}

/// Run `f` on leaves, backpropagate a random cotangent; returns (output, gradients, cotangent).
fn analytic(
    f: &impl Fn(&[Var]) -> Result<Var>,
    wrt: &[Tensor],
    cfg: &GradcheckConfig,
) -> Result<(Tensor, Vec<Vec<f64>>, Vec<f64>)> {
    for (i, t) in wrt.iter().enumerate() {
        if t.dtype() != DType::F32 {
            return Err(Error::invalid("gradcheck", format!("input {i} is {:?}; check f32 inputs", t.dtype())));
        }
    }
    let tape = Tape::new();
    let leaves: Vec<Var> = wrt.iter().map(|t| tape.leaf(t.clone())).collect();
    let out = f(&leaves)?;
    let mut rng = Rng::new(cfg.seed);
    let r32: Vec<f32> = (0..out.value().elem_count()).map(|_| rng.normal()).collect();
    let r: Vec<f64> = r32.iter().map(|&v| f64::from(v)).collect();
    let seed = Tensor::from_vec(r32, out.shape().clone())?.to_dtype(out.dtype())?;
    let grads = if out.requires_grad() { Some(tape.backward_with(&out, seed)?) } else { None };
    let analytic = leaves
        .iter()
        .map(|v| match grads.as_ref().and_then(|g| g.get(v)) {
            Some(g) => to_f64(g),
            None => Ok(vec![0.0; v.value().elem_count()]),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((out.into_value(), analytic, r))
}

/// Central differences of `Σ eval(x)·r` for every element of every input, compared with `analytic`.
fn numeric_compare(
    eval: impl Fn(&[Vec<f64>]) -> Result<Vec<f64>>,
    wrt: &[Tensor],
    analytic: &[Vec<f64>],
    r: &[f64],
    cfg: &GradcheckConfig,
    round_to_f32: bool,
) -> Result<GradcheckReport> {
    let mut xs = wrt.iter().map(to_f64).collect::<Result<Vec<_>>>()?;
    let loss = |xs: &[Vec<f64>]| -> Result<f64> {
        let y = eval(xs)?;
        if y.len() != r.len() {
            return Err(Error::invalid("gradcheck", format!("output has {} elements, expected {}", y.len(), r.len())));
        }
        Ok(y.iter().zip(r).map(|(a, b)| a * b).sum())
    };
    let mut report = GradcheckReport { checked: 0, worst_ratio: 0.0 };
    let mut first_bad: Option<String> = None;
    let mut bad = 0usize;
    for i in 0..xs.len() {
        for j in 0..xs[i].len() {
            let x = xs[i][j];
            let h = cfg.eps * x.abs().max(1.0);
            let (mut lo, mut hi) = (x - h, x + h);
            if round_to_f32 {
                (lo, hi) = (f64::from(lo as f32), f64::from(hi as f32));
            }
            xs[i][j] = hi;
            let l_hi = loss(&xs)?;
            xs[i][j] = lo;
            let l_lo = loss(&xs)?;
            xs[i][j] = x;
            let numeric = (l_hi - l_lo) / (hi - lo);
            let a = analytic[i][j];
            let ratio = (a - numeric).abs() / (cfg.atol + cfg.rtol * a.abs().max(numeric.abs()));
            report.checked += 1;
            if ratio.is_nan() || ratio > 1.0 {
                bad += 1;
                first_bad.get_or_insert_with(|| format!("input {i} element {j}: analytic {a} vs numeric {numeric}"));
            }
            if ratio.is_nan() || ratio > report.worst_ratio {
                report.worst_ratio = ratio;
            }
        }
    }
    match first_bad {
        Some(msg) => Err(Error::invalid(
            "gradcheck",
            format!("gradient mismatch at {msg} ({bad} of {} elements off)", report.checked),
        )),
        None => Ok(report),
    }
}

fn to_f64(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_vec_f32()?.into_iter().map(f64::from).collect())
}
