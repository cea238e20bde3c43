//! The filesystem view: which paths an instance may touch and how, turned
//! into a Landlock ruleset before the fork.
//!
//! Rights are Landlock's, targeted at ABI 6 (the newest this crate is tested
//! against; the kernel here has 7, which adds only audit-log flags). On an
//! older kernel the `landlock` crate drops what the kernel does not know
//! (best effort) and [`LandlockReport`] says what was left out. Network
//! (ABI 4 TCP rights) is not handled: functions may open connections, and the
//! cluster's own services authenticate their peers instead.
//!
//! What each kind of path gets:
//!
//! | kind | rights | why |
//! | --- | --- | --- |
//! | runtime (`/usr`, `/lib*`, `/bin`, `/sbin`, extra `read_exec`) | read, list, execute | interpreters, libraries, the proxy and the intercept library |
//! | system files ([`SYSTEM_FILES`]) | read | the loader cache, time zone, name resolution, CA certificates, Debian's Python `sitecustomize` |
//! | `/proc`, `/sys/fs/cgroup`, `/sys/devices/system/cpu` | read, list | `/proc/self/*`, the memory adapter reads its cgroup's usage, CPU count |
//! | `/dev/null`, `/dev/zero` | read, write (and truncate for `> /dev/null`) | |
//! | `/dev/urandom`, `/dev/random` | read | |
//! | code directory | read, list, execute | a function may ship an executable handler |
//! | instance directory | read, list, write, create files and the proxy's socket, unlink | the proxy's socket and the launcher's logs |
//! | tier directory | all of the above + truncate, mkdir, rmdir, rename across directories | the function's temporary files |
//! | control block | read, write (no truncate) | the intercept maps it; shrinking it is how a function could crash the agent |
//!
//! Never granted anywhere: creating symlinks, FIFOs or device nodes, and
//! executing from a writable directory. The agent works in the instance and
//! tier directories as root (crash repair, cleanup), so no symlink there can
//! point it elsewhere and no FIFO can block it. `/etc/passwd` and
//! `/etc/group` are left out: the tenant uid has no entry in them anyway
//! (lookups fail the same way), and they would only tell a function the
//! node's accounts. `/dev/shm` is left out because it is shared by every
//! tenant (POSIX semaphores and `multiprocessing` locks need it).

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::OnceLock;

use landlock::{
    Access as _, AccessFs, BitFlags, PathBeneath, PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr,
    Scope, ABI,
};

use crate::error::SandboxError;

/// The Landlock ABI this crate requests rights from (see the module doc).
pub const TARGET_ABI: ABI = ABI::V6;

/// Directories of the runtime: read, list and execute.
pub const RUNTIME_DIRS: &[&str] = &[
    "/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin",
];

/// Files and directories under `/etc` (and other system places) a program
/// reads: the loader cache, the time zone, name resolution, CA certificates,
/// MIME types. `/etc/python3*` is added when present (Debian's Python imports
/// `sitecustomize` from there and prints an error when it cannot).
pub const SYSTEM_FILES: &[&str] = &[
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/mime.types",
    "/etc/ssl",
];

/// Kernel interfaces, read-only.
pub const KERNEL_READ: &[&str] = &["/proc", "/sys/fs/cgroup", "/sys/devices/system/cpu"];

/// How a path of the view may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathAccess {
    /// Read and list.
    ReadOnly,
    /// Read, list and execute.
    ReadExec,
    /// A device: read and write (and truncate, for `> /dev/null`).
    DeviceReadWrite,
    /// The instance directory: read, write, create regular files and sockets, unlink.
    Instance,
    /// The tier directory: everything but symlinks, FIFOs, devices and exec.
    Tier,
    /// The control block: read and write, never truncate.
    Control,
}

impl PathAccess {
    /// The Landlock rights, before masking by what the kernel supports.
    pub fn rights(self) -> BitFlags<AccessFs> {
        use AccessFs as A;
        let read = A::ReadFile | A::ReadDir;
        match self {
            PathAccess::ReadOnly => read,
            PathAccess::ReadExec => read | A::Execute,
            PathAccess::DeviceReadWrite => A::ReadFile | A::WriteFile | A::Truncate,
            PathAccess::Instance => read | A::WriteFile | A::MakeReg | A::MakeSock | A::RemoveFile,
            PathAccess::Tier => {
                read | A::WriteFile
                    | A::MakeReg
                    | A::MakeDir
                    | A::RemoveFile
                    | A::RemoveDir
                    | A::Truncate
                    | A::Refer
            }
            PathAccess::Control => A::ReadFile | A::WriteFile,
        }
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            PathAccess::ReadOnly => "read-only",
            PathAccess::ReadExec => "read+exec",
            PathAccess::DeviceReadWrite => "device read-write",
            PathAccess::Instance => "instance (create files, sockets)",
            PathAccess::Tier => "tier (read-write)",
            PathAccess::Control => "control block (read-write, no truncate)",
        }
    }
}

