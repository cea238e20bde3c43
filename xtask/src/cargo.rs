//! The cargo builds behind the images, into their own target directory
//! (`target-static/` by default) so they never fight a dev's `target/`:
//!
//! - static binaries (`RUSTFLAGS="-C target-feature=+crt-static"`, target
//!   [`TRIPLE`]): they run `FROM scratch`;
//! - the intercept, a normal (dynamic) cdylib: it is `LD_PRELOAD`ed into
//!   glibc programs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::host;

/// The target the static binaries are built for.
pub const TRIPLE: &str = "x86_64-unknown-linux-gnu";
/// Makes glibc binaries static.
const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static";
/// Longest a cargo build may take (a cold static build takes ~7 min on 2 cores).
const BUILD_TIMEOUT: Duration = Duration::from_secs(45 * 60);

/// Where cargo builds the images' binaries.
#[derive(Debug, Clone)]
pub struct Cargo {
    /// The workspace root.
    pub repo: PathBuf,
    /// `CARGO_TARGET_DIR` of these builds.
    pub target_dir: PathBuf,
}

impl Cargo {
    /// Where the static binaries land.
    pub fn static_out(&self) -> PathBuf {
        self.target_dir.join(TRIPLE).join("release")
    }

    /// The intercept library, after [`Cargo::build_intercept`].
    pub fn intercept_lib(&self) -> PathBuf {
        self.target_dir.join("release/libephemera_intercept.so")
    }

    /// Adds the static target with rustup when rustup manages the toolchain.
    pub fn ensure_target(&self) -> Result<()> {
        if host::which("rustup").is_none() {
            return Ok(());
        }
        let installed = host::stdout(
            Command::new("rustup").args(["target", "list", "--installed"]),
            Duration::from_secs(60),
        )?;
        if !installed.lines().any(|l| l.trim() == TRIPLE) {
            host::run(
                Command::new("rustup").args(["target", "add", TRIPLE]),
                Duration::from_secs(600),
            )?;
        }
        Ok(())
    }

    /// Statically linked binaries: `cargo build --release --target TRIPLE
    /// ARGS` with `+crt-static`. Every call with the same `args` resolves
    /// features the same way, so a rerun rebuilds nothing.
    pub fn build_static(&self, args: &[&str]) -> Result<()> {
        let mut cmd = self.cargo();
        cmd.env("RUSTFLAGS", STATIC_RUSTFLAGS)
            .args(["build", "--release", "--target", TRIPLE])
            .args(args);
        host::run_echoing(&mut cmd, BUILD_TIMEOUT).context("static cargo build failed")
    }

    /// The intercept cdylib, dynamic, for this host.
    pub fn build_intercept(&self) -> Result<()> {
        let mut cmd = self.cargo();
        cmd.env_remove("RUSTFLAGS")
            .args(["build", "--release", "-p", "ephemera-intercept"]);
        host::run_echoing(&mut cmd, BUILD_TIMEOUT).context("intercept cargo build failed")
    }

    /// `cargo` in the workspace with our target dir, and none of the
    /// settings of a cargo that may be running us (`cargo test`, `cargo
    /// run`) that would change what is built.
    fn cargo(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(&self.repo)
            .env("CARGO_TARGET_DIR", &self.target_dir)
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_MAKEFLAGS");
        cmd
    }
}

/// `dir/name`, which must exist after a build.
pub fn built(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    anyhow::ensure!(path.is_file(), "{} missing after the build", path.display());
    Ok(path)
}
