//! Checkpoints that `--resume` continues from exactly: `checkpoint-N/` holds the adapter (PEFT
//! files), the optimizer state (`optimizer.safetensors`) and `trainer_state.json` (step, data
//! position, seed, schedule). Written into a temporary directory, every file fsynced, then renamed
//! into place and the parent fsynced, so a crash at any point leaves either the old set of complete
//! checkpoints or the new one, never a half-written `checkpoint-N`. A save that fails (a full disk)
//! removes its temporary directory and says which complete checkpoint to resume from.
//! Not here: keeping only the last k checkpoints (every save is kept).

use crate::data::DataPosition;
use crate::optim::{OptimizerState, StateTensor};
use llama::{LlamaConfig, LoraParams};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Everything but the adapter and the optimizer buffers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    pub total_steps: usize,
    pub data_position: DataPosition,
    pub seed: u64,
    pub optimizer: String,
    /// Mean training loss of the last step (for the log line on resume).
    pub last_loss: f64,
    /// Steps skipped so far for a non-finite loss or gradient (`--on-nan skip`).
    #[serde(default)]
    pub skipped: usize,
}

fn io(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

fn fsync_dir(dir: &Path) -> Result<(), String> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(|e| io(dir, e))
}

/// Write `checkpoint-{step}` under `out` atomically and return its path. Refuses non-finite
/// parameters; on a failed write (a full disk) the partial temporary directory is removed and the
/// error names the file and the complete checkpoint to `--resume` from.
pub fn save(
    out: &Path,
    params: &LoraParams,
    opt: &OptimizerState,
    state: &TrainerState,
    base_model: Option<&str>,
) -> Result<PathBuf, String> {
    ensure_finite(params, &format!("checkpoint-{}", state.step))?;
    recover(out)?;
    let dir = out.join(format!("checkpoint-{}", state.step));
    let tmp = out.join(format!(".checkpoint-{}.tmp-{}", state.step, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    if let Err(e) = write_files(&tmp, out, params, opt, state, base_model) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        // Same step saved again (a resumed run): move the old one aside first, and put it back if
        // the new one cannot take its place.
        let old = out.join(format!(".checkpoint-{}.old-{}", state.step, std::process::id()));
        std::fs::rename(&dir, &old).map_err(|e| io(&dir, e))?;
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            let _ = std::fs::rename(&old, &dir);
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(io(&dir, e));
        }
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    } else {
        std::fs::rename(&tmp, &dir).map_err(|e| {
            let _ = std::fs::remove_dir_all(&tmp);
            io(&dir, e)
        })?;
    }
    fsync_dir(out)?;
    Ok(dir)
}

/// The files of a checkpoint, into the temporary directory `tmp` under `out`.
fn write_files(
    tmp: &Path,
    out: &Path,
    params: &LoraParams,
    opt: &OptimizerState,
    state: &TrainerState,
    base_model: Option<&str>,
) -> Result<(), String> {
    std::fs::create_dir_all(tmp).map_err(|e| crate::disk::write_error(tmp, &e, out))?;
    params.save_peft(tmp, base_model).map_err(|e| crate::disk::llama_write_error(e, out))?;
    write_optimizer(&tmp.join("optimizer.safetensors"), opt, out)?;
    let json = serde_json::to_string_pretty(state).map_err(|e| e.to_string())?;
    llama::lora::write_atomic(&tmp.join("trainer_state.json"), json.as_bytes())
        .map_err(|e| crate::disk::llama_write_error(e, out))?;
    fsync_dir(tmp)
}

/// An error naming `what` unless every LoRA parameter is finite: NaN adapters are never written.
pub fn ensure_finite(params: &LoraParams, what: &str) -> Result<(), String> {
    match params.data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(format!(
            "refusing to write {what}: LoRA parameter {i} of {} is {} (lower --lr or --max-grad-norm)",
            params.data.len(),
            params.data[i]
        )),
    }
}

