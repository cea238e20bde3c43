//! [`SandboxError`]: every failure names what was being done, on which path
//! and for which uid.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a sandbox could not be prepared, applied or cleaned up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// An I/O error while doing something named, on a named path.
    #[error("sandbox: {what} {path}: {source}")]
    Io {
        /// What we were doing ("creating", "chown to 2000001:2000001", ...).
        what: String,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A tenant name that cannot be stored or that would be ambiguous.
    #[error("sandbox: tenant name {tenant:?} is not allowed: {reason}")]
    InvalidTenant {
        /// The name as given.
        tenant: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Every uid of the configured range is taken.
    #[error("sandbox: no free uid left in {first}..{end} for tenant {tenant:?} (uids are never reused)", end = u64::from(*first) + u64::from(*count))]
    UidRangeExhausted {
        /// First uid of the range.
        first: u32,
        /// Number of uids in the range.
        count: u32,
        /// The tenant that needed one.
        tenant: String,
    },
    /// A uid range that is empty, wraps, or includes root or `(uid_t)-1`.
    #[error("sandbox: uid range {first}+{count} is not usable: {reason}")]
    BadUidRange {
        /// First uid of the range.
        first: u32,
        /// Number of uids in the range.
        count: u32,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The uid range is not mapped in this process's user namespace, so
    /// `setresuid` to it would fail with `EINVAL`.
    #[error("sandbox: {kind} {first}..{end} is not mapped in {map} (this user namespace cannot switch to it)", end = u64::from(*first) + u64::from(*count))]
    NotMapped {
        /// "uid range" or "gid range".
        kind: &'static str,
        /// First id.
        first: u32,
        /// Number of ids.
        count: u32,
        /// `/proc/self/uid_map` or `/proc/self/gid_map`.
        map: &'static str,
    },
    /// The persisted tenant → uid file is not what this crate writes.
    #[error("sandbox: tenant uid file {path} is corrupt: {reason}")]
    CorruptUidFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// A policy asked for uid 0 or gid 0: the sandbox never runs functions as root.
    #[error("sandbox: refusing to run an instance as uid {uid} gid {gid} (root)")]
    RootIds {
        /// The uid asked for.
        uid: u32,
        /// The gid asked for.
        gid: u32,
    },
    /// A path the policy needs is relative (it would resolve against a
    /// working directory the sandboxed process may not share or reach).
    #[error("sandbox: the {what} {path} must be an absolute path")]
    RelativePath {
        /// Which path of the policy.
        what: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// The instance uid cannot walk to a path: a directory on the way has no
    /// search (x) permission for it.
    #[error("sandbox: uid {uid} gid {gid} cannot reach {path}: {blocked_at} (mode {mode:o}, owner {owner}:{group}) has no search permission for it")]
    Unreachable {
        /// The path the instance needs.
        path: PathBuf,
        /// The directory that stops it.
        blocked_at: PathBuf,
        /// Its mode bits.
        mode: u32,
        /// Its owner uid.
        owner: u32,
        /// Its group.
        group: u32,
        /// The instance uid.
        uid: u32,
        /// The instance gid.
        gid: u32,
    },
    /// Something in the code directory that the sandbox refuses to publish.
    #[error(
        "sandbox: code entry {path} is a {kind}; only files, directories and symlinks are allowed"
    )]
    CodeEntry {
        /// The entry.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// Building the Landlock ruleset failed.
    #[error("sandbox: Landlock: {what}: {source}")]
    Landlock {
        /// What we were doing (and on which path).
        what: String,
        /// The crate's error.
        source: landlock::RulesetError,
    },
    /// A path of the view could not be opened to become a Landlock rule.
    #[error("sandbox: Landlock: opening {path} for a rule: {source}")]
    LandlockPath {
        /// The path.
        path: PathBuf,
        /// The crate's error.
        source: landlock::PathFdError,
    },
    /// The policy requires Landlock and the kernel does not provide it.
    #[error("sandbox: Landlock is required but unavailable: {reason}")]
    LandlockUnavailable {
        /// Why.
        reason: String,
    },
    /// Compiling the seccomp filter failed.
    #[error("sandbox: seccomp filter for {arch}: {source}")]
    Seccomp {
        /// The target architecture.
        arch: &'static str,
        /// The compiler's error.
        source: seccompiler::BackendError,
    },
    /// The seccomp filter is not written for this architecture.
    #[error("sandbox: no seccomp filter for architecture {arch}")]
    SeccompArch {
        /// `std::env::consts::ARCH`.
        arch: &'static str,
    },
    /// A step between fork and exec failed in the child.
    #[error("sandbox: in the child for uid {uid} gid {gid}: {step}: {source}")]
    ChildSetup {
        /// The step ("setresuid", "landlock_restrict_self", "joining cgroup <path>", ...).
        step: String,
        /// The instance uid.
        uid: u32,
        /// The instance gid.
        gid: u32,
        /// The error the step returned.
        source: io::Error,
    },
    /// Processes were still in a cgroup at the deadline.
    #[error("sandbox: cgroup {path}: processes still running after {waited:?}; left in place")]
    CgroupBusy {
        /// The cgroup.
        path: PathBuf,
        /// How long we tried.
        waited: Duration,
    },
}

/// Maps an `io::Error` to [`SandboxError::Io`] for `what` on `path`.
pub(crate) fn io_err(
    what: impl Into<String>,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> SandboxError {
    let what = what.into();
    let path = path.into();
    move |source| SandboxError::Io { what, path, source }
}