/// One path of the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The path (a directory covers everything beneath it).
    pub path: PathBuf,
    /// How it may be used.
    pub access: PathAccess,
    /// A missing required path is an error; a missing optional one (a
    /// system path this distribution does not have) is skipped and reported.
    pub required: bool,
}

/// The default part of every view: runtime, system files, kernel
/// interfaces, devices. Computed once per process (it lists `/etc`).
pub(crate) fn system_rules() -> Vec<Rule> {
    static RULES: OnceLock<Vec<Rule>> = OnceLock::new();
    RULES.get_or_init(list_system_rules).clone()
}

fn list_system_rules() -> Vec<Rule> {
    let optional = |p: &str, access| Rule {
        path: PathBuf::from(p),
        access,
        required: false,
    };
    let mut rules: Vec<Rule> = RUNTIME_DIRS
        .iter()
        .map(|p| optional(p, PathAccess::ReadExec))
        .collect();
    rules.extend(
        SYSTEM_FILES
            .iter()
            .map(|p| optional(p, PathAccess::ReadOnly)),
    );
    if let Ok(entries) = std::fs::read_dir("/etc") {
        let mut python: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path())
            .collect();
        python.sort();
        rules.extend(python.into_iter().map(|path| Rule {
            path,
            access: PathAccess::ReadOnly,
            required: false,
        }));
    }
    rules.extend(
        KERNEL_READ
            .iter()
            .map(|p| optional(p, PathAccess::ReadOnly)),
    );
    rules.push(optional("/dev/null", PathAccess::DeviceReadWrite));
    rules.push(optional("/dev/zero", PathAccess::DeviceReadWrite));
    rules.push(optional("/dev/urandom", PathAccess::ReadOnly));
    rules.push(optional("/dev/random", PathAccess::ReadOnly));
    rules
}

/// Whether Landlock is in force, as far as the kernel allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// Every right and scope requested is enforced.
    Full,
    /// The kernel's ABI is older than [`TARGET_ABI`]: some rights are not
    /// handled (see [`LandlockReport::unavailable`]).
    Partial,
    /// No Landlock (kernel without it, or turned off by the policy).
    None,
}

/// What the Landlock ruleset enforces, for [`crate::Applied`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockReport {
    /// The kernel's Landlock ABI (0: none).
    pub kernel_abi: i32,
    /// Overall.
    pub enforcement: Enforcement,
    /// Filesystem rights the ruleset handles (denied unless a rule grants them).
    pub handled: Vec<String>,
    /// Scopes (ABI 6): signals and abstract unix sockets stay inside the instance.
    pub scopes: Vec<String>,
    /// Rights and scopes asked for that this kernel does not know.
    pub unavailable: Vec<String>,
    /// The rules added: path and kind.
    pub rules: Vec<(PathBuf, PathAccess)>,
    /// Optional paths that do not exist here and were left out.
    pub skipped: Vec<PathBuf>,
    /// Why Landlock is not in force, when it is not.
    pub reason: Option<String>,
}

/// The kernel's Landlock ABI version, or the errno that says why there is none.
pub fn kernel_abi() -> Result<i32, i32> {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION with a null attribute and size 0
    // only queries the version; no memory is read or written.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if v < 0 {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENOSYS))
    } else {
        Ok(v as i32)
    }
}

fn fs_names(flags: BitFlags<AccessFs>) -> Vec<String> {
    flags.iter().map(|f| format!("{f:?}")).collect()
}

fn scope_names(flags: BitFlags<Scope>) -> Vec<String> {
    flags.iter().map(|f| format!("{f:?}")).collect()
}

/// A system path opened once (`O_PATH`) for every ruleset of this process;
/// `None` when it does not exist here.
type OpenedPath = Option<(PathFd, bool)>;

/// The system paths, opened on first use and kept: each instance start then
/// costs one `landlock_add_rule` per system path instead of an open, a stat
/// and a close. (A path replaced later, e.g. `/etc/resolv.conf` rewritten by
/// rename, keeps its old inode here until the agent restarts.)
fn opened_system_paths() -> &'static HashMap<PathBuf, OpenedPath> {
    static OPENED: OnceLock<HashMap<PathBuf, OpenedPath>> = OnceLock::new();
    OPENED.get_or_init(|| {
        system_rules()
            .into_iter()
            .map(|r| {
                let opened = PathFd::new(&r.path).ok().map(|fd| {
                    let dir = std::fs::metadata(&r.path)
                        .map(|m| m.is_dir())
                        .unwrap_or(false);
                    (fd, dir)
                });
                (r.path, opened)
            })
            .collect()
    })
}

