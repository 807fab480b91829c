//! The `adfit` binary: parse arguments, run, print the error chain, exit non-zero on failure.

use clap::Parser;

fn main() -> std::process::ExitCode {
    adfit::panic_context::install_hook();
    let cli = adfit::cli::Cli::parse();
    adfit::cli::init_logging(&cli.global);
    match adfit::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
