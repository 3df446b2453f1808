//! The `trainer` binary: QLoRA fine-tuning from the command line (see `../shared/CLI.md`).
//!
//! The training loop arrives with issue 5; until then this prints what exists and exits non-zero.

fn main() {
    eprintln!("trainer: training arrives with issue 5 (QLoRA training end to end); nothing to run yet");
    std::process::exit(2);
}
