//! `ephemera-collector`: receives OTLP/gRPC traces and appends every span as
//! one JSON line to `--out`. Stops on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ephemera_telemetry::{TelemetryConfig, TelemetryGuard};

#[derive(Parser, Debug)]
#[command(
    name = "ephemera-collector",
    version,
    about = "OTLP/gRPC trace receiver writing one JSON line per span"
)]
struct Args {
    /// Address to listen on for OTLP/gRPC.
    #[arg(long, default_value = "0.0.0.0:4317")]
    listen: SocketAddr,
    /// File the spans are appended to (JSON lines).
    #[arg(long)]
    out: PathBuf,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // Never export our own spans (to ourselves).
    let _guard: TelemetryGuard = ephemera_telemetry::init_with(TelemetryConfig {
        service_name: "ephemera-collector".into(),
        default_filter: "info".into(),
        otlp_endpoint: None,
    });
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!(
        "ephemera-collector listening on {addr}, writing {}",
        args.out.display()
    );
    tracing::info!(%addr, out = %args.out.display(), "collector serving");
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    ephemera_telemetry::serve_collector(listener, &args.out, shutdown)
        .await
        .with_context(|| format!("collecting into {}", args.out.display()))
}
