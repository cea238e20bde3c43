//! Processes: signals, liveness, pipes, and joining a cgroup in the child
//! between fork and exec (so a program is limited from its first
//! instruction, with no window in which it runs outside its cgroup).

use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Sends `signal` to process `pid`. A pid of 0 or below is refused (it
/// would name a process group or every process).
pub fn kill(pid: i32, signal: i32) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal pid {pid}"),
        ));
    }
    // SAFETY: plain FFI call; `pid` is positive, so it names one process.
    if unsafe { libc::kill(pid, signal) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` to every process of group `pgid` (a group leader's pid).
pub fn kill_group(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    // SAFETY: plain FFI call; `pgid` > 1 names one process group.
    if unsafe { libc::killpg(pgid, signal) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes every file and directory this process creates from now on private
/// to its owner (umask 077: files 0600, directories 0700) unless a mode is
/// given explicitly: databases, logs, tokens and keys are never readable by
/// other users, tenants' functions included. Returns the previous mask.
pub fn private_umask() -> u32 {
    // SAFETY: umask has no failure mode and touches only this process's mask.
    unsafe { libc::umask(0o077) as u32 }
}

/// Creates `dir` (and its parents) and sets its mode to exactly `mode`,
/// whatever the umask or an earlier run left.
pub fn ensure_dir_mode(dir: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
}

/// Whether process `pid` exists (signal 0).
pub fn alive(pid: i32) -> bool {
    kill(pid, 0).is_ok()
}

/// Whether the kernel says no process `pid` exists (`ESRCH`). Unlike
/// `!alive(pid)`, a process of another user (`EPERM`) or a pid that cannot
/// name one process (0, negative) is not gone: callers that act on a dead
/// process's leftovers must not act on a live one's.
pub fn gone(pid: i32) -> bool {
    pid > 0 && kill(pid, 0).is_err_and(|e| e.raw_os_error() == Some(libc::ESRCH))
}

/// A pipe whose both ends close on exec: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Makes the child of `cmd` write itself into `procs_file` (a cgroup's
/// `cgroup.procs`) between fork and exec; the spawn fails if it cannot.
pub fn join_cgroup_on_exec(cmd: &mut std::process::Command, procs_file: &Path) -> io::Result<()> {
    let procs = CString::new(procs_file.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cgroup path {} holds a NUL byte", procs_file.display()),
        )
    })?;
    // SAFETY: the closure runs in the forked child before exec. It only
    // makes async-signal-safe system calls (open, write, close) on a path
    // prepared before the fork, allocates nothing, and reads errno before
    // any other call can change it.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // "0" means the writing process itself.
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
    Ok(())
}

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

/// Prepares the child of `cmd` to be a launcher fed through a pipe: between
/// fork and exec it gets `result_fd` as its fd 3 (inheritable), leads a
/// process group of its own (so it and its children are killed together),
/// and is killed when the thread that spawned it dies.
pub fn launcher_on_exec(cmd: &mut std::process::Command, result_fd: i32) {
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (dup2, fcntl, setpgid, prctl); it touches
    // no memory shared with other threads and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if result_fd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(result_fd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setpgid(0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gone_only_when_the_kernel_says_so() {
        assert!(!gone(std::process::id() as i32));
        assert!(!gone(0) && !gone(-1), "no group or broadcast pid is gone");
        assert!(gone(i32::MAX), "above pid_max no process exists");
    }

    #[test]
    fn refuses_pids_that_name_groups_and_sees_itself() {
        assert!(kill(0, 0).is_err());
        assert!(kill(-1, 0).is_err());
        assert!(kill_group(1, 0).is_err());
        assert!(alive(std::process::id() as i32));
    }

    #[test]
    fn a_pipe_carries_bytes() {
        use std::io::{Read, Write};
        let (r, w) = pipe().unwrap();
        std::fs::File::from(w).write_all(b"hi").unwrap();
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "hi");
    }

    #[test]
    fn a_child_that_cannot_join_does_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(format!("touch {}", marker.display()));
        join_cgroup_on_exec(&mut cmd, &dir.path().join("no/such/cgroup.procs")).unwrap();
        let err = cmd.status().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(!marker.exists());
    }
}
