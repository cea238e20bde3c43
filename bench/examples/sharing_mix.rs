//! Runs [`ephemera_bench::sharing_mix`] (issue 5's bench) without the CLI
//! (`ephemera bench sharing` runs the same), with the binaries named on the
//! command line:
//!
//! ```sh
//! cargo build --release -p ephemera-intercept -p ephemera-node-agent
//! cargo run --release -p ephemera-bench --example sharing_mix -- \
//!     --proxy target/release/ephemera-proxy \
//!     --intercept target/release/libephemera_intercept.so
//! ```

use std::path::PathBuf;

use clap::Parser;
use ephemera_bench::{sharing_mix, MixOptions};

#[derive(Parser)]
struct Args {
    /// The `ephemera-proxy` executable.
    #[arg(long)]
    proxy: PathBuf,
    /// `libephemera_intercept.so`.
    #[arg(long)]
    intercept: PathBuf,
    /// I/O operations (writes, and as many reads); default the thesis's 500000.
    #[arg(long)]
    ops: Option<u64>,
    /// I/O file size in MiB (default 128).
    #[arg(long)]
    file_mib: Option<u64>,
    /// CPU factorials per invocation (default: calibrated).
    #[arg(long)]
    cpu_rounds: Option<u64>,
    /// Invocations per task and scenario (default 2).
    #[arg(long)]
    repetitions: Option<usize>,
    /// Print the report as JSON too.
    #[arg(long)]
    json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,ephemera_bench=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    let mut o = MixOptions::new(a.proxy, a.intercept);
    o.io_ops = a.ops.unwrap_or(o.io_ops);
    o.io_file_mib = a.file_mib.unwrap_or(o.io_file_mib);
    o.cpu_rounds = a.cpu_rounds;
    o.repetitions = a.repetitions.unwrap_or(o.repetitions);
    let report = sharing_mix(o).await?;
    print!("{report}");
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
