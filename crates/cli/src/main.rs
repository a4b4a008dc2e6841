//! The `latentmas` command line. Each subcommand lives in its own file under `src/cli/`; what the tests and
//! benches reach as well is the library (`latentmas_cli`).

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // SIGINT/SIGTERM run cleanups (temporary files, sandboxes) before the process dies of the signal.
    if let Err(e) = latentmas_cli::interrupt::install() {
        eprintln!("warning: signal handling not installed ({e}); an interrupt may leave temporary files");
    }
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
