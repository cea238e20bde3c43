//! `ephemera`: run the embedded cluster, a controller or an agent, or talk
//! to a running cluster. Parses arguments, sets up logging and tracing,
//! runs one command (`commands/`), and turns its error into an exit code.

mod args;
mod artifacts;
mod commands;
mod credentials;
mod dev;
mod output;
mod signals;
mod target;

use clap::Parser;

use crate::args::{Args, Cmd};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // State, logs, tokens and keys are the owner's alone.
    ephemera_sys::process::private_umask();
    let service = match args.command {
        Cmd::Dev(_) => Some("ephemera-dev"),
        Cmd::Controller(_) => Some("ephemera-controller"),
        Cmd::Agent(_) => Some("ephemera-agent"),
        _ => None,
    };
    // Logs to stderr; spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is
    // set. Dropping the guard at the end of `main` flushes them.
    let _telemetry = match service {
        Some(service) => ephemera_telemetry::init(service, "info,openraft=warn"),
        None => ephemera_telemetry::init("ephemera-cli", "warn"),
    };
    match commands::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
