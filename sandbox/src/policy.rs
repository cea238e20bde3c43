//! [`SandboxPolicy`]: one instance's sandbox, built by the runtime and applied
//! to the `Command` that starts it; [`Applied`]: what was put in force.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use crate::child::{step, ChildSetup};
use crate::dirs;
use crate::error::{io_err, SandboxError};
use crate::pids::PidsCgroup;
use crate::seccomp::{self, SeccompReport};
use crate::uids::Ids;
use crate::view::{self, Enforcement, LandlockReport, PathAccess, Rule};

/// Default `RLIMIT_NPROC` for a tenant uid. The limit counts every task of
/// the uid on the node (all instances of the tenant together), so it is a
/// backstop behind the per-instance pids cgroup, not a per-instance bound.
pub const DEFAULT_RLIMIT_NPROC: u64 = 4096;

/// One instance's sandbox. Build it with [`SandboxPolicy::new`] and the
/// builder methods, give the instance's directories their owners with
/// [`SandboxPolicy::prepare_dirs`], then [`SandboxPolicy::apply_to`] the
/// command that starts the instance.
///
/// By default: the system part of the view ([`crate::view`]), a cleared
/// environment, `no_new_privs`, the seccomp filter, Landlock (best effort),
/// `RLIMIT_NPROC` = [`DEFAULT_RLIMIT_NPROC`], no core dumps, inherited
/// descriptors above 2 closed at exec.
#[derive(Debug, Clone)]
#[must_use]
pub struct SandboxPolicy {
    /// Who the instance runs as.
    ids: Ids,
    /// The whole environment of the instance.
    env: Vec<(OsString, OsString)>,
    /// The filesystem view.
    rules: Vec<Rule>,
    /// Code directory (read-only).
    code_dir: Option<PathBuf>,
    /// Instance directory.
    instance_dir: Option<PathBuf>,
    /// Tier directory.
    tier_dir: Option<PathBuf>,
    /// Control block.
    control_block: Option<PathBuf>,
    /// `cgroup.procs` files to join before dropping privileges.
    cgroups: Vec<PathBuf>,
    /// The pids cgroup's bound, for the report.
    pids_max: Option<u64>,
    /// `RLIMIT_NPROC`.
    rlimit_nproc: Option<u64>,
    /// Allow core dumps.
    core_dumps: bool,
    /// Landlock on.
    landlock: bool,
    /// Fail when Landlock is unavailable.
    require_landlock: bool,
    /// Seccomp on.
    seccomp: bool,
    /// Mark inherited descriptors above 2 close-on-exec.
    close_inherited_fds: bool,
}

impl SandboxPolicy {
    /// A policy for an instance running as `ids`, with the system part of
    /// the view and nothing of its own yet.
    pub fn new(ids: Ids) -> SandboxPolicy {
        SandboxPolicy {
            ids,
            env: Vec::new(),
            rules: view::system_rules(),
            code_dir: None,
            instance_dir: None,
            tier_dir: None,
            control_block: None,
            cgroups: Vec::new(),
            pids_max: None,
            rlimit_nproc: Some(DEFAULT_RLIMIT_NPROC),
            core_dumps: false,
            landlock: true,
            require_landlock: false,
            seccomp: true,
            close_inherited_fds: true,
        }
    }

    /// The ids the instance runs as.
    pub fn ids(&self) -> Ids {
        self.ids
    }

