//! Running out of disk: the free space of the output filesystem (statvfs) checked against what a
//! run will write before it starts, and write errors that mean "no space" (ENOSPC, EFBIG from a
//! file-size limit, EDQUOT) turned into one line that names the file and the fix: free space and
//! resume from the last complete checkpoint.
//! Not here: deleting old checkpoints to make room (every save is kept; the user decides).

use crate::report::human_bytes;
use std::path::Path;

/// Per checkpoint beyond the two tensor files: JSON files, safetensors headers, block rounding.
const CHECKPOINT_OVERHEAD: u64 = 64 << 10;
/// Per run: metrics.jsonl, the loss curve, the adapter config.
const RUN_OVERHEAD: u64 = 1 << 20;

/// True when `e` says the filesystem (or a quota, or a file-size limit) has no room left.
pub fn is_disk_full(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EFBIG | libc::EDQUOT))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// The one-line message for a failed write of `path` during a run writing into `out`: a full disk
/// names the fix (free space, then `--resume` the newest complete checkpoint under `out`).
pub fn write_error(path: &Path, e: &std::io::Error, out: &Path) -> String {
    if !is_disk_full(e) {
        return format!("{}: {e}", path.display());
    }
    let fix = match crate::checkpoint::latest(out) {
        Some(c) => format!("free space and rerun with --resume {}", c.display()),
        None => "free space and rerun (no checkpoint was written yet)".to_string(),
    };
    format!("disk full writing {} ({e}): {fix}", path.display())
}

/// [`write_error`] for a llama writer (adapter files, atomic writes); other errors as they are.
pub fn llama_write_error(e: llama::Error, out: &Path) -> String {
    match &e {
        llama::Error::Io { path, source } => write_error(path, source, out),
        _ => e.to_string(),
    }
}

/// Free bytes for an unprivileged writer on the filesystem holding `path` (`None` where unknown).
#[allow(clippy::unnecessary_cast)] // statvfs field types differ between platforms
pub fn free_bytes(path: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
        // SAFETY: `c` is a NUL-terminated path and `s` a properly sized out-parameter; statvfs
        // writes only into `s` and we read it only when the call succeeded.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
        (rc == 0).then(|| (s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// What a run writes into `--out`, from the memory plan's sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritePlan {
    /// `adapter_model.safetensors` (f32 LoRA parameters).
    pub adapter: u64,
    /// `optimizer.safetensors` of one checkpoint.
    pub optimizer: u64,
    /// Checkpoints this run will save (each adapter + optimizer state; all are kept).
    pub checkpoints: u64,
}

impl WritePlan {
    /// One checkpoint directory.
    pub fn checkpoint(&self) -> u64 {
        self.adapter + self.optimizer + CHECKPOINT_OVERHEAD
    }
    /// The least the run must write to finish: the final adapter and one checkpoint.
    pub fn minimum(&self) -> u64 {
        RUN_OVERHEAD + self.adapter + self.checkpoint()
    }
    /// Everything the run writes.
    pub fn total(&self) -> u64 {
        RUN_OVERHEAD + self.adapter + self.checkpoints.max(1) * self.checkpoint()
    }

    /// `Err` when `free` bytes clearly cannot hold the run's output; `Ok(Some(warning))` when it
    /// holds the minimum but not every checkpoint; `Ok(None)` when everything fits.
    pub fn check(&self, free: u64, out: &Path) -> Result<Option<String>, String> {
        if free < self.minimum() {
            return Err(format!(
                "--out {}: {} free on its filesystem, but this run writes at least {} (adapter {}, \
                 one checkpoint {}); free space or choose an --out on a larger disk",
                out.display(),
                human_bytes(free),
                human_bytes(self.minimum()),
                human_bytes(self.adapter),
                human_bytes(self.checkpoint()),
            ));
        }
        if free < self.total() {
            return Ok(Some(format!(
                "warning: --out {} has {} free, less than the {} that {} checkpoints and the adapter take; \
                 the run stops at the first save that does not fit (raise --save-every or free space)",
                out.display(),
                human_bytes(free),
                human_bytes(self.total()),
                self.checkpoints
            )));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_refuses_what_clearly_cannot_fit_and_warns_about_the_rest() {
        let plan = WritePlan { adapter: 10 << 20, optimizer: 20 << 20, checkpoints: 4 };
        assert_eq!(plan.checkpoint(), (30 << 20) + (64 << 10));
        assert_eq!(plan.minimum(), (41 << 20) + (64 << 10));
        assert_eq!(plan.total(), (11 << 20) + 4 * plan.checkpoint());
        let out = Path::new("/runs/x");
        let e = plan.check(40 << 20, out).unwrap_err();
        assert!(e.contains("/runs/x") && e.contains("40.00 MiB free") && e.contains("41.06 MiB"), "{e}");
        assert!(e.contains("free space"), "{e}");
        let w = plan.check(100 << 20, out).unwrap().unwrap();
        assert!(w.contains("4 checkpoints") && w.contains("--save-every"), "{w}");
        assert_eq!(plan.check(1 << 30, out).unwrap(), None);
    }

    #[test]
    fn no_space_errors_name_the_path_and_the_checkpoint_to_resume() {
        let out = std::env::temp_dir().join(format!("qlora-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(out.join("checkpoint-7")).unwrap();
        let p = out.join("checkpoint-8/optimizer.safetensors");
        for errno in [libc::ENOSPC, libc::EFBIG, libc::EDQUOT] {
            let m = write_error(&p, &std::io::Error::from_raw_os_error(errno), &out);
            assert!(m.starts_with("disk full writing ") && m.contains("checkpoint-8/optimizer.safetensors"), "{m}");
            assert!(m.contains(&format!("--resume {}", out.join("checkpoint-7").display())), "{m}");
        }
        let m = write_error(&p, &std::io::Error::from_raw_os_error(libc::EACCES), &out);
        assert!(!m.contains("disk full") && m.contains("optimizer.safetensors"), "{m}");
        std::fs::remove_dir_all(&out).unwrap();
        let m = write_error(&p, &std::io::Error::from_raw_os_error(libc::ENOSPC), &out);
        assert!(m.contains("no checkpoint was written yet"), "{m}");
        assert!(free_bytes(&std::env::temp_dir()).is_some_and(|b| b > 0));
    }
}
