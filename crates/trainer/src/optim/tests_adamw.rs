//! AdamW against hand-computed literals and a direct f64 implementation of README §3.8; gradient
//! norm and clipping; save/load continuation. Also the small deterministic RNG the optim tests share.

use super::*;

/// xorshift64*: deterministic test data without a dev-dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40;
        (x as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

/// f32 AdamW against f64 math: per-step roundings of O(1e-7) relative in an update of size ≈ lr.
const ADAMW_F32_VS_F64_ABS: f64 = 2e-6;
const ADAMW_F32_VS_F64_REL: f64 = 1e-5;

fn adamw_f64(cfg: &AdamWConfig, p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], t: i32, lr: f64) {
    let (b1, b2) = (cfg.beta1, cfg.beta2);
    for i in 0..p.len() {
        m[i] = b1 * m[i] + (1.0 - b1) * g[i];
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
        p[i] *= 1.0 - lr * cfg.weight_decay;
        let c2 = (1.0 - b2.powi(t)).sqrt();
        p[i] += -lr * c2 / (1.0 - b1.powi(t)) * m[i] / (v[i].sqrt() + cfg.eps * c2);
    }
}

#[test]
fn one_step_matches_hand_computed_values() {
    // Step 1: m = 0.1 g, v = 0.001 g², so the update is -lr·g/(|g| + eps) ≈ -lr·sign(g);
    // with wd = 0.01 and lr = 0.1 first p *= 0.999.
    let cfg = AdamWConfig { weight_decay: 0.01, ..Default::default() };
    let mut opt = AdamW::new(cfg, 3);
    let mut p = [1.0f32, -2.0, 0.5];
    opt.step(&mut p, &[0.5, -0.25, 0.0], 0.1).expect("step");
    let expected = [0.999 - 0.1, -1.998 + 0.1, 0.4995];
    for (a, e) in p.iter().zip(expected) {
        assert!((*a as f64 - e).abs() <= 1e-6, "{p:?} vs {expected:?}");
    }
    let s = opt.save_state().expect("save");
    let Some(StateTensor::F32(m)) = s.get("m") else { panic!("m") };
    assert_eq!(m, &[0.05f32, -0.025, 0.0]);
}

#[test]
fn matches_f64_reference_over_steps() {
    let cfg = AdamWConfig { weight_decay: 0.01, ..Default::default() };
    let n = 1000;
    let mut rng = Rng::new(1);
    let p0 = rng.vec(n, 1.0);
    let mut opt = AdamW::new(cfg, n);
    let mut p = p0.clone();
    let mut pd: Vec<f64> = p0.iter().map(|&x| x as f64).collect();
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    for t in 1..=10 {
        let g = rng.vec(n, 0.5);
        let gd: Vec<f64> = g.iter().map(|&x| x as f64).collect();
        let lr = 1e-3 * t as f32;
        opt.step(&mut p, &g, lr).expect("step");
        adamw_f64(&cfg, &mut pd, &gd, &mut m, &mut v, t, lr as f64);
        for (a, e) in p.iter().zip(&pd) {
            let tol = ADAMW_F32_VS_F64_ABS + ADAMW_F32_VS_F64_REL * e.abs();
            assert!((*a as f64 - e).abs() <= tol, "step {t}: {a} vs {e}");
        }
    }
}

#[test]
fn save_load_continues_bit_identically() {
    let n = 777;
    let mut rng = Rng::new(2);
    let mut p = rng.vec(n, 1.0);
    let mut a = AdamW::new(AdamWConfig::default(), n);
    for _ in 0..5 {
        a.step(&mut p, &rng.vec(n, 1.0), 1e-2).expect("step");
    }
    let saved = a.save_state().expect("save");
    let mut b = AdamW::new(AdamWConfig::default(), n);
    b.load_state(&saved).expect("load");
    let mut q = p.clone();
    for _ in 0..5 {
        let g = rng.vec(n, 1.0);
        a.step(&mut p, &g, 1e-2).expect("step");
        b.step(&mut q, &g, 1e-2).expect("step");
    }
    assert_eq!(bits(&p), bits(&q));
    assert_eq!(a.steps(), 10);
    let mut wrong = AdamW::new(AdamWConfig::default(), n + 1);
    assert!(wrong.load_state(&saved).is_err());
    assert!(wrong.step(&mut p, &rng.vec(n, 1.0), 1e-2).is_err());
}

pub(crate) fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn grad_norm_and_clipping_follow_torch() {
    assert_eq!(global_grad_norm(&[3.0, 4.0]), 5.0);
    let mut g = [3.0f32, 4.0];
    let norm = clip_grad_norm(&mut g, 1.0);
    assert_eq!(norm, 5.0);
    let coef = 1.0f32 / (5.0 + 1e-6);
    assert_eq!(g, [3.0 * coef, 4.0 * coef]);
    let mut small = [0.3f32, 0.4];
    assert_eq!(clip_grad_norm(&mut small, 1.0), 0.5);
    assert_eq!(small, [0.3, 0.4]);
    // f64 accumulation: 1e6 values of 1e-3 have norm exactly 1.
    assert!((global_grad_norm(&vec![1e-3f32; 1_000_000]) - 1.0).abs() < 1e-6);
}