    /// Adds one environment variable (the environment starts empty).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_os_string(), value.as_ref().to_os_string()));
        self
    }

    /// Adds environment variables.
    pub fn envs<I, K, V>(mut self, vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    fn rule(mut self, path: impl Into<PathBuf>, access: PathAccess) -> Self {
        self.rules.push(Rule {
            path: path.into(),
            access,
            required: true,
        });
        self
    }

    /// The function's code: read, list, execute; never written.
    pub fn code_dir(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.code_dir = Some(path.clone());
        self.rule(path, PathAccess::ReadExec)
    }

    /// The instance directory: the proxy's socket and logs (see [`crate::view`]).
    pub fn instance_dir(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.instance_dir = Some(path.clone());
        self.rule(path, PathAccess::Instance)
    }

    /// The tier directory: the function's files, read-write.
    pub fn tier_dir(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.tier_dir = Some(path.clone());
        self.rule(path, PathAccess::Tier)
    }

    /// The control block: read-write, never truncated.
    pub fn control_block(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.control_block = Some(path.clone());
        self.rule(path, PathAccess::Control)
    }

    /// Another path to read and execute: the proxy binary, the intercept
    /// library, the launcher directory.
    pub fn read_exec(self, path: impl Into<PathBuf>) -> Self {
        self.rule(path, PathAccess::ReadExec)
    }

    /// Another path to read (and list).
    pub fn read_only(self, path: impl Into<PathBuf>) -> Self {
        self.rule(path, PathAccess::ReadOnly)
    }

    /// Another path to read and write like a tier directory.
    pub fn read_write(self, path: impl Into<PathBuf>) -> Self {
        self.rule(path, PathAccess::Tier)
    }

    /// Joins `cgroup` (and so its pids bound) in the child before it drops
    /// privileges.
    pub fn pids_cgroup(mut self, cgroup: &PidsCgroup) -> Self {
        self.pids_max = cgroup.max();
        self.join_cgroup(cgroup.procs_file())
    }

    /// Joins another cgroup (its `cgroup.procs`, e.g. the instance's memory
    /// cgroup) in the child before it drops privileges. Joins run in the
    /// order given; the file is opened by [`SandboxPolicy::apply_to`].
    pub fn join_cgroup(mut self, procs_file: impl Into<PathBuf>) -> Self {
        let p = procs_file.into();
        if !self.cgroups.contains(&p) {
            self.cgroups.push(p);
        }
        self
    }

    /// `RLIMIT_NPROC` of the tenant uid (`None`: inherit the agent's).
    pub fn rlimit_nproc(mut self, limit: Option<u64>) -> Self {
        self.rlimit_nproc = limit;
        self
    }

    /// Allow core dumps (default: `RLIMIT_CORE` = 0).
    pub fn core_dumps(mut self, allow: bool) -> Self {
        self.core_dumps = allow;
        self
    }

    /// Landlock on (default) or off (`--insecure`, diagnostics).
    pub fn landlock(mut self, on: bool) -> Self {
        self.landlock = on;
        self
    }

    /// Refuse to start when the kernel has no Landlock (default: run and say so).
    pub fn require_landlock(mut self, required: bool) -> Self {
        self.require_landlock = required;
        self
    }

    /// The seccomp filter on (default) or off (`--insecure`, diagnostics).
    pub fn seccomp(mut self, on: bool) -> Self {
        self.seccomp = on;
        self
    }

    /// Mark every inherited descriptor above 2 close-on-exec (default on):
    /// a descriptor the agent opened without `O_CLOEXEC` never reaches the
    /// function.
    pub fn close_inherited_fds(mut self, on: bool) -> Self {
        self.close_inherited_fds = on;
        self
    }

    /// The paths of the view, in order (system part first).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    fn check(&self) -> Result<(), SandboxError> {
        if self.ids.uid == 0 || self.ids.gid == 0 {
            return Err(SandboxError::RootIds {
                uid: self.ids.uid,
                gid: self.ids.gid,
            });
        }
        for r in self.rules.iter().filter(|r| r.required) {
            if !r.path.is_absolute() {
                return Err(SandboxError::RelativePath {
                    what: r.access.name(),
                    path: r.path.clone(),
                });
            }
        }
        for p in &self.cgroups {
            if !p.is_absolute() {
                return Err(SandboxError::RelativePath {
                    what: "cgroup.procs file",
                    path: p.clone(),
                });
            }
        }
        Ok(())
    }

    /// Gives the instance uid its instance directory, tier directory and
    /// control block ([`dirs::prepare_instance`], for those set), makes the
    /// code directory readable and unwritable ([`dirs::prepare_code_dir`]),
    /// and checks that the uid can reach every path of its own
    /// ([`dirs::check_reachable`]).
    pub fn prepare_dirs(&self) -> Result<(), SandboxError> {
        self.check()?;
        if let (Some(i), Some(t), Some(c)) =
            (&self.instance_dir, &self.tier_dir, &self.control_block)
        {
            dirs::prepare_instance(self.ids, i, t, c)?;
        }
        if let Some(code) = &self.code_dir {
            dirs::prepare_code_dir(code)?;
        }
        for r in self.rules.iter().filter(|r| r.required) {
            dirs::check_reachable(&r.path, self.ids)?;
        }
        Ok(())
    }

    /// Applies the policy to `cmd`: clears its environment and sets the
    /// policy's, and registers a `pre_exec` step that joins the cgroups,
    /// drops to the instance's ids, sets `no_new_privs` and the rlimits, and
    /// installs Landlock and seccomp. The ruleset, the BPF program and the
    /// cgroup files are prepared here, before any fork.
    ///
    /// `pre_exec` steps run in the order they were registered: one the
    /// caller registered earlier still runs as root, one registered later
    /// runs sandboxed. For a `tokio::process::Command`, pass
    /// `cmd.as_std_mut()`.
    ///
    /// Keep the returned [`Applied`]: it reports what is in force, and
    /// [`Applied::explain`] turns a failed spawn into the step that failed.
    pub fn apply_to(&self, cmd: &mut Command) -> Result<Applied, SandboxError> {
        self.check()?;
        let (landlock_fd, landlock) = if self.landlock {
            view::build(&self.rules, self.require_landlock)?
        } else {
            (None, off_report())
        };
        let (bpf, seccomp) = if self.seccomp {
            let (prog, report) = seccomp::compiled()?;
            (Some(prog), report)
        } else {
            (None, SeccompReport::disabled())
        };
        let mut cgroup_fds = Vec::with_capacity(self.cgroups.len());
        for p in &self.cgroups {
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(p)
                .map_err(io_err("opening cgroup file", p))?;
            cgroup_fds.push(OwnedFd::from(f));
        }
        let nproc = match self.rlimit_nproc {
            Some(n) => Some(clamp_to_hard_limit(n)?),
            None => None,
        };
        let (report_r, report_w) = report_pipe()?;
        let setup = ChildSetup {
            cgroups: cgroup_fds,
            close_fds: self.close_inherited_fds,
            nproc,
            no_core: !self.core_dumps,
            ids: self.ids,
            landlock: landlock_fd,
            bpf,
            report: Some(report_w),
        };
        cmd.env_clear();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let in_child = move || {
            // SAFETY: `pre_exec` runs this in the forked child, before exec.
            unsafe { setup.run() }
        };
        // SAFETY: the closure only calls `ChildSetup::run`, which makes
        // async-signal-safe raw system calls on data prepared above (no
        // allocation, no locks), as `pre_exec` requires.
        unsafe {
            cmd.pre_exec(in_child);
        }
        Ok(Applied {
            program: PathBuf::from(cmd.get_program()),
            ids: self.ids,
            no_new_privs: true,
            env: self
                .env
                .iter()
                .map(|(k, _)| k.to_string_lossy().into_owned())
                .collect(),
            landlock,
            seccomp,
            cgroups: self.cgroups.clone(),
            pids_max: self.pids_max,
            rlimit_nproc: nproc,
            core_dumps: self.core_dumps,
            close_inherited_fds: self.close_inherited_fds,
            steps: report_r,
        })
    }
}

