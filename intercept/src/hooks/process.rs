//! Process boundaries. Logical sizes and offsets live in this process's
//! memory, so before anything that lets another process image see our fds
//! (`fork`, `vfork`, `exec*`, `posix_spawn`, `system`, `popen`) or ends this
//! one (`_exit`), every mapped file is handed back to the kernel: kernel
//! size = logical size, kernel offset = our offset. Files opened afterwards
//! are mapped again.

use libc::{c_char, c_int, c_void, pid_t, FILE};

use super::{guard, pass};
use crate::tier;

/// Hands every mapped file to the kernel, this process's and (through the
/// shared table) the other processes' of the instance: the program about to
/// start may not have the preload.
pub fn sync_all() {
    guard((), || {
        let mut t = tier::lock();
        t.fallback_all();
        crate::shared::take_all();
    });
}

/// `fork`: the tier lock is held across the real fork (after syncing), so
/// the child never inherits it mid-update, then released on both sides.
#[no_mangle]
pub extern "C" fn fork() -> pid_t {
    let Some(real_fork) = crate::real::fork() else {
        // SAFETY: a raw fork before the constructor; nothing of ours to sync.
        return unsafe { libc::syscall(libc::SYS_fork) as pid_t };
    };
    let mut t = tier::lock();
    guard((), || t.fallback_all());
    t.leak();
    // SAFETY: the real fork; glibc runs its own atfork handlers.
    let pid = unsafe { real_fork() };
    if pid == 0 {
        tier::state().reset_in_child();
        crate::shared::refresh_pid();
        guard((), || tier::lock().after_fork_child());
        // Retained mappings were inherited: forget them without touching the
        // parent's share of the gauge, and count from zero.
        guard((), || tier::lock().drop_retained(true));
        crate::control::reset_local();
        crate::adapter::after_fork_child();
    } else {
        tier::state().unlock_leaked();
    }
    pid
}

/// `vfork` is served as `fork`: a vfork child shares our memory and would
/// corrupt the tier's state if it ran hooks, and a hook cannot return into
/// a vfork child safely. POSIX allows vfork to be fork.
#[no_mangle]
pub extern "C" fn vfork() -> pid_t {
    fork()
}

#[no_mangle]
pub unsafe extern "C" fn execve(
    p: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    sync_all();
    // SAFETY: the caller's arguments, passed on.
    pass!(execve(p, argv, envp), unsafe {
        libc::syscall(libc::SYS_execve, p, argv, envp) as c_int
    })
}

#[no_mangle]
pub unsafe extern "C" fn execv(p: *const c_char, argv: *const *const c_char) -> c_int {
    sync_all();
    // SAFETY: the caller's arguments, passed on.
    pass!(execv(p, argv), crate::sys::fail(libc::ENOSYS))
}

#[no_mangle]
pub unsafe extern "C" fn execvp(p: *const c_char, argv: *const *const c_char) -> c_int {
    sync_all();
    // SAFETY: the caller's arguments, passed on.
    pass!(execvp(p, argv), crate::sys::fail(libc::ENOSYS))
}

#[no_mangle]
pub unsafe extern "C" fn execvpe(
    p: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    sync_all();
    // SAFETY: the caller's arguments, passed on.
    pass!(execvpe(p, argv, envp), crate::sys::fail(libc::ENOSYS))
}

#[no_mangle]
pub unsafe extern "C" fn execveat(
    dirfd: c_int,
    p: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    flags: c_int,
) -> c_int {
    sync_all();
    // SAFETY: the caller's arguments, passed on.
    pass!(execveat(dirfd, p, argv, envp, flags), unsafe {
        libc::syscall(libc::SYS_execveat, dirfd, p, argv, envp, flags) as c_int
    })
}

#[no_mangle]
pub unsafe extern "C" fn fexecve(
    fd: c_int,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    sync_all();
    // SAFETY: the caller's arguments, passed on.
    pass!(fexecve(fd, argv, envp), crate::sys::fail(libc::ENOSYS))
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    p: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    sync_all();
    // SAFETY: the caller's arguments, passed on.
    pass!(posix_spawn(pid, p, actions, attr, argv, envp), libc::ENOSYS)
}

#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    p: *const c_char,
    actions: *const c_void,
    attr: *const c_void,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    sync_all();
    // SAFETY: the caller's arguments, passed on.
    pass!(
        posix_spawnp(pid, p, actions, attr, argv, envp),
        libc::ENOSYS
    )
}

#[no_mangle]
pub unsafe extern "C" fn system(cmd: *const c_char) -> c_int {
    sync_all();
    // SAFETY: the caller's argument, passed on.
    pass!(system(cmd), -1)
}

#[no_mangle]
pub unsafe extern "C" fn popen(cmd: *const c_char, mode: *const c_char) -> *mut FILE {
    sync_all();
    // SAFETY: the caller's arguments, passed on.
    pass!(popen(cmd, mode), std::ptr::null_mut())
}

/// `_exit` skips atexit and destructors: write sizes back and the stats now.
#[no_mangle]
pub extern "C" fn _exit(status: c_int) -> ! {
    crate::at_exit();
    if let Some(f) = crate::real::_exit() {
        // SAFETY: the real _exit.
        unsafe { f(status) };
    }
    // SAFETY: exit_group never returns.
    unsafe { libc::syscall(libc::SYS_exit_group, status) };
    #[allow(clippy::empty_loop)]
    loop {}
}

#[no_mangle]
#[allow(non_snake_case)]
pub extern "C" fn _Exit(status: c_int) -> ! {
    _exit(status)
}
