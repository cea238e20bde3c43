//! Where the pieces that run inside function instances live: the intercept
//! library and the proxy binary are built next to `ephemera` (the same
//! `target/<profile>/` directory, or the same install prefix), and either can
//! be overridden through the environment.

use std::path::{Path, PathBuf};

/// Environment variable naming the intercept library.
pub const INTERCEPT_ENV: &str = "EPHEMERA_INTERCEPT_LIB";
/// Environment variable naming the proxy binary.
pub const PROXY_ENV: &str = "EPHEMERA_PROXY_BIN";

fn exe_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.parent().map(Path::to_path_buf)
}

fn find(env: Option<&str>, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = env.and_then(std::env::var_os) {
        return Some(PathBuf::from(p));
    }
    let dir = exe_dir()?;
    // Integration tests run from target/<profile>/deps; binaries sit one level up.
    let candidates = [
        dir.clone(),
        dir.parent().map(Path::to_path_buf).unwrap_or(dir),
    ];
    candidates
        .iter()
        .flat_map(|d| names.iter().map(move |n| d.join(n)))
        .find(|p| p.exists())
}

/// The intercept library, if it was built.
pub fn intercept_lib() -> Option<PathBuf> {
    find(
        Some(INTERCEPT_ENV),
        &[
            "libephemera_intercept.so",
            "../lib/libephemera_intercept.so",
        ],
    )
}

/// The proxy binary.
pub fn proxy_bin() -> anyhow::Result<PathBuf> {
    find(Some(PROXY_ENV), &["ephemera-proxy"]).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot find the ephemera-proxy binary next to {} (build the workspace with `cargo build`, or set {PROXY_ENV})",
            exe_dir().map(|d| d.display().to_string()).unwrap_or_default()
        )
    })
}

/// Another binary built with `ephemera` (e.g. `tier-bench`).
pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
    find(None, &[name]).ok_or_else(|| {
        anyhow::anyhow!(
            "cannot find {name} next to {} (build the workspace with `cargo build --release`)",
            exe_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        )
    })
}
