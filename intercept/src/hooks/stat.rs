//! The stat family: the kernel's answer with the logical size of files
//! held in memory (the kernel file may be longer: reserved capacity).

use libc::{c_char, c_int, c_uint};
use std::sync::atomic::Ordering;

use super::guard;
use crate::inode::{HANDOVERS, MEM_INODES};
use crate::{sys, tier};

/// The logical size of a file this process holds in memory.
fn local_size(dev: u64, ino: u64) -> Option<u64> {
    if MEM_INODES.load(Ordering::Acquire) == 0 {
        return None;
    }
    guard(None, || tier::lock().memory_size(dev, ino))
}

/// The logical size of a file another process of the instance holds in
/// memory. Only a regular file whose kernel size is a whole number of pages
/// (as every reservation is) is looked up.
fn shared_size(mode: u32, size: u64, dev: u64, ino: u64) -> Option<u64> {
    if mode & libc::S_IFMT != libc::S_IFREG || size == 0 || !size.is_multiple_of(4096) {
        return None;
    }
    crate::shared::foreign_size(dev, ino).filter(|&s| s < size)
}

/// Replaces the size in a successful `stat` result when the inode is held
/// in memory; true if it did.
fn patch(st: *mut libc::stat) -> bool {
    if st.is_null() {
        return false;
    }
    // SAFETY: the kernel just filled `*st`, which the caller owns.
    let st = unsafe { &mut *st };
    let (dev, ino) = (st.st_dev, st.st_ino);
    let foreign = || shared_size(st.st_mode, st.st_size.max(0) as u64, dev, ino);
    match local_size(dev, ino).or_else(foreign) {
        Some(size) => {
            st.st_size = size as i64;
            st.st_blocks = st.st_blocks.min(size.div_ceil(512) as i64);
            true
        }
        None => false,
    }
}

/// The same for `statx`.
fn patch_x(stx: *mut libc::statx) -> bool {
    if stx.is_null() {
        return false;
    }
    // SAFETY: the kernel just filled `*stx`, which the caller owns.
    let stx = unsafe { &mut *stx };
    let (dev, ino) = (
        libc::makedev(stx.stx_dev_major, stx.stx_dev_minor),
        stx.stx_ino,
    );
    let foreign = || shared_size(u32::from(stx.stx_mode), stx.stx_size, dev, ino);
    match local_size(dev, ino).or_else(foreign) {
        Some(size) => {
            stx.stx_size = size;
            stx.stx_blocks = stx.stx_blocks.min(size.div_ceil(512));
            true
        }
        None => false,
    }
}

/// The kernel's `fstat`.
unsafe fn real_fstat(fd: c_int, st: *mut libc::stat) -> c_int {
    match crate::real::fstat64() {
        // SAFETY: the real function, with the caller's buffer.
        Some(f) => unsafe { f(fd, st) },
        // SAFETY: the caller's buffer.
        None => unsafe { libc::syscall(libc::SYS_fstat, fd, st) as c_int },
    }
}

/// The kernel's `fstatat`.
unsafe fn real_fstatat(dirfd: c_int, p: *const c_char, st: *mut libc::stat, flags: c_int) -> c_int {
    match crate::real::fstatat64() {
        // SAFETY: the real function, with the caller's path and buffer.
        Some(f) => unsafe { f(dirfd, p, st, flags) },
        // SAFETY: the caller's path and buffer.
        None => unsafe { sys::fstatat(dirfd, p, st, flags) },
    }
}

/// The kernel's `statx`.
unsafe fn real_statx(
    dirfd: c_int,
    p: *const c_char,
    flags: c_int,
    mask: c_uint,
    stx: *mut libc::statx,
) -> c_int {
    match crate::real::statx() {
        // SAFETY: the real function, with the caller's path and buffer.
        Some(f) => unsafe { f(dirfd, p, flags, mask, stx) },
        // SAFETY: the caller's path and buffer.
        None => unsafe { sys::statx(dirfd, p, flags, mask, stx) },
    }
}

