//! What the user sees besides the progress bar: peak memory from the kernel's own accounting, the
//! per-step metrics file, and a loss-curve image (SVG, no plotting dependency).
//! Not here: live dashboards, TensorBoard event files.

use std::io::Write;
use std::path::Path;

/// Peak resident set size of this process in bytes (`VmHWM`), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A device as the logs name it: `cpu`, or `cuda:0 (NVIDIA H200, sm_90)` when the driver answers.
pub fn device_name(device: tensor::Device) -> String {
    match device {
        tensor::Device::Cpu => "cpu".into(),
        #[cfg(feature = "cuda")]
        tensor::Device::Cuda(n) => match tensor::cuda::CudaDevice::get(n) {
            Ok(d) => {
                let (major, minor) = d.compute_capability();
                format!("cuda:{n} ({}, sm_{major}{minor})", d.name())
            }
            Err(_) => format!("cuda:{n}"),
        },
        #[cfg(not(feature = "cuda"))]
        tensor::Device::Cuda(n) => format!("cuda:{n}"),
    }
}

/// Device memory at its peak since the last [`reset_device_peak`], as the allocator's pool saw
/// it: `(tensors, pool)` bytes; `None` on the CPU, without the driver, or without a pool.
pub fn device_peak_bytes(device: tensor::Device) -> Option<(u64, u64)> {
    match device {
        tensor::Device::Cpu => None,
        #[cfg(feature = "cuda")]
        tensor::Device::Cuda(n) => {
            let m = tensor::cuda::CudaDevice::get(n).ok()?.memory().ok()?;
            (m.reserved_peak > 0).then_some((m.used_peak, m.reserved_peak))
        }
        #[cfg(not(feature = "cuda"))]
        tensor::Device::Cuda(_) => None,
    }
}

/// Restart the device's peak memory figures (best effort; nothing on the CPU).
pub fn reset_device_peak(device: tensor::Device) {
    #[cfg(feature = "cuda")]
    if let tensor::Device::Cuda(n) = device {
        if let Ok(d) = tensor::cuda::CudaDevice::get(n) {
            let _ = d.reset_peak_memory();
        }
    }
    #[cfg(not(feature = "cuda"))]
    let _ = device;
}

/// Waits for the device's queued work (timing a step on a GPU needs it); nothing on the CPU.
pub fn synchronize(device: tensor::Device) -> Result<(), String> {
    match device {
        tensor::Device::Cpu => Ok(()),
        #[cfg(feature = "cuda")]
        tensor::Device::Cuda(n) => {
            tensor::cuda::CudaDevice::get(n).and_then(|d| d.synchronize()).map_err(|e| e.to_string())
        }
        #[cfg(not(feature = "cuda"))]
        tensor::Device::Cuda(_) => Err("this build has no CUDA backend".into()),
    }
}

/// Bytes as a short human string (`1.23 GiB`).
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub tokens: usize,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eval_ppl: Option<f64>,
    /// Steps skipped so far in this run (and the runs it resumes) for a non-finite loss or
    /// gradient (`--on-nan skip`); 0 otherwise.
    #[serde(default)]
    pub skipped: usize,
}

/// Append one JSON object per line to `metrics.jsonl`, flushed each time so a crash keeps it.
pub struct MetricsLog {
    file: std::fs::File,
}

