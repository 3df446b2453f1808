//! The `trainer` binary: QLoRA fine-tuning from the command line (see `../shared/CLI.md`).
//! Parses with clap (`cli.rs`), runs the subcommand, and on failure prints one line naming the
//! offending flag, file or tensor and exits non-zero. `train` is the default subcommand.

use clap::Parser;

fn main() {
    keep_freed_memory();
    let cli = match trainer::cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                // --help and --version print in full and succeed.
                let _ = e.print();
                std::process::exit(0);
            }
            // One line: clap's first line names the flag and the problem.
            let msg = e.to_string();
            let line = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!("trainer: {}", line.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    if let Err(e) = trainer::cli::run(cli) {
        eprintln!("trainer: {e}");
        std::process::exit(1);
    }
}

/// Every training step allocates and frees the same activation buffers (the 32 MB logits among
/// them). By default glibc gives freed memory at the top of the heap back to the kernel, and the
/// next step faults it in again, zeroed: about 11,000 page faults per bench-512 step. A fixed mmap
/// threshold of 32 MiB (larger blocks, such as weights being quantized, are still mapped and
/// returned when freed) and a trim threshold of 256 MiB keep the step's buffers in the heap, so
/// steady-state steps fault nothing. Peak RSS is unchanged: those blocks are live at the peak.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator tunables; this runs first in main, on one thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        // One arena: the ops allocate on the pool's workers, and per-thread arenas each keeping
        // freed blocks would raise peak RSS (bench-512: 369 MiB with one per thread, 331 with one).
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}
