//! Opening files: the `open` family (and glibc's fortified `__open_2`
//! names) and the stdio opens, which fall back to the kernel.

use libc::{c_char, c_int, mode_t, FILE};

use super::{guard, pass};
use crate::inode::MEM_INODES;
use crate::{path, ready, sys, tier};
use std::sync::atomic::Ordering;

/// The real `openat`.
unsafe fn pass_openat(dirfd: c_int, p: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: our caller's contract covers `p`.
    pass!(openat64(dirfd, p, flags, mode), unsafe {
        sys::openat(dirfd, p, flags, mode)
    })
}

/// Falls back the in-memory inode at `p`, if there is one: the kernel is
/// about to act on the file by name (truncate, stdio, ...).
///
/// # Safety
/// `p` must be a valid NUL-terminated path.
pub unsafe fn fallback_path(dirfd: c_int, p: *const c_char, flags: c_int) {
    if MEM_INODES.load(Ordering::Relaxed) == 0 {
        return;
    }
    // SAFETY: all-zero bytes are a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is valid per our contract and `st` is writable.
    if unsafe { sys::fstatat(dirfd, p, &mut st, flags) } == 0 {
        guard((), || tier::lock().fallback_dev_ino(st.st_dev, st.st_ino));
    }
}

/// Starts tracking a freshly opened fd of a tier path.
fn register(fd: c_int, flags: c_int, memory_ok: bool) {
    let Some(st) = sys::fstat(fd) else { return };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return;
    }
    let memory = memory_ok && tier::wants_memory(flags, st.st_size.max(0) as u64);
    guard((), || tier::lock().register(fd, flags, &st, memory));
    // The adapter watches memory once the process uses the tier (it starts
    // only when there is a limit or a control block to report to).
    crate::adapter::ensure_started();
}

/// Every `open` flavour ends here.
unsafe fn open_at(dirfd: c_int, p: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: `p` is the caller's NUL-terminated path.
    if !ready() || flags & libc::O_PATH != 0 || !unsafe { path::in_scope(dirfd, p) } {
        // SAFETY: same contract.
        return unsafe { pass_openat(dirfd, p, flags, mode) };
    }
    if flags & libc::O_TRUNC != 0 {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            // Opened without the flag and registered first (which takes the
            // file from another process that maps it, before anything cuts
            // it under that mapping), then truncated: in memory when it is
            // mapped here, else by the kernel.
            let flags = flags & !libc::O_TRUNC;
            // SAFETY: same contract.
            let fd = unsafe { pass_openat(dirfd, p, flags, mode) };
            if fd >= 0 {
                register(fd, flags, flags & libc::O_DIRECT == 0);
                guard((), || tier::lock().truncate_opened(fd));
            }
            return fd;
        }
        // The kernel will truncate the file: a mapping of it must not outlive that.
        // SAFETY: `p` is valid.
        unsafe { fallback_path(dirfd, p, 0) };
    }
    // SAFETY: same contract.
    let fd = unsafe { pass_openat(dirfd, p, flags, mode) };
    if fd >= 0 {
        let memory_ok = flags & libc::O_DIRECT == 0;
        register(fd, flags, memory_ok);
    }
    fd
}

#[no_mangle]
pub unsafe extern "C" fn open(p: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: same contract.
    unsafe { open_at(libc::AT_FDCWD, p, flags, mode) }
}

#[no_mangle]
pub unsafe extern "C" fn open64(p: *const c_char, flags: c_int, mode: mode_t) -> c_int {
    // SAFETY: same contract.
    unsafe { open_at(libc::AT_FDCWD, p, flags, mode) }
}

#[no_mangle]
pub unsafe extern "C" fn openat(
    dirfd: c_int,
    p: *const c_char,
    flags: c_int,
    mode: mode_t,
) -> c_int {
    // SAFETY: same contract.
    unsafe { open_at(dirfd, p, flags, mode) }
}

#[no_mangle]
pub unsafe extern "C" fn openat64(
    dirfd: c_int,
    p: *const c_char,
    flags: c_int,
    mode: mode_t,
) -> c_int {
    // SAFETY: same contract.
    unsafe { open_at(dirfd, p, flags, mode) }
}

