//! 32-bit AdamW with its state in plain vectors, and the elementwise kernel every 32-bit path uses.
//!
//! Reference: bitsandbytes `optimizer_update_32bit` (README §3.8; `backends/default/ops.py`), which
//! is algebraically `torch.optim.AdamW`. The kernel keeps bnb's order of f32 operations so paged and
//! unpaged runs agree bit for bit. Deliberately not here: bnb's `max_unorm`/percentile clipping and
//! NaN skipping (the 32-bit bnb kernel has none either).

use super::{check_len, AdamConsts, AdamWConfig, Optimizer, OptimizerState, Result, StateTensor};

/// `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²; p *= 1 - lr·wd;
/// p += step_size · m / (sqrt(v) + eps_hat)`, all in f32, elementwise.
pub(crate) fn adamw_kernel(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &AdamConsts) {
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        let mi = m[i] * c.b1 + c.one_minus_b1 * gi;
        let vi = v[i] * c.b2 + c.one_minus_b2 * gi * gi;
        let mut pi = p[i];
        if let Some(d) = c.decay {
            pi *= d;
        }
        p[i] = pi + c.step_size * (mi / (vi.sqrt() + c.eps_hat));
        m[i] = mi;
        v[i] = vi;
    }
}

/// bitsandbytes/torch AdamW with 32-bit state (`AdamW32bit`).
pub struct AdamW {
    cfg: AdamWConfig,
    step: u64,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl AdamW {
    /// State for `n` parameters, zero-initialised.
    pub fn new(cfg: AdamWConfig, n: usize) -> Self {
        Self { cfg, step: 0, m: vec![0.0; n], v: vec![0.0; n] }
    }
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }
    pub fn len(&self) -> usize {
        self.m.len()
    }
    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }
}

impl Optimizer for AdamW {
    fn name(&self) -> &'static str {
        "adamw"
    }
    fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<()> {
        check_len("adamw step", "params", params.len(), self.m.len())?;
        check_len("adamw step", "grads", grads.len(), self.m.len())?;
        self.step += 1;
        let c = AdamConsts::new(&self.cfg, self.step, lr);
        adamw_kernel(params, grads, &mut self.m, &mut self.v, &c);
        Ok(())
    }
    fn steps(&self) -> u64 {
        self.step
    }
    fn state_bytes(&self) -> usize {
        (self.m.len() + self.v.len()) * 4
    }
    fn save_state(&self) -> Result<OptimizerState> {
        Ok(OptimizerState {
            kind: self.name().into(),
            step: self.step,
            tensors: vec![
                ("m".into(), StateTensor::F32(self.m.clone())),
                ("v".into(), StateTensor::F32(self.v.clone())),
            ],
        })
    }
    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        state.expect_kind(self.name())?;
        let m = state.f32("m", self.m.len())?;
        let v = state.f32("v", self.v.len())?;
        self.m.copy_from_slice(m);
        self.v.copy_from_slice(v);
        self.step = state.step;
        Ok(())
    }
}