/// Runs a stat call and corrects its size. If a file left memory between
/// the kernel's answer and our lookup (another thread handed it over, so
/// the kernel's answer may show the old reserved size), asks again.
fn stat_with(mut call: impl FnMut() -> c_int, mut fix: impl FnMut() -> bool) -> c_int {
    loop {
        let seen = HANDOVERS.load(Ordering::Acquire);
        let r = call();
        if r != 0 || fix() || HANDOVERS.load(Ordering::Acquire) == seen {
            return r;
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn fstat64(fd: c_int, st: *mut libc::stat) -> c_int {
    // SAFETY: the caller's buffer.
    stat_with(|| unsafe { real_fstat(fd, st) }, || patch(st))
}

#[no_mangle]
pub unsafe extern "C" fn fstat(fd: c_int, st: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { fstat64(fd, st) }
}

#[no_mangle]
pub unsafe extern "C" fn fstatat64(
    dirfd: c_int,
    p: *const c_char,
    st: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller's path and buffer.
    stat_with(
        || unsafe { real_fstatat(dirfd, p, st, flags) },
        || patch(st),
    )
}

#[no_mangle]
pub unsafe extern "C" fn fstatat(
    dirfd: c_int,
    p: *const c_char,
    st: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: same contract.
    unsafe { fstatat64(dirfd, p, st, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn stat64(p: *const c_char, st: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { fstatat64(libc::AT_FDCWD, p, st, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn stat(p: *const c_char, st: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { fstatat64(libc::AT_FDCWD, p, st, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn lstat64(p: *const c_char, st: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { fstatat64(libc::AT_FDCWD, p, st, libc::AT_SYMLINK_NOFOLLOW) }
}

#[no_mangle]
pub unsafe extern "C" fn lstat(p: *const c_char, st: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { lstat64(p, st) }
}

#[no_mangle]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    p: *const c_char,
    flags: c_int,
    mask: c_uint,
    stx: *mut libc::statx,
) -> c_int {
    // SAFETY: the caller's path and buffer.
    stat_with(
        || unsafe { real_statx(dirfd, p, flags, mask, stx) },
        || patch_x(stx),
    )
}

// The pre-2.33 glibc names, still called by older binaries. `ver` is
// `_STAT_VER`; on x86-64 and aarch64 the kernel struct is the one we fill.

#[no_mangle]
pub unsafe extern "C" fn __fxstat(_ver: c_int, fd: c_int, st: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { fstat64(fd, st) }
}

#[no_mangle]
pub unsafe extern "C" fn __fxstat64(_ver: c_int, fd: c_int, st: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { fstat64(fd, st) }
}

#[no_mangle]
pub unsafe extern "C" fn __xstat(_ver: c_int, p: *const c_char, st: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { stat64(p, st) }
}

#[no_mangle]
pub unsafe extern "C" fn __xstat64(_ver: c_int, p: *const c_char, st: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { stat64(p, st) }
}

#[no_mangle]
pub unsafe extern "C" fn __lxstat(_ver: c_int, p: *const c_char, st: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { lstat64(p, st) }
}

#[no_mangle]
pub unsafe extern "C" fn __lxstat64(_ver: c_int, p: *const c_char, st: *mut libc::stat) -> c_int {
    // SAFETY: same contract.
    unsafe { lstat64(p, st) }
}

#[no_mangle]
pub unsafe extern "C" fn __fxstatat(
    _ver: c_int,
    dirfd: c_int,
    p: *const c_char,
    st: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: same contract.
    unsafe { fstatat64(dirfd, p, st, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn __fxstatat64(
    _ver: c_int,
    dirfd: c_int,
    p: *const c_char,
    st: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: same contract.
    unsafe { fstatat64(dirfd, p, st, flags) }
}
