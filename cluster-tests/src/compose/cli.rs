//! The `ephemera` CLI against the cluster, with its admin token: plain, or
//! exporting its spans to the cluster's collector.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::docker::run_ok;
use super::{repo_root, ComposeCluster};

/// The `ephemera` CLI: the static one the image build makes, else the
/// workspace's debug build.
pub fn cli_binary() -> PathBuf {
    let root = repo_root();
    let candidates = [
        std::env::var_os("EPHEMERA_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target-static"))
            .join("x86_64-unknown-linux-gnu/release/ephemera"),
        root.join("target/debug/ephemera"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("no ephemera CLI at {candidates:?}: build the images first"))
}

impl ComposeCluster {
    /// Runs the `ephemera` CLI against controller `via` (60 s deadline).
    pub fn cli(&self, via: u64, args: &[&str]) -> Result<String, String> {
        run_ok(&mut self.cli_command(via, args), Duration::from_secs(60))
    }

    /// The CLI with `args`, talking to controller `via` with the admin token.
    fn cli_command(&self, via: u64, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cli_path);
        cmd.env("EPHEMERA_ENDPOINT", self.endpoint(via))
            .env("EPHEMERA_TOKEN", &self.token)
            .env("EPHEMERA_CA", self.ca_file())
            .env_remove("EPHEMERA_LOG")
            .args(args);
        cmd
    }

    /// Runs the CLI like [`Self::cli`], exporting its spans to the
    /// cluster's collector (through its published port).
    pub fn cli_traced(&self, via: u64, args: &[&str]) -> Result<String, String> {
        let port = self
            .env
            .iter()
            .find(|(k, _)| k == "EPHEMERA_PORT_OTEL")
            .map(|(_, v)| v.clone())
            .ok_or("no collector port")?;
        run_ok(
            self.cli_command(via, args)
                .env(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://127.0.0.1:{port}"),
                )
                .env("OTEL_BSP_SCHEDULE_DELAY", "200"),
            Duration::from_secs(60),
        )
    }
}