#[no_mangle]
pub unsafe extern "C" fn __open_2(p: *const c_char, flags: c_int) -> c_int {
    // SAFETY: same contract (no mode without O_CREAT/O_TMPFILE).
    unsafe { open_at(libc::AT_FDCWD, p, flags, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn __open64_2(p: *const c_char, flags: c_int) -> c_int {
    // SAFETY: same contract.
    unsafe { open_at(libc::AT_FDCWD, p, flags, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn __openat_2(dirfd: c_int, p: *const c_char, flags: c_int) -> c_int {
    // SAFETY: same contract.
    unsafe { open_at(dirfd, p, flags, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn __openat64_2(dirfd: c_int, p: *const c_char, flags: c_int) -> c_int {
    // SAFETY: same contract.
    unsafe { open_at(dirfd, p, flags, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn creat(p: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: same contract.
    unsafe {
        open_at(
            libc::AT_FDCWD,
            p,
            libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
            mode,
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn creat64(p: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: same contract.
    unsafe { creat(p, mode) }
}

/// The `open` flags a stdio mode string stands for.
///
/// # Safety
/// `mode` must be NULL or NUL-terminated.
unsafe fn stdio_flags(mode: *const c_char) -> c_int {
    if mode.is_null() {
        return libc::O_RDONLY;
    }
    // SAFETY: NUL-terminated per contract.
    let m = unsafe { std::ffi::CStr::from_ptr(mode) }.to_bytes();
    let plus = m.contains(&b'+');
    match m.first() {
        Some(b'w') => {
            (if plus { libc::O_RDWR } else { libc::O_WRONLY }) | libc::O_CREAT | libc::O_TRUNC
        }
        Some(b'a') => {
            (if plus { libc::O_RDWR } else { libc::O_WRONLY }) | libc::O_CREAT | libc::O_APPEND
        }
        _ if plus => libc::O_RDWR,
        _ => libc::O_RDONLY,
    }
}

/// stdio on a tier file: the kernel serves it (glibc opens it internally,
/// beyond our hooks), so an in-memory copy of the file is handed to the
/// kernel first and the new fd is tracked on the kernel path.
unsafe fn stdio_open(p: *const c_char, mode: *const c_char, reopen: *mut FILE) -> *mut FILE {
    // SAFETY: `p` is NULL (freopen) or the caller's path.
    let scoped = ready() && !p.is_null() && unsafe { path::in_scope(libc::AT_FDCWD, p) };
    if scoped {
        // SAFETY: `p` is valid.
        unsafe { fallback_path(libc::AT_FDCWD, p, 0) };
    }
    if !reopen.is_null() {
        // SAFETY: `reopen` is the caller's stream.
        let old = unsafe { libc::fileno(reopen) };
        if old >= 0 && crate::fdtable::ofd_of(old) != 0 {
            guard((), || tier::lock().untrack(old, true));
        }
    }
    let fp = if reopen.is_null() {
        // SAFETY: the caller's arguments, passed on.
        pass!(fopen64(p, mode), {
            sys::set_errno(libc::ENOSYS);
            std::ptr::null_mut()
        })
    } else {
        // SAFETY: the caller's arguments, passed on.
        pass!(freopen64(p, mode, reopen), std::ptr::null_mut())
    };
    if scoped && !fp.is_null() {
        // SAFETY: `fp` is a live stream we just opened.
        let fd = unsafe { libc::fileno(fp) };
        // SAFETY: `mode` is the caller's mode string.
        register(fd, unsafe { stdio_flags(mode) }, false);
    }
    fp
}

#[no_mangle]
pub unsafe extern "C" fn fopen(p: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: same contract.
    unsafe { stdio_open(p, mode, std::ptr::null_mut()) }
}

#[no_mangle]
pub unsafe extern "C" fn fopen64(p: *const c_char, mode: *const c_char) -> *mut FILE {
    // SAFETY: same contract.
    unsafe { stdio_open(p, mode, std::ptr::null_mut()) }
}

#[no_mangle]
pub unsafe extern "C" fn freopen(
    p: *const c_char,
    mode: *const c_char,
    fp: *mut FILE,
) -> *mut FILE {
    // SAFETY: same contract.
    unsafe { stdio_open(p, mode, fp) }
}

#[no_mangle]
pub unsafe extern "C" fn freopen64(
    p: *const c_char,
    mode: *const c_char,
    fp: *mut FILE,
) -> *mut FILE {
    // SAFETY: same contract.
    unsafe { stdio_open(p, mode, fp) }
}

#[no_mangle]
pub unsafe extern "C" fn fdopen(fd: c_int, mode: *const c_char) -> *mut FILE {
    if crate::fdtable::ofd_of(fd) != 0 {
        guard((), || tier::lock().fallback_fd(fd));
    }
    // SAFETY: the caller's arguments, passed on.
    pass!(fdopen(fd, mode), std::ptr::null_mut())
}

#[no_mangle]
pub unsafe extern "C" fn fclose(fp: *mut FILE) -> c_int {
    if !fp.is_null() {
        // SAFETY: `fp` is the caller's live stream.
        let fd = unsafe { libc::fileno(fp) };
        if fd >= 0 && crate::fdtable::ofd_of(fd) != 0 {
            guard((), || tier::lock().untrack(fd, true));
        }
    }
    // SAFETY: the caller's stream, passed on.
    pass!(fclose(fp), libc::EOF)
}
