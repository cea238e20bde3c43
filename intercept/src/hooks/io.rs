//! Data calls: served from memory for fds of mapped files.

use libc::{c_int, c_void, iovec, off_t, size_t, ssize_t};

use super::{guard, pass};
use crate::fdtable::ofd_of;
use crate::{sys, tier};

/// The real `read`.
unsafe fn pass_read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    // SAFETY: our caller's contract covers `buf`.
    pass!(read(fd, buf, n), unsafe { sys::read(fd, buf, n) })
}

#[no_mangle]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    if ofd_of(fd) != 0 {
        // SAFETY: the caller guarantees `buf` for `n` bytes.
        if let Some(r) = guard(Some(-1), || unsafe { tier::lock().read(fd, buf, n, None) }) {
            return r;
        }
    }
    // SAFETY: same contract as ours.
    unsafe { pass_read(fd, buf, n) }
}

#[no_mangle]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        // SAFETY: abort has no preconditions; glibc's __chk_fail does the same.
        unsafe { libc::abort() }
    }
    // SAFETY: same contract as `read`.
    unsafe { read(fd, buf, n) }
}

#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    if ofd_of(fd) != 0 {
        // SAFETY: the caller guarantees `buf` for `n` bytes.
        if let Some(r) = guard(Some(-1), || unsafe { tier::lock().write(fd, buf, n, None) }) {
            return r;
        }
    }
    // SAFETY: our caller's contract covers `buf`.
    pass!(write(fd, buf, n), unsafe { sys::write(fd, buf, n) })
}

#[no_mangle]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t {
    if ofd_of(fd) != 0 {
        // SAFETY: the caller guarantees `buf` for `n` bytes.
        if let Some(r) = guard(Some(-1), || unsafe {
            tier::lock().read(fd, buf, n, Some(off))
        }) {
            return r;
        }
    }
    // SAFETY: our caller's contract covers `buf`.
    pass!(pread64(fd, buf, n, off), unsafe {
        sys::pread(fd, buf, n, off)
    })
}

#[no_mangle]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t {
    // SAFETY: same contract.
    unsafe { pread64(fd, buf, n, off) }
}

#[no_mangle]
pub unsafe extern "C" fn __pread64_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    off: off_t,
    buflen: size_t,
) -> ssize_t {
    if n > buflen {
        // SAFETY: abort has no preconditions.
        unsafe { libc::abort() }
    }
    // SAFETY: same contract.
    unsafe { pread64(fd, buf, n, off) }
}

#[no_mangle]
pub unsafe extern "C" fn __pread_chk(
    fd: c_int,
    buf: *mut c_void,
    n: size_t,
    off: off_t,
    buflen: size_t,
) -> ssize_t {
    // SAFETY: same contract.
    unsafe { __pread64_chk(fd, buf, n, off, buflen) }
}

#[no_mangle]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    if ofd_of(fd) != 0 {
        // SAFETY: the caller guarantees `buf` for `n` bytes.
        if let Some(r) = guard(Some(-1), || unsafe {
            tier::lock().write(fd, buf, n, Some(off))
        }) {
            return r;
        }
    }
    // SAFETY: our caller's contract covers `buf`.
    pass!(pwrite64(fd, buf, n, off), unsafe {
        sys::pwrite(fd, buf, n, off)
    })
}

#[no_mangle]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    // SAFETY: same contract.
    unsafe { pwrite64(fd, buf, n, off) }
}

/// Vectored read from memory: iovecs filled in order until one comes back short.
unsafe fn readv_mem(fd: c_int, iov: *const iovec, cnt: c_int, at: Option<i64>) -> Option<ssize_t> {
    if !(0..=libc::UIO_MAXIOV).contains(&cnt) {
        return Some(sys::fail(libc::EINVAL));
    }
    let mut t = tier::lock();
    let mut total: ssize_t = 0;
    for i in 0..cnt as usize {
        // SAFETY: the caller guarantees `cnt` iovecs at `iov`.
        let v = unsafe { &*iov.add(i) };
        let pos = at.map(|a| a + total as i64);
        // SAFETY: the caller guarantees each iovec's buffer.
        let r = unsafe { t.read(fd, v.iov_base, v.iov_len, pos) }?;
        if r < 0 {
            return Some(if total > 0 { total } else { r });
        }
        total += r;
        if (r as usize) < v.iov_len {
            break;
        }
    }
    Some(total)
}

