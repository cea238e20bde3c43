//! Name operations. The tree lives in the kernel (every tier file is a real
//! file), so `mkdir`, `rmdir`, `unlink`, `rename` and `readdir` are the
//! kernel's and always consistent; mapped inodes keep working after their
//! name is unlinked or renamed, exactly as open files do. Only `truncate` by
//! name needs the tier, because it changes the size of a file we may hold.

use libc::{c_char, c_int, c_uint, mode_t, off_t};
use std::sync::atomic::Ordering;

use super::{guard, pass};
use crate::inode::MEM_INODES;
use crate::{sys, tier};

#[no_mangle]
pub unsafe extern "C" fn mkdir(p: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: the caller's path.
    pass!(mkdir(p, mode), unsafe {
        libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, p, mode) as c_int
    })
}

#[no_mangle]
pub unsafe extern "C" fn mkdirat(dirfd: c_int, p: *const c_char, mode: mode_t) -> c_int {
    // SAFETY: the caller's path.
    pass!(mkdirat(dirfd, p, mode), unsafe {
        libc::syscall(libc::SYS_mkdirat, dirfd, p, mode) as c_int
    })
}

/// Drops a retained mapping of the file at `p` before its name goes away
/// (unlink, rename over it): the mapping would keep its blocks alive.
unsafe fn forget_path(dirfd: c_int, p: *const c_char) {
    if MEM_INODES.load(Ordering::Relaxed) == 0 || p.is_null() {
        return;
    }
    // SAFETY: all-zero bytes are a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the caller's path; `st` is writable.
    if unsafe { sys::fstatat(dirfd, p, &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0 {
        guard((), || tier::lock().forget_retained(st.st_dev, st.st_ino));
    }
}

#[no_mangle]
pub unsafe extern "C" fn rmdir(p: *const c_char) -> c_int {
    // SAFETY: the caller's path.
    pass!(rmdir(p), unsafe {
        libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, p, libc::AT_REMOVEDIR) as c_int
    })
}

#[no_mangle]
pub unsafe extern "C" fn unlink(p: *const c_char) -> c_int {
    // SAFETY: the caller's path.
    unsafe { forget_path(libc::AT_FDCWD, p) };
    // SAFETY: the caller's path.
    pass!(unlink(p), unsafe {
        libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, p, 0) as c_int
    })
}

#[no_mangle]
pub unsafe extern "C" fn unlinkat(dirfd: c_int, p: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller's path.
    unsafe { forget_path(dirfd, p) };
    // SAFETY: the caller's path.
    pass!(unlinkat(dirfd, p, flags), unsafe {
        libc::syscall(libc::SYS_unlinkat, dirfd, p, flags) as c_int
    })
}

#[no_mangle]
pub unsafe extern "C" fn rename(old: *const c_char, new: *const c_char) -> c_int {
    // SAFETY: the caller's path.
    unsafe { forget_path(libc::AT_FDCWD, new) };
    // SAFETY: the caller's paths.
    pass!(rename(old, new), unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            old,
            libc::AT_FDCWD,
            new,
            0,
        ) as c_int
    })
}

#[no_mangle]
pub unsafe extern "C" fn renameat(
    od: c_int,
    old: *const c_char,
    nd: c_int,
    new: *const c_char,
) -> c_int {
    // SAFETY: the caller's path.
    unsafe { forget_path(nd, new) };
    // SAFETY: the caller's paths.
    pass!(renameat(od, old, nd, new), unsafe {
        libc::syscall(libc::SYS_renameat2, od, old, nd, new, 0) as c_int
    })
}

#[no_mangle]
pub unsafe extern "C" fn renameat2(
    od: c_int,
    old: *const c_char,
    nd: c_int,
    new: *const c_char,
    flags: c_uint,
) -> c_int {
    // SAFETY: the caller's path.
    unsafe { forget_path(nd, new) };
    // SAFETY: the caller's paths.
    pass!(renameat2(od, old, nd, new, flags), unsafe {
        libc::syscall(libc::SYS_renameat2, od, old, nd, new, flags) as c_int
    })
}

#[no_mangle]
pub unsafe extern "C" fn truncate64(p: *const c_char, len: off_t) -> c_int {
    if MEM_INODES.load(Ordering::Relaxed) > 0 && !p.is_null() {
        // SAFETY: all-zero bytes are a valid `stat`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: the caller's path; `st` is writable.
        if unsafe { sys::fstatat(libc::AT_FDCWD, p, &mut st, 0) } == 0 {
            let served = guard(None, || {
                let mut t = tier::lock();
                let wfd = t.writable_fd_of(st.st_dev, st.st_ino);
                if wfd >= 0 {
                    if let Some(r) = t.truncate(wfd, len) {
                        return Some(r);
                    }
                }
                t.fallback_dev_ino(st.st_dev, st.st_ino);
                None
            });
            if let Some(r) = served {
                return r;
            }
        }
    }
    // SAFETY: the caller's path.
    pass!(truncate64(p, len), unsafe {
        libc::syscall(libc::SYS_truncate, p, len) as c_int
    })
}

#[no_mangle]
pub unsafe extern "C" fn truncate(p: *const c_char, len: off_t) -> c_int {
    // SAFETY: same contract.
    unsafe { truncate64(p, len) }
}
