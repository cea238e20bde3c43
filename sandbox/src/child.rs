//! What runs in the child between `fork` and `exec`.
//!
//! Everything here was prepared before the fork (open file descriptors, the
//! compiled BPF program, plain integers); [`ChildSetup::run`] makes raw system
//! calls only: no allocation, no locks, nothing that is not async-signal-safe.
//! The order matters:
//!
//! 1. join the cgroups (as root: `cgroup.procs` is root's), so the memory and
//!    pids limits hold from the first instruction of the new program;
//! 2. mark every inherited descriptor above 2 close-on-exec;
//! 3. lower `RLIMIT_NPROC` and `RLIMIT_CORE` (before the uid changes, so the
//!    kernel checks the new uid's process count against the new limit);
//! 4. drop supplementary groups, then gid, then uid (all three ids each);
//!    check that root cannot be regained;
//! 5. `PR_SET_NO_NEW_PRIVS` (Landlock and seccomp require it of an
//!    unprivileged process, and it makes setuid binaries inert);
//! 6. `landlock_restrict_self`;
//! 7. the seccomp filter, last, so that nothing above runs under it.
//!
//! When a step fails, its number goes down a close-on-exec pipe before the
//! error is returned to std (which reports only the errno), so
//! [`crate::Applied::explain`] can name it.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::uids::Ids;

/// Step numbers written to the report pipe; cgroup joins are `JOIN | index`.
pub(crate) mod step {
    pub const CLOSE_FDS: u8 = 1;
    pub const RLIMIT_NPROC: u8 = 2;
    pub const RLIMIT_CORE: u8 = 3;
    pub const SETGROUPS: u8 = 4;
    pub const SETRESGID: u8 = 5;
    pub const SETRESUID: u8 = 6;
    pub const ROOT_REGAINED: u8 = 7;
    pub const NO_NEW_PRIVS: u8 = 8;
    pub const LANDLOCK: u8 = 9;
    pub const SECCOMP: u8 = 10;
    pub const JOIN: u8 = 0x80;

    /// A name for a step number (cgroup joins are named by the caller).
    pub fn name(s: u8) -> &'static str {
        match s {
            CLOSE_FDS => "close_range(3.., CLOSE_RANGE_CLOEXEC)",
            RLIMIT_NPROC => "setrlimit(RLIMIT_NPROC)",
            RLIMIT_CORE => "setrlimit(RLIMIT_CORE, 0)",
            SETGROUPS => "setgroups(0)",
            SETRESGID => "setresgid",
            SETRESUID => "setresuid",
            ROOT_REGAINED => "checking that root cannot be regained (it could)",
            NO_NEW_PRIVS => "prctl(PR_SET_NO_NEW_PRIVS)",
            LANDLOCK => "landlock_restrict_self",
            SECCOMP => "seccomp(SECCOMP_SET_MODE_FILTER)",
            _ => "an unknown step",
        }
    }
}

/// `CLOSE_RANGE_CLOEXEC` (linux/close_range.h).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// Everything the child needs, prepared before the fork.
#[derive(Debug)]
pub(crate) struct ChildSetup {
    /// `cgroup.procs` files opened for writing, joined in order.
    pub cgroups: Vec<OwnedFd>,
    /// Mark inherited descriptors above 2 close-on-exec.
    pub close_fds: bool,
    /// `RLIMIT_NPROC` soft and hard limit.
    pub nproc: Option<libc::rlim_t>,
    /// Set `RLIMIT_CORE` to 0.
    pub no_core: bool,
    /// Who to become.
    pub ids: Ids,
    /// The Landlock ruleset.
    pub landlock: Option<OwnedFd>,
    /// The seccomp program.
    pub bpf: Option<Vec<libc::sock_filter>>,
    /// Write end of the step report pipe.
    pub report: Option<OwnedFd>,
}

impl ChildSetup {
    /// Fails `step` with the current errno, after noting the step.
    fn fail(&self, step: u8) -> io::Error {
        // Read errno before the write below can change it.
        let err = io::Error::last_os_error();
        self.note(step);
        err
    }