impl MetricsLog {
    /// Open `path` for appending, first dropping lines of steps after `keep_through` (a resumed
    /// run rewrites the steps it repeats).
    pub fn open(path: &Path, keep_through: usize) -> std::io::Result<Self> {
        let kept: Vec<String> = match std::fs::read_to_string(path) {
            Ok(s) => s
                .lines()
                .filter(|l| serde_json::from_str::<StepMetrics>(l).is_ok_and(|m| m.step <= keep_through))
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        };
        // Rewrite through a temporary file and a rename: truncating in place would lose the kept
        // steps if the process were killed before writing them back.
        let tmp = path.with_extension(format!("jsonl.tmp.{}", std::process::id()));
        let rewrite = || -> std::io::Result<()> {
            let mut t = std::fs::File::create(&tmp)?;
            for l in &kept {
                writeln!(t, "{l}")?;
            }
            t.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        if let Err(e) = rewrite() {
            let _ = std::fs::remove_file(&tmp); // a full disk keeps no half-written copy
            return Err(e);
        }
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(MetricsLog { file })
    }
    /// Write one step.
    pub fn write(&mut self, m: &StepMetrics) -> std::io::Result<()> {
        let line = serde_json::to_string(m).map_err(std::io::Error::other)?;
        writeln!(self.file, "{line}")?;
        self.file.flush()
    }
}

/// Read every step back from a metrics file.
pub fn read_metrics(path: &Path) -> std::io::Result<Vec<StepMetrics>> {
    Ok(std::fs::read_to_string(path)?.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// An SVG line chart of training loss (and eval loss where present) against step.
pub fn loss_curve_svg(metrics: &[StepMetrics]) -> String {
    let (w, h, m) = (720.0f64, 420.0f64, 60.0f64);
    let pts: Vec<(f64, f64)> = metrics.iter().filter(|s| s.loss.is_finite()).map(|s| (s.step as f64, s.loss)).collect();
    let evals: Vec<(f64, f64)> = metrics.iter().filter_map(|s| s.eval_loss.map(|e| (s.step as f64, e))).collect();
    let all = pts.iter().chain(&evals);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-9 {
        y1 = y0 + 1.0;
    }
    let px = |x: f64| m + (x - x0) / (x1 - x0) * (w - 2.0 * m);
    let py = |y: f64| h - m - (y - y0) / (y1 - y0) * (h - 2.0 * m);
    let line =
        |p: &[(f64, f64)]| p.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect::<Vec<_>>().join(" ");
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">training loss</text>\n\
         <line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n<line x1=\"{m}\" y1=\"{m}\" x2=\"{m}\" y2=\"{}\" stroke=\"black\"/>\n",
        w / 2.0,
        h - m,
        w - m,
        h - m,
        h - m
    );
    for i in 0..=4 {
        let f = i as f64 / 4.0;
        let (xv, yv) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        s += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}</text>\n", px(xv), h - m + 18.0, xv);
        s += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.3}</text>\n", m - 6.0, py(yv) + 4.0, yv);
    }
    s += &format!("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step</text>\n", w / 2.0, h - 12.0);
    s += &format!("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"{}\"/>\n", line(&pts));
    if !evals.is_empty() {
        s += &format!("<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"{}\"/>\n", line(&evals));
        s += &format!("<text x=\"{}\" y=\"44\" fill=\"#d62728\" text-anchor=\"end\">eval</text>\n", w - m);
    }
    s += &format!("<text x=\"{}\" y=\"{}\" fill=\"#1f77b4\" text-anchor=\"end\">train</text>\n</svg>\n", w - m, 60);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(step: usize, loss: f64) -> StepMetrics {
        StepMetrics {
            step,
            loss,
            lr: 1e-3,
            grad_norm: 1.0,
            tokens_per_s: 10.0,
            tokens: 5,
            eval_loss: None,
            eval_ppl: None,
            skipped: 0,
        }
    }

    #[test]
    fn metrics_resume_drops_repeated_steps_and_plot_has_points() {
        let p = std::env::temp_dir().join(format!("qlora-metrics-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let mut log = MetricsLog::open(&p, 0).unwrap();
        for s in 1..=5 {
            log.write(&m(s, 3.0 - s as f64 * 0.1)).unwrap();
        }
        drop(log);
        let mut log = MetricsLog::open(&p, 3).unwrap();
        log.write(&m(4, 1.0)).unwrap();
        let back = read_metrics(&p).unwrap();
        assert_eq!(back.iter().map(|s| s.step).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(back[3].loss, 1.0);
        let svg = loss_curve_svg(&back);
        assert!(svg.starts_with("<svg") && svg.contains("polyline"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(human_bytes(3 * 1024 * 1024).starts_with("3.00 MiB"));
        assert!(peak_rss_bytes().is_none_or(|b| b > 1024 * 1024));
    }
}
