//! Shared helpers: locate the built `.so`, run programs under it, read the
//! counters they leave behind.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The built `libephemera_intercept.so`, found from this test binary's path
/// (`<target>/<profile>/deps/<test>`): cargo builds the library (crate types
/// `cdylib` + `rlib`) before integration tests and leaves the `.so` next to
/// the test binary in `deps/`; `cargo build` also copies it to
/// `<target>/<profile>/`. The `deps/` copy is preferred: it is always from
/// the same build as the test.
pub fn so_path() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe
        .parent()
        .expect("test binary lives in <target>/<profile>/deps");
    let profile_dir = deps
        .parent()
        .expect("test binary lives in <target>/<profile>/deps");
    let candidates = [
        deps.join("libephemera_intercept.so"),
        profile_dir.join("libephemera_intercept.so"),
    ];
    candidates.iter().find(|p| p.exists()).cloned().unwrap_or_else(|| {
        panic!(
            "{} is missing: run `cargo build -p ephemera-intercept` (same profile and CARGO_TARGET_DIR) first",
            candidates[1].display()
        )
    })
}

/// Whether a program is on PATH (tests of optional tools skip without it).
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A command run with the tier preloaded over `tier`.
pub fn tiered(program: &str, tier: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("LD_PRELOAD", so_path())
        .env("EPHEMERA_TIER_DIR", tier)
        .env_remove("EPHEMERA_CONTROL")
        .env_remove("EPHEMERA_STATS")
        .env_remove("EPHEMERA_MODE")
        .env_remove("EPHEMERA_MEM_LIMIT");
    c
}

/// Runs a command and insists it succeeded.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}:\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Parses the flat JSON object written by `EPHEMERA_STATS`.
pub fn read_stats(path: &Path) -> BTreeMap<String, serde_json::Value> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("stats {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("stats {} is not JSON ({e}): {text}", path.display()))
}

/// A counter from a stats object.
pub fn counter(stats: &BTreeMap<String, serde_json::Value>, name: &str) -> u64 {
    stats
        .get(name)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("stats have no counter {name}: {stats:?}"))
}

/// Every file under `root` (relative path → bytes), read without the tier.
pub fn tree(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let ft = e.file_type().unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if ft.is_dir() {
                out.insert(rel.join(""), Vec::new());
                stack.push(p);
            } else if ft.is_file() {
                let bytes = std::fs::read(&p).unwrap();
                assert_eq!(
                    std::fs::metadata(&p).unwrap().len(),
                    bytes.len() as u64,
                    "{} size differs from its bytes",
                    p.display()
                );
                out.insert(rel, bytes);
            }
        }
    }
    out
}

/// A temporary directory that, when dropped, also removes the file table
/// the preload makes in `/dev/shm` for every directory under it that served
/// as a tier without a control block (`ephemera-tier.<uid>.<dev>.<ino>`,
/// see `src/shared.rs`): tests leave nothing behind.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A fresh [`Scratch`] directory.
pub fn tempdir() -> std::io::Result<Scratch> {
    tempfile::tempdir().map(Scratch)
}

impl Drop for Scratch {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
            return;
        };
        let mut dirs = vec![self.0.path().to_path_buf()];
        while let Some(dir) = dirs.pop() {
            if let Ok(m) = std::fs::symlink_metadata(&dir) {
                let table = format!("/dev/shm/ephemera-tier.{uid}.{}.{}", m.dev(), m.ino());
                let _ = std::fs::remove_file(table);
            }
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
        }
    }
}