/// Vectored write into memory, one iovec after the other under the lock.
unsafe fn writev_mem(fd: c_int, iov: *const iovec, cnt: c_int, at: Option<i64>) -> Option<ssize_t> {
    if !(0..=libc::UIO_MAXIOV).contains(&cnt) {
        return Some(sys::fail(libc::EINVAL));
    }
    let mut t = tier::lock();
    let mut total: ssize_t = 0;
    for i in 0..cnt as usize {
        // SAFETY: the caller guarantees `cnt` iovecs at `iov`.
        let v = unsafe { &*iov.add(i) };
        let pos = at.map(|a| a + total as i64);
        // SAFETY: the caller guarantees each iovec's buffer.
        match unsafe { t.write(fd, v.iov_base, v.iov_len, pos) } {
            Some(r) if r >= 0 => total += r,
            Some(r) => return Some(if total > 0 { total } else { r }),
            // The file fell back mid-way: the kernel writes the rest.
            None if total > 0 => {
                drop(t);
                let rest = cnt - i as c_int;
                // SAFETY: the remaining iovecs are the caller's.
                let r = unsafe { pass_writev(fd, iov.add(i), rest, pos) };
                return Some(if r > 0 { total + r } else { total });
            }
            None => return None,
        }
    }
    Some(total)
}

unsafe fn pass_writev(fd: c_int, iov: *const iovec, cnt: c_int, at: Option<i64>) -> ssize_t {
    match at {
        // SAFETY: our caller's contract covers the iovecs.
        Some(off) => pass!(pwritev64(fd, iov, cnt, off), unsafe {
            libc::syscall(libc::SYS_pwritev, fd, iov, cnt, off, 0) as ssize_t
        }),
        // SAFETY: our caller's contract covers the iovecs.
        None => pass!(writev(fd, iov, cnt), unsafe {
            libc::syscall(libc::SYS_writev, fd, iov, cnt) as ssize_t
        }),
    }
}

#[no_mangle]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if ofd_of(fd) != 0 {
        // SAFETY: the caller guarantees the iovecs.
        if let Some(r) = guard(Some(-1), || unsafe { readv_mem(fd, iov, cnt, None) }) {
            return r;
        }
    }
    // SAFETY: our caller's contract covers the iovecs.
    pass!(readv(fd, iov, cnt), unsafe {
        libc::syscall(libc::SYS_readv, fd, iov, cnt) as ssize_t
    })
}

#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t {
    if ofd_of(fd) != 0 {
        // SAFETY: the caller guarantees the iovecs.
        if let Some(r) = guard(Some(-1), || unsafe { writev_mem(fd, iov, cnt, None) }) {
            return r;
        }
    }
    // SAFETY: our caller's contract covers the iovecs.
    unsafe { pass_writev(fd, iov, cnt, None) }
}

#[no_mangle]
pub unsafe extern "C" fn preadv64(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
    if ofd_of(fd) != 0 {
        if off < 0 {
            return sys::fail(libc::EINVAL);
        }
        // SAFETY: the caller guarantees the iovecs.
        if let Some(r) = guard(Some(-1), || unsafe { readv_mem(fd, iov, cnt, Some(off)) }) {
            return r;
        }
    }
    // SAFETY: our caller's contract covers the iovecs.
    pass!(preadv64(fd, iov, cnt, off), unsafe {
        libc::syscall(libc::SYS_preadv, fd, iov, cnt, off, 0) as ssize_t
    })
}

#[no_mangle]
pub unsafe extern "C" fn preadv(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
    // SAFETY: same contract.
    unsafe { preadv64(fd, iov, cnt, off) }
}

#[no_mangle]
pub unsafe extern "C" fn pwritev64(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
) -> ssize_t {
    if ofd_of(fd) != 0 {
        if off < 0 {
            return sys::fail(libc::EINVAL);
        }
        // SAFETY: the caller guarantees the iovecs.
        if let Some(r) = guard(Some(-1), || unsafe { writev_mem(fd, iov, cnt, Some(off)) }) {
            return r;
        }
    }
    // SAFETY: our caller's contract covers the iovecs.
    unsafe { pass_writev(fd, iov, cnt, Some(off)) }
}

#[no_mangle]
pub unsafe extern "C" fn pwritev(fd: c_int, iov: *const iovec, cnt: c_int, off: off_t) -> ssize_t {
    // SAFETY: same contract.
    unsafe { pwritev64(fd, iov, cnt, off) }
}

/// The tier's part of `preadv2`/`pwritev2` on a tier fd: with no flags but
/// `RWF_HIPRI`, `io` serves it from memory at `off` (`-1`: the file offset);
/// any other flag (`RWF_APPEND`, `RWF_DSYNC`, ...) asks for the kernel's
/// semantics, so the fd falls back to the kernel path. `None`: pass through.
fn v2_in_tier(
    fd: c_int,
    off: off_t,
    flags: c_int,
    io: impl FnOnce(Option<off_t>) -> Option<ssize_t>,
) -> Option<ssize_t> {
    if ofd_of(fd) == 0 {
        return None;
    }
    if flags & !libc::RWF_HIPRI != 0 {
        tier::lock().fallback_fd(fd);
        return None;
    }
    let at = (off != -1).then_some(off);
    if at.is_some_and(|o| o < 0) {
        return Some(sys::fail(libc::EINVAL));
    }
    guard(Some(-1), || io(at))
}