/// Builds the ruleset: returns its fd (`None` when Landlock is not in
/// force) and the report.
pub(crate) fn build(
    rules: &[Rule],
    require: bool,
) -> Result<(Option<OwnedFd>, LandlockReport), SandboxError> {
    let requested_fs = AccessFs::from_all(TARGET_ABI);
    let requested_scope = Scope::from_all(TARGET_ABI);
    let abi = match kernel_abi() {
        Ok(v) => v,
        Err(errno) => {
            let reason = match errno {
                libc::EOPNOTSUPP => {
                    "Landlock is built into the kernel but not enabled at boot (lsm=)".to_string()
                }
                libc::ENOSYS => {
                    "the kernel has no Landlock (before 5.13 or not built in)".to_string()
                }
                e => format!("landlock_create_ruleset failed with errno {e}"),
            };
            if require {
                return Err(SandboxError::LandlockUnavailable { reason });
            }
            return Ok((
                None,
                LandlockReport {
                    kernel_abi: 0,
                    enforcement: Enforcement::None,
                    handled: Vec::new(),
                    scopes: Vec::new(),
                    unavailable: fs_names(requested_fs)
                        .into_iter()
                        .chain(scope_names(requested_scope))
                        .collect(),
                    rules: Vec::new(),
                    skipped: Vec::new(),
                    reason: Some(reason),
                },
            ));
        }
    };
    let kernel = ABI::from(abi);
    let fs = requested_fs & AccessFs::from_all(kernel);
    let scope = requested_scope & Scope::from_all(kernel);
    let ll = |what: String| move |source| SandboxError::Landlock { what, source };
    let mut ruleset = Ruleset::default()
        .handle_access(requested_fs)
        .map_err(ll("handling filesystem rights".into()))?
        .scope(requested_scope)
        .map_err(ll("scoping signals and abstract sockets".into()))?
        .create()
        .map_err(ll("creating the ruleset".into()))?
        // The child sets no_new_privs itself, before the ruleset.
        .no_new_privs(false);
    let mut added = Vec::new();
    let mut skipped = Vec::new();
    let system = opened_system_paths();
    for rule in rules {
        let opened;
        let (fd, is_dir) = match system.get(&rule.path).filter(|_| !rule.required) {
            Some(Some((fd, dir))) => (fd.as_fd(), *dir),
            Some(None) => {
                skipped.push(rule.path.clone());
                continue;
            }
            None => {
                opened = match PathFd::new(&rule.path) {
                    Ok(fd) => fd,
                    Err(_) if !rule.required && !rule.path.exists() => {
                        skipped.push(rule.path.clone());
                        continue;
                    }
                    Err(source) => {
                        return Err(SandboxError::LandlockPath {
                            path: rule.path.clone(),
                            source,
                        })
                    }
                };
                let dir = std::fs::metadata(&rule.path)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                (opened.as_fd(), dir)
            }
        };
        let mut access = rule.access.rights() & fs;
        if !is_dir {
            access &= AccessFs::from_file(kernel);
        }
        if access.is_empty() {
            skipped.push(rule.path.clone());
            continue;
        }
        ruleset = ruleset
            .add_rule(PathBeneath::new(fd, access))
            .map_err(ll(format!("adding a rule for {}", rule.path.display())))?;
        added.push((rule.path.clone(), rule.access));
    }
    let fd: Option<OwnedFd> = ruleset.into();
    let unavailable: Vec<String> = fs_names(requested_fs & !fs)
        .into_iter()
        .chain(scope_names(requested_scope & !scope))
        .collect();
    let enforcement = match (&fd, unavailable.is_empty()) {
        (None, _) => Enforcement::None,
        (Some(_), true) => Enforcement::Full,
        (Some(_), false) => Enforcement::Partial,
    };
    if fd.is_none() && require {
        return Err(SandboxError::LandlockUnavailable {
            reason: format!("kernel ABI {abi} but no ruleset was created"),
        });
    }
    Ok((
        fd,
        LandlockReport {
            kernel_abi: abi,
            enforcement,
            handled: fs_names(fs),
            scopes: scope_names(scope),
            unavailable,
            rules: added,
            skipped,
            reason: None,
        },
    ))
}
