//! QLoRA fine-tuning: optimizers, schedules, data, the training loop, checkpoints and export.
//! The `trainer` binary (src/main.rs) is the command line over this library.

pub mod optim;
