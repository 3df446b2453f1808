//! `run_*` entry points: AdamW (32-bit and 8-bit) and gradient clipping.

use super::*;
use crate::cuda::device::{CudaDevice, Launch};
use crate::cuda::params::*;
use crate::Result;

// ---------------------------------------------------------------- optimizer

/// One step's AdamW constants, formed on the host exactly as the CPU optimizer forms them
/// (trainer `AdamConsts`): f64 arithmetic rounded once to f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub b1: f32,
    pub one_minus_b1: f32,
    pub b2: f32,
    pub one_minus_b2: f32,
    /// `1 - lr wd`, `None` when wd = 0.
    pub decay: Option<f32>,
    pub step_size: f32,
    pub eps_hat: f32,
}

impl AdamStep {
    /// The constants of step `t` (1-based).
    pub fn new(beta1: f64, beta2: f64, eps: f64, weight_decay: f64, lr: f32, t: u64) -> Self {
        let lr = lr as f64;
        let t = t.min(i32::MAX as u64) as i32;
        let c1 = 1.0 - beta1.powi(t);
        let c2 = (1.0 - beta2.powi(t)).sqrt();
        Self {
            b1: beta1 as f32,
            one_minus_b1: (1.0 - beta1) as f32,
            b2: beta2 as f32,
            one_minus_b2: (1.0 - beta2) as f32,
            decay: (weight_decay > 0.0).then_some((1.0 - lr * weight_decay) as f32),
            step_size: (-lr * c2 / c1) as f32,
            eps_hat: (eps * c2) as f32,
        }
    }
}

/// Queues `adamw_fwd_f32` over `n` elements at the device addresses `[p, g, m, v]`: the one
/// launch of the 32-bit step, shared by [`run_adamw`] and `optim_ops` (training).
pub(crate) fn launch_adamw(dev: &CudaDevice, [p, g, m, v]: [u64; 4], n: usize, c: AdamStep) -> Result<()> {
    let prm = AdamwParams {
        p,
        g,
        m,
        v,
        n: n as i64,
        b1: c.b1,
        one_minus_b1: c.one_minus_b1,
        b2: c.b2,
        one_minus_b2: c.one_minus_b2,
        decay: c.decay.unwrap_or(1.0),
        step_size: c.step_size,
        eps_hat: c.eps_hat,
        has_decay: c.decay.is_some() as i32,
    };
    dev.launch("adamw", "adamw_fwd_f32", Launch::elementwise(n), &prm)
}

/// Queues `adamw8bit_fwd_f32` over `n` parameters at the device addresses `[p, g, m_codes,
/// v_codes, absmax_m, absmax_v, signed_map, unsigned_map]`: one 256-thread block per quantization
/// block (the kernel's shared maps and 8-warp absmax need exactly 256), grid-stride past 65535
/// blocks. Shared by [`run_adamw8bit`] and `optim_ops`.
pub(crate) fn launch_adamw8bit(dev: &CudaDevice, a: [u64; 8], n: usize, c: AdamStep) -> Result<()> {
    let [p, g, m_codes, v_codes, absmax_m, absmax_v, signed_map, unsigned_map] = a;
    let prm = Adamw8bitParams {
        p,
        g,
        m_codes,
        v_codes,
        absmax_m,
        absmax_v,
        signed_map,
        unsigned_map,
        n: n as i64,
        b1: c.b1,
        one_minus_b1: c.one_minus_b1,
        b2: c.b2,
        one_minus_b2: c.one_minus_b2,
        decay: c.decay.unwrap_or(1.0),
        step_size: c.step_size,
        eps_hat: c.eps_hat,
        has_decay: c.decay.is_some() as i32,
    };
    dev.launch("adamw", "adamw8bit_fwd_f32", Launch::linear(n.div_ceil(256).clamp(1, 65_535) as u32, 256), &prm)
}

/// 32-bit AdamW step: returns `(p, m, v)` after the step.
pub fn run_adamw(
    dev: &CudaDevice,
    p: &[f32],
    g: &[f32],
    m: &[f32],
    v: &[f32],
    c: AdamStep,
) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let n = p.len();
    let (dp, dg, dm, dv) = (dev.upload(p)?, dev.upload(g)?, dev.upload(m)?, dev.upload(v)?);
    launch_adamw(dev, [dev.ptr(&dp), dev.ptr(&dg), dev.ptr(&dm), dev.ptr(&dv)], n, c)?;
    Ok((down_raw(dev, &dp, n)?, down_raw(dev, &dm, n)?, down_raw(dev, &dv, n)?))
}

/// The state of a blockwise 8-bit AdamW (blocks of 256): codes and per-block absmax.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam8bitState {
    pub m_codes: Vec<u8>,
    pub v_codes: Vec<u8>,
    pub absmax_m: Vec<f32>,
    pub absmax_v: Vec<f32>,
}

/// Blockwise 8-bit AdamW step in place on host copies: returns `p` and updates `state`.
/// `signed_map` / `unsigned_map` are the 256-entry dynamic maps (trainer `DynamicMap`).
pub fn run_adamw8bit(
    dev: &CudaDevice,
    p: &[f32],
    g: &[f32],
    state: &mut Adam8bitState,
    signed_map: &[f32; 256],
    unsigned_map: &[f32; 256],
    c: AdamStep,
) -> Result<Vec<f32>> {
    let n = p.len();
    let nb = n.div_ceil(256);
    let (dp, dg) = (dev.upload(p)?, dev.upload(g)?);
    let (mc, vc) = (dev.upload(&state.m_codes)?, dev.upload(&state.v_codes)?);
    let (am, av) = (dev.upload(&state.absmax_m)?, dev.upload(&state.absmax_v)?);
    let (sm, um) = (dev.upload(&signed_map[..])?, dev.upload(&unsigned_map[..])?);
    let (cm, cv) = (dev.ptr(&mc), dev.ptr(&vc));
    let addrs = [dev.ptr(&dp), dev.ptr(&dg), cm, cv, dev.ptr(&am), dev.ptr(&av), dev.ptr(&sm), dev.ptr(&um)];
    launch_adamw8bit(dev, addrs, n, c)?;
    state.m_codes = down_raw(dev, &mc, n)?;
    state.v_codes = down_raw(dev, &vc, n)?;
    state.absmax_m = down_raw(dev, &am, nb)?;
    state.absmax_v = down_raw(dev, &av, nb)?;
    down_raw(dev, &dp, n)
}

/// Global-norm clipping on the device: `(clipped g, pre-clip norm)`.
pub fn run_clip(dev: &CudaDevice, g: &[f32], max_norm: f32) -> Result<(Vec<f32>, f32)> {
    let n = g.len();
    let dg = dev.upload(g)?;
    let (_sumsq, norm) = sumsq_on_device(dev, &dg, n)?;
    let p = ClipParams { g: dev.ptr(&dg), norm: dev.ptr(&norm), n: n as i64, max_norm, _pad: 0 };
    dev.launch("adamw", "adamw_clip_fwd_f32", Launch::elementwise(n), &p)?;
    Ok((down_raw(dev, &dg, n)?, down_raw(dev, &norm, 1)?[0]))
}
