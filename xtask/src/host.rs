//! The host the images are built on: its tools (found on `PATH`, installed
//! with `apt-get` when missing and we may), and every external command,
//! run with a deadline; a failure names the command and ends with what it
//! printed (see [`ephemera_sys::command`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use ephemera_sys::command;

/// Prints a progress line.
pub fn log(msg: impl std::fmt::Display) {
    eprintln!("xtask images: {msg}");
}

/// Runs `cmd` within `timeout`; an error unless it exits 0.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    Ok(command::run(cmd, timeout)?)
}

/// Runs `cmd` within `timeout`; its stdout, or an error unless it exits 0.
pub fn stdout(cmd: &mut Command, timeout: Duration) -> Result<String> {
    Ok(command::stdout(cmd, timeout)?)
}

/// Runs `cmd` within `timeout` whatever its exit status (an error only if
/// it cannot start or runs too long).
pub fn output(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    Ok(command::output(cmd, timeout)?)
}

/// Runs `cmd` within `timeout`, copying its output to our stderr line by
/// line (a cargo build shows its progress).
pub fn run_echoing(cmd: &mut Command, timeout: Duration) -> Result<()> {
    command::run_echoing(cmd, timeout, &|line| eprintln!("  {line}"))?;
    Ok(())
}

/// `program` on `PATH` (or in `/sbin`, `/usr/sbin`, where `ldconfig` lives).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

/// Whether `path` is a file someone may execute.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `program`'s path; when it is missing, installs `package` with apt-get
/// (as root only) and looks again.
pub fn require(program: &str, package: &str) -> Result<PathBuf> {
    if let Some(p) = which(program) {
        return Ok(p);
    }
    apt_install(package).with_context(|| format!("{program} is missing"))?;
    which(program).with_context(|| format!("{program} still missing after installing {package}"))
}

fn apt_install(package: &str) -> Result<()> {
    let Some(apt) = which("apt-get") else {
        bail!("need the package {package}, and apt-get is not available: install it by hand");
    };
    if !is_root() {
        bail!("need the package {package}: run as root or `apt-get install -y {package}` first");
    }
    log(format!("installing {package} with apt-get"));
    let install = |apt: &Path| {
        run(
            Command::new(apt)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .args(["install", "-y", "--no-install-recommends", package]),
            Duration::from_secs(600),
        )
    };
    if install(&apt).is_ok() {
        return Ok(());
    }
    run(Command::new(&apt).arg("update"), Duration::from_secs(600))?;
    install(&apt)?;
    Ok(())
}

/// Whether we run as root (`chroot` and `apt-get` need it): `/proc/self`
/// belongs to the process's effective uid.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