fn write_optimizer(path: &Path, opt: &OptimizerState, out: &Path) -> Result<(), String> {
    let bufs: Vec<(String, Dtype, usize, Vec<u8>)> = opt
        .tensors
        .iter()
        .map(|(name, t)| match t {
            StateTensor::F32(v) => {
                (name.clone(), Dtype::F32, v.len(), v.iter().flat_map(|x| x.to_le_bytes()).collect())
            }
            StateTensor::U8(v) => (name.clone(), Dtype::U8, v.len(), v.clone()),
        })
        .collect();
    let views = bufs
        .iter()
        .map(|(n, dt, len, b)| TensorView::new(*dt, vec![*len], b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io(path, e))?;
    let meta: HashMap<String, String> =
        [("kind".to_string(), opt.kind.clone()), ("step".to_string(), opt.step.to_string())].into();
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| io(path, e))?;
    llama::lora::write_atomic(path, &bytes).map_err(|e| crate::disk::llama_write_error(e, out))
}

fn read_optimizer(path: &Path) -> Result<OptimizerState, String> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| io(path, format!("invalid safetensors: {e}")))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| io(path, format!("invalid safetensors: {e}")))?;
    let m = meta.metadata().as_ref().ok_or_else(|| io(path, "missing optimizer metadata"))?;
    let kind = m.get("kind").ok_or_else(|| io(path, "missing 'kind' in metadata"))?.clone();
    let step =
        m.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| io(path, "missing or bad 'step' in metadata"))?;
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut tensors = Vec::new();
    for n in names {
        let t = st.tensor(&n).map_err(|e| io(path, e))?;
        let v = match t.dtype() {
            Dtype::F32 => StateTensor::F32(
                t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            ),
            Dtype::U8 => StateTensor::U8(t.data().to_vec()),
            other => return Err(io(path, format!("tensor '{n}' has unexpected dtype {other:?}"))),
        };
        tensors.push((n, v));
    }
    Ok(OptimizerState { kind, step, tensors })
}

/// Read a checkpoint directory back: adapter, optimizer state, trainer state.
pub fn load(dir: &Path, model: &LlamaConfig) -> Result<(LoraParams, OptimizerState, TrainerState), String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a checkpoint directory (expected checkpoint-N/ written by train)", dir.display()));
    }
    let params = LoraParams::load_peft(dir, model).map_err(|e| e.to_string())?;
    let opt = read_optimizer(&dir.join("optimizer.safetensors"))?;
    let sp = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&sp).map_err(|e| io(&sp, e))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|e| io(&sp, format!("invalid trainer state: {e}")))?;
    Ok((params, opt, state))
}

/// Tidy what a killed process left under `out`: an incomplete `.checkpoint-N.tmp-PID` is
/// removed; a `.checkpoint-N.old-PID` (moved aside while step N was saved again) is put back as
/// `checkpoint-N` when the new one never arrived, and removed otherwise.
pub fn recover(out: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(out) else { return Ok(()) };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix(".checkpoint-") else { continue };
        let path = e.path();
        if rest.contains(".tmp-") {
            std::fs::remove_dir_all(&path).map_err(|err| io(&path, err))?;
        } else if let Some((step, _)) = rest.split_once(".old-") {
            let dir = out.join(format!("checkpoint-{step}"));
            if dir.exists() {
                std::fs::remove_dir_all(&path).map_err(|err| io(&path, err))?;
            } else {
                std::fs::rename(&path, &dir).map_err(|err| io(&dir, err))?;
            }
        }
    }
    Ok(())
}

/// The newest complete `checkpoint-N` under `out`, if any.
pub fn latest(out: &Path) -> Option<PathBuf> {
    std::fs::read_dir(out)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n: usize = name.strip_prefix("checkpoint-")?.parse().ok()?;
            Some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recover_removes_partial_writes_and_restores_a_moved_aside_checkpoint() {
        let out = std::env::temp_dir().join(format!("qlora-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        for d in [".checkpoint-4.tmp-77", ".checkpoint-3.old-77", "checkpoint-2", ".checkpoint-2.old-78"] {
            std::fs::create_dir_all(out.join(d)).unwrap();
            std::fs::write(out.join(d).join("marker"), d).unwrap();
        }
        recover(&out).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        names.sort();
        assert_eq!(names, vec!["checkpoint-2", "checkpoint-3"]);
        assert_eq!(std::fs::read_to_string(out.join("checkpoint-3/marker")).unwrap(), ".checkpoint-3.old-77");
        assert_eq!(std::fs::read_to_string(out.join("checkpoint-2/marker")).unwrap(), "checkpoint-2");
        assert_eq!(latest(&out).unwrap(), out.join("checkpoint-3"));
    }
}