    fn note(&self, step: u8) {
        if let Some(fd) = &self.report {
            // SAFETY: write(2) of one byte from a live stack variable to a
            // descriptor we own; async-signal-safe. A failed report is
            // ignored: the errno still reaches the parent through std.
            unsafe { libc::write(fd.as_raw_fd(), (&step as *const u8).cast(), 1) };
        }
    }

    /// Applies the sandbox to the calling (forked, single-threaded) process.
    ///
    /// # Safety
    ///
    /// Only to be called in the child between fork and exec (from
    /// `CommandExt::pre_exec`): it changes the credentials and restrictions
    /// of the calling process for good.
    pub(crate) unsafe fn run(&self) -> io::Result<()> {
        for (i, fd) in self.cgroups.iter().enumerate() {
            // "0" means the writing process itself (v1 and v2).
            // SAFETY: write(2) from a static buffer to a descriptor we own.
            let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(self.fail(step::JOIN | (i.min(0x7f) as u8)));
            }
        }
        if self.close_fds {
            // SAFETY: close_range(2) only changes descriptor flags.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_close_range,
                    3 as libc::c_uint,
                    libc::c_uint::MAX,
                    CLOSE_RANGE_CLOEXEC,
                )
            };
            if r != 0 {
                let e = io::Error::last_os_error().raw_os_error();
                // Before Linux 5.11 (no CLOEXEC flag) or 5.9 (no close_range):
                // the descriptors std opened are close-on-exec anyway.
                if !matches!(e, Some(libc::ENOSYS) | Some(libc::EINVAL)) {
                    return Err(self.fail(step::CLOSE_FDS));
                }
            }
        }
        if let Some(n) = self.nproc {
            let rl = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit(2) reading a live stack struct.
            if unsafe { libc::setrlimit(libc::RLIMIT_NPROC, &rl) } != 0 {
                return Err(self.fail(step::RLIMIT_NPROC));
            }
        }
        if self.no_core {
            let rl = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: setrlimit(2) reading a live stack struct.
            if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &rl) } != 0 {
                return Err(self.fail(step::RLIMIT_CORE));
            }
        }
        let Ids { uid, gid } = self.ids;
        // SAFETY: setgroups(2) with an empty list; the pointer is not read.
        if unsafe { libc::setgroups(0, std::ptr::null()) } != 0 {
            return Err(self.fail(step::SETGROUPS));
        }
        // SAFETY: plain credential system calls on integers.
        if unsafe { libc::setresgid(gid, gid, gid) } != 0 {
            return Err(self.fail(step::SETRESGID));
        }
        // SAFETY: as above.
        if unsafe { libc::setresuid(uid, uid, uid) } != 0 {
            return Err(self.fail(step::SETRESUID));
        }
        // SAFETY: as above; this must fail now that every uid is the tenant's.
        if unsafe { libc::setresuid(0, 0, 0) } == 0 {
            self.note(step::ROOT_REGAINED);
            return Err(io::Error::from_raw_os_error(libc::EPERM));
        }
        // SAFETY: prctl(2) with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(self.fail(step::NO_NEW_PRIVS));
        }
        if let Some(fd) = &self.landlock {
            // SAFETY: landlock_restrict_self(2) on a ruleset fd we own, flags 0.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_landlock_restrict_self,
                    fd.as_raw_fd(),
                    0 as libc::c_uint,
                )
            };
            if r != 0 {
                return Err(self.fail(step::LANDLOCK));
            }
        }
        if let Some(bpf) = &self.bpf {
            let prog = libc::sock_fprog {
                len: bpf.len() as libc::c_ushort,
                filter: bpf.as_ptr().cast_mut(),
            };
            // SAFETY: seccomp(2) reads `prog` and the instructions it points
            // to, both alive for the call; the kernel copies the program.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    0 as libc::c_uint,
                    &prog as *const libc::sock_fprog,
                )
            };
            if r != 0 {
                return Err(self.fail(step::SECCOMP));
            }
        }
        Ok(())
    }
}
