//! QLoRA fine-tuning: optimizers, schedules, data, the training loop, checkpoints and export.
//! The `trainer` binary (src/main.rs) is the command line over this library.

pub mod bench_step;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod data;
pub mod disk;
pub mod optim;
pub mod quantize;
pub mod report;
pub mod schedule;
pub mod train;
pub mod trainable;
