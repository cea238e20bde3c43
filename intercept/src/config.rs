//! The environment interface, read once by the constructor.
//!
//! | variable | meaning |
//! |---|---|
//! | `EPHEMERA_TIER_DIR` | directory served by the tier (default `/tmp`), canonicalised |
//! | `EPHEMERA_MODE` | `memory`, `disk` or `adaptive`; wins over the control block's mode |
//! | `EPHEMERA_MEM_LIMIT` | budget in bytes or `64MiB` style when the control block has none |
//! | `EPHEMERA_CONTROL` | path of the control block to map |
//! | `EPHEMERA_STATS` | file to write this process's counters to as JSON at exit (`%p` = pid) |

use std::ffi::CStr;
use std::sync::OnceLock;

use ephemera_control_block::Mode;

/// Longest path we handle; longer tier paths pass through to the kernel.
pub const PATH_MAX: usize = 4096;

/// Settings fixed for the life of the process.
pub struct Config {
    /// Canonical tier directory, no trailing slash (except for `/`).
    pub tier: [u8; PATH_MAX],
    /// Bytes used in `tier`.
    pub tier_len: usize,
    /// Mode from `EPHEMERA_MODE`, if set and valid.
    pub mode_env: Option<Mode>,
    /// Budget from `EPHEMERA_MEM_LIMIT` (0 = not set).
    pub mem_limit_env: u64,
    /// `EPHEMERA_STATS`, NUL-terminated (empty = not set).
    pub stats: [u8; PATH_MAX],
    /// Bytes used in `stats` (0 = not set).
    pub stats_len: usize,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// The configuration, once the constructor has run.
pub fn get() -> Option<&'static Config> {
    CONFIG.get()
}

/// Reads the environment. Runs once, from the constructor.
pub fn init() {
    let mut cfg = Config {
        tier: [0; PATH_MAX],
        tier_len: 0,
        mode_env: env(c"EPHEMERA_MODE")
            .and_then(|v| std::str::from_utf8(v).ok().and_then(Mode::parse)),
        mem_limit_env: env(c"EPHEMERA_MEM_LIMIT")
            .and_then(crate::fmt::parse_size)
            .unwrap_or(0),
        stats: [0; PATH_MAX],
        stats_len: 0,
    };
    let dir = env(c"EPHEMERA_TIER_DIR")
        .filter(|d| !d.is_empty())
        .unwrap_or(b"/tmp");
    cfg.tier_len = canonical_dir(dir, &mut cfg.tier);
    if let Some(s) = env(c"EPHEMERA_STATS").filter(|s| s.len() < PATH_MAX - 1) {
        cfg.stats[..s.len()].copy_from_slice(s);
        cfg.stats_len = s.len();
    }
    let _ = CONFIG.set(cfg);
}

/// An environment variable's bytes.
pub fn env(name: &CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated; getenv returns NULL or a pointer into
    // the environment, which lives for the process (we never call setenv).
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a NUL-terminated string from the environment.
    Some(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// Canonicalises `dir` into `out` with realpath(3) (falling back to lexical
/// normalisation against the cwd when the directory does not exist yet);
/// returns the length.
fn canonical_dir(dir: &[u8], out: &mut [u8; PATH_MAX]) -> usize {
    let mut input = [0u8; PATH_MAX];
    if dir.len() >= PATH_MAX {
        return crate::path::normalize_into(b"/tmp", None, out).unwrap_or(0);
    }
    input[..dir.len()].copy_from_slice(dir);
    let mut resolved = [0 as libc::c_char; libc::PATH_MAX as usize];
    // SAFETY: `input` is NUL-terminated and `resolved` holds PATH_MAX bytes,
    // as realpath requires.
    let r = unsafe { libc::realpath(input.as_ptr().cast(), resolved.as_mut_ptr()) };
    if !r.is_null() {
        // SAFETY: realpath succeeded and wrote a NUL-terminated path.
        let s = unsafe { CStr::from_ptr(resolved.as_ptr()) }.to_bytes();
        return crate::path::normalize_into(s, None, out).unwrap_or(0);
    }
    let mut cwd = [0u8; PATH_MAX];
    let base = crate::sys::getcwd(&mut cwd).map(|n| &cwd[..n]);
    crate::path::normalize_into(dir, base, out).unwrap_or(0)
}
