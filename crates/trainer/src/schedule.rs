//! Learning-rate schedules with linear warmup, as Hugging Face's `get_*_schedule_with_warmup`
//! define them (the multiplier at optimizer step `s`, 0-based, over `total` steps).
//! Not here: restarts, polynomial or inverse-sqrt schedules.

use std::str::FromStr;

/// The shape of the schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    Constant,
    Linear,
    Cosine,
}

impl FromStr for ScheduleKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "cosine" => Ok(Self::Cosine),
            _ => Err(format!("unknown schedule '{s}' (expected constant, linear or cosine)")),
        }
    }
}

/// Peak learning rate, warmup and decay over a fixed number of optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub peak_lr: f32,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    /// A schedule whose warmup is `ceil(warmup_ratio · total)` steps, as HF's Trainer computes it.
    pub fn new(kind: ScheduleKind, peak_lr: f32, warmup_ratio: f64, total_steps: usize) -> Self {
        // f64 like Python's float, so 0.1 · 100 is 10 warmup steps, not 11.
        let warmup_steps = (warmup_ratio.max(0.0) * total_steps as f64).ceil() as usize;
        Schedule { kind, peak_lr, warmup_steps, total_steps }
    }

    /// The multiplier of the peak rate at 0-based optimizer step `step`.
    pub fn factor(&self, step: usize) -> f64 {
        let (s, w, n) = (step as f64, self.warmup_steps as f64, self.total_steps as f64);
        if step < self.warmup_steps {
            return s / w.max(1.0);
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => ((n - s) / (n - w).max(1.0)).max(0.0),
            ScheduleKind::Cosine => {
                let progress = (s - w) / (n - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }

    /// The learning rate at 0-based optimizer step `step`.
    pub fn lr(&self, step: usize) -> f32 {
        (self.peak_lr as f64 * self.factor(step)) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_shapes() {
        let c = Schedule::new(ScheduleKind::Cosine, 1e-3, 0.1, 100);
        assert_eq!(c.warmup_steps, 10);
        assert_eq!(c.lr(0), 0.0);
        assert!((c.lr(5) - 5e-4).abs() < 1e-9);
        assert!((c.lr(10) - 1e-3).abs() < 1e-9);
        assert!((c.lr(55) - 5e-4).abs() < 1e-7, "half way through the decay: {}", c.lr(55));
        assert!(c.lr(100).abs() < 1e-9);
        let l = Schedule::new(ScheduleKind::Linear, 2.0, 0.0, 4);
        assert_eq!((0..5).map(|s| l.lr(s)).collect::<Vec<_>>(), vec![2.0, 1.5, 1.0, 0.5, 0.0]);
        let k = Schedule::new(ScheduleKind::Constant, 0.5, 0.5, 4);
        assert_eq!((0..4).map(|s| k.lr(s)).collect::<Vec<_>>(), vec![0.0, 0.25, 0.5, 0.5]);
        assert!("step".parse::<ScheduleKind>().is_err());
    }
}