#[no_mangle]
pub unsafe extern "C" fn preadv64v2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: the caller guarantees the iovecs.
    if let Some(r) = v2_in_tier(fd, off, flags, |at| unsafe { readv_mem(fd, iov, cnt, at) }) {
        return r;
    }
    // SAFETY: our caller's contract covers the iovecs.
    pass!(preadv64v2(fd, iov, cnt, off, flags), unsafe {
        libc::syscall(libc::SYS_preadv2, fd, iov, cnt, off, 0, flags) as ssize_t
    })
}

#[no_mangle]
pub unsafe extern "C" fn preadv2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: same contract.
    unsafe { preadv64v2(fd, iov, cnt, off, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn pwritev64v2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: the caller guarantees the iovecs.
    if let Some(r) = v2_in_tier(fd, off, flags, |at| unsafe { writev_mem(fd, iov, cnt, at) }) {
        return r;
    }
    // SAFETY: our caller's contract covers the iovecs.
    pass!(pwritev64v2(fd, iov, cnt, off, flags), unsafe {
        libc::syscall(libc::SYS_pwritev2, fd, iov, cnt, off, 0, flags) as ssize_t
    })
}

#[no_mangle]
pub unsafe extern "C" fn pwritev2(
    fd: c_int,
    iov: *const iovec,
    cnt: c_int,
    off: off_t,
    flags: c_int,
) -> ssize_t {
    // SAFETY: same contract.
    unsafe { pwritev64v2(fd, iov, cnt, off, flags) }
}

#[no_mangle]
pub extern "C" fn lseek64(fd: c_int, off: off_t, whence: c_int) -> off_t {
    if ofd_of(fd) != 0 {
        if let Some(r) = guard(Some(-1), || tier::lock().seek(fd, off, whence)) {
            return r;
        }
    }
    pass!(lseek64(fd, off, whence), sys::lseek(fd, off, whence))
}

#[no_mangle]
pub extern "C" fn lseek(fd: c_int, off: off_t, whence: c_int) -> off_t {
    lseek64(fd, off, whence)
}

#[no_mangle]
pub extern "C" fn ftruncate64(fd: c_int, len: off_t) -> c_int {
    if ofd_of(fd) != 0 {
        if let Some(r) = guard(Some(-1), || tier::lock().truncate(fd, len)) {
            return r;
        }
    }
    pass!(ftruncate64(fd, len), sys::ftruncate(fd, len))
}

#[no_mangle]
pub extern "C" fn ftruncate(fd: c_int, len: off_t) -> c_int {
    ftruncate64(fd, len)
}

/// `fsync`/`fdatasync` of a tier file or directory: the file is made
/// coherent (its kernel size set to the logical size) but not forced to
/// disk. The tier is the instance's temporary space: it does not outlive
/// the instance, and tmpfs, its alternative, keeps nothing across a crash
/// either; a forced write-back per SQLite commit cost the tier 1.5x a
/// plain disk directory and 60x tmpfs. True when the call was served.
fn tier_sync(fd: c_int) -> bool {
    if !crate::ready() {
        return false;
    }
    if ofd_of(fd) != 0 {
        guard((), || tier::lock().sync(fd));
        return true;
    }
    crate::path::fd_in_tier(fd)
}

#[no_mangle]
pub extern "C" fn fsync(fd: c_int) -> c_int {
    if tier_sync(fd) {
        return 0;
    }
    pass!(fsync(fd), sys::fsync(fd, false))
}

#[no_mangle]
pub extern "C" fn fdatasync(fd: c_int) -> c_int {
    if tier_sync(fd) {
        return 0;
    }
    pass!(fdatasync(fd), sys::fsync(fd, true))
}

#[no_mangle]
pub extern "C" fn fallocate64(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int {
    if ofd_of(fd) != 0 {
        // Allocation, hole punching and range collapsing change the file
        // under the mapping: let the kernel own it.
        guard((), || tier::lock().fallback_fd(fd));
    }
    pass!(fallocate64(fd, mode, off, len), sys::fail(libc::ENOSYS))
}

#[no_mangle]
pub extern "C" fn fallocate(fd: c_int, mode: c_int, off: off_t, len: off_t) -> c_int {
    fallocate64(fd, mode, off, len)
}

#[no_mangle]
pub extern "C" fn posix_fallocate64(fd: c_int, off: off_t, len: off_t) -> c_int {
    if ofd_of(fd) != 0 {
        guard((), || tier::lock().fallback_fd(fd));
    }
    pass!(posix_fallocate64(fd, off, len), libc::ENOSYS)
}

#[no_mangle]
pub extern "C" fn posix_fallocate(fd: c_int, off: off_t, len: off_t) -> c_int {
    posix_fallocate64(fd, off, len)
}
