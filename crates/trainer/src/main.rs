//! The `trainer` binary: QLoRA fine-tuning from the command line (see `../shared/CLI.md`).
//! Parses with clap (`cli.rs`), runs the subcommand, and on failure prints one line naming the
//! offending flag, file or tensor and exits non-zero. `train` is the default subcommand.

use clap::Parser;

fn main() {
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