fn off_report() -> LandlockReport {
    LandlockReport {
        kernel_abi: view::kernel_abi().unwrap_or(0),
        enforcement: Enforcement::None,
        handled: Vec::new(),
        scopes: Vec::new(),
        unavailable: Vec::new(),
        rules: Vec::new(),
        skipped: Vec::new(),
        reason: Some("turned off by the policy".into()),
    }
}

/// An unprivileged process (or root without `CAP_SYS_RESOURCE`) cannot raise
/// a hard limit: ask for at most the current one.
fn clamp_to_hard_limit(n: u64) -> Result<libc::rlim_t, SandboxError> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into a live stack struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NPROC, &mut rl) } != 0 {
        return Err(SandboxError::Io {
            what: "getrlimit(RLIMIT_NPROC)".into(),
            path: PathBuf::from("/proc/self/limits"),
            source: io::Error::last_os_error(),
        });
    }
    Ok(n.min(rl.rlim_max))
}

fn report_pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2(2) writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(SandboxError::Io {
            what: "creating the step report pipe".into(),
            path: PathBuf::from("pipe"),
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// What a policy put in force on a command.
#[derive(Debug)]
pub struct Applied {
    /// The program of the command.
    pub program: PathBuf,
    /// The ids it runs as (supplementary groups cleared).
    pub ids: Ids,
    /// `PR_SET_NO_NEW_PRIVS` (always).
    pub no_new_privs: bool,
    /// Names of the environment variables it gets (nothing else).
    pub env: Vec<String>,
    /// Landlock.
    pub landlock: LandlockReport,
    /// Seccomp.
    pub seccomp: SeccompReport,
    /// `cgroup.procs` files joined before dropping privileges.
    pub cgroups: Vec<PathBuf>,
    /// The pids cgroup's bound.
    pub pids_max: Option<u64>,
    /// `RLIMIT_NPROC` (after clamping to the agent's hard limit).
    pub rlimit_nproc: Option<u64>,
    /// Core dumps allowed.
    pub core_dumps: bool,
    /// Inherited descriptors above 2 closed at exec.
    pub close_inherited_fds: bool,
    /// Read end of the step report pipe.
    steps: OwnedFd,
}

impl Applied {
    /// Turns the error of a failed `spawn` into the step that failed in the
    /// child (or, when no step failed, into the spawn error itself).
    pub fn explain(&self, err: io::Error) -> SandboxError {
        let mut buf = [0u8; 64];
        let mut last = None;
        loop {
            // SAFETY: read(2) into a live buffer of the given length from a
            // non-blocking descriptor we own.
            let n =
                unsafe { libc::read(self.steps.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            last = Some(buf[n as usize - 1]);
        }
        let Some(s) = last else {
            return SandboxError::Io {
                what: format!("spawning (as uid {} gid {})", self.ids.uid, self.ids.gid),
                path: self.program.clone(),
                source: err,
            };
        };
        let step = if s & step::JOIN != 0 {
            let i = usize::from(s & !step::JOIN);
            match self.cgroups.get(i) {
                Some(p) => format!("joining cgroup {}", p.display()),
                None => format!("joining cgroup #{i}"),
            }
        } else {
            step::name(s).to_string()
        };
        SandboxError::ChildSetup {
            step,
            uid: self.ids.uid,
            gid: self.ids.gid,
            source: err,
        }
    }
}

impl fmt::Display for Applied {
    /// One line for the agent's log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "uid {} gid {}, no_new_privs, {} env vars; ",
            self.ids.uid,
            self.ids.gid,
            self.env.len()
        )?;
        match self.landlock.enforcement {
            Enforcement::None => write!(
                f,
                "Landlock NOT enforced ({})",
                self.landlock.reason.as_deref().unwrap_or("unknown")
            )?,
            e => {
                write!(
                    f,
                    "Landlock ABI {} {} ({} rights, scopes [{}], {} paths",
                    self.landlock.kernel_abi,
                    if e == Enforcement::Full {
                        "full"
                    } else {
                        "partial"
                    },
                    self.landlock.handled.len(),
                    self.landlock.scopes.join(", "),
                    self.landlock.rules.len()
                )?;
                if !self.landlock.unavailable.is_empty() {
                    write!(f, "; unavailable: {}", self.landlock.unavailable.join(", "))?;
                }
                write!(f, ")")?;
            }
        }
        if self.seccomp.enabled {
            write!(
                f,
                "; seccomp: {} syscalls + namespace flags denied",
                self.seccomp.denied.len()
            )?;
        } else {
            write!(f, "; seccomp OFF")?;
        }
        match self.pids_max {
            Some(m) => write!(f, "; pids.max {m}")?,
            None => write!(f, "; no pids cgroup")?,
        }
        match self.rlimit_nproc {
            Some(n) => write!(f, "; RLIMIT_NPROC {n}"),
            None => write!(f, "; RLIMIT_NPROC inherited"),
        }
    }
}
