//! Calls the tier does not serve on a mapped fd. Each hands the file to the
//! kernel first (offsets and logical size written back, mapping dropped), so
//! the kernel's answer is the right one; each such hand-over is counted in
//! `Slot::Fallbacks`.

use libc::{c_int, c_uint, c_ulong, c_void, off_t, size_t, ssize_t};

use super::{guard, pass};
use crate::fdtable::ofd_of;
use crate::tier;

fn fallback(fds: &[c_int]) {
    if fds.iter().any(|&fd| ofd_of(fd) != 0) {
        guard((), || {
            let mut t = tier::lock();
            for &fd in fds {
                t.fallback_fd(fd);
            }
        });
    }
}

#[no_mangle]
pub unsafe extern "C" fn mmap64(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    if flags & libc::MAP_ANONYMOUS == 0 {
        fallback(&[fd]);
    }
    // SAFETY: the caller's arguments, passed on.
    pass!(mmap64(addr, len, prot, flags, fd, off), unsafe {
        libc::syscall(libc::SYS_mmap, addr, len, prot, flags, fd, off) as *mut c_void
    })
}

#[no_mangle]
pub unsafe extern "C" fn mmap(
    addr: *mut c_void,
    len: size_t,
    prot: c_int,
    flags: c_int,
    fd: c_int,
    off: off_t,
) -> *mut c_void {
    // SAFETY: same contract.
    unsafe { mmap64(addr, len, prot, flags, fd, off) }
}

#[no_mangle]
pub unsafe extern "C" fn sendfile64(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t {
    fallback(&[out, inp]);
    // SAFETY: the caller's arguments, passed on.
    pass!(sendfile64(out, inp, off, n), unsafe {
        libc::syscall(libc::SYS_sendfile, out, inp, off, n) as ssize_t
    })
}

#[no_mangle]
pub unsafe extern "C" fn sendfile(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t {
    // SAFETY: same contract.
    unsafe { sendfile64(out, inp, off, n) }
}

#[no_mangle]
pub unsafe extern "C" fn copy_file_range(
    inp: c_int,
    in_off: *mut off_t,
    out: c_int,
    out_off: *mut off_t,
    n: size_t,
    flags: c_uint,
) -> ssize_t {
    fallback(&[inp, out]);
    // SAFETY: the caller's arguments, passed on.
    pass!(
        copy_file_range(inp, in_off, out, out_off, n, flags),
        // SAFETY: the caller's arguments, passed on.
        unsafe {
            libc::syscall(
                libc::SYS_copy_file_range,
                inp,
                in_off,
                out,
                out_off,
                n,
                flags,
            ) as ssize_t
        }
    )
}

#[no_mangle]
pub unsafe extern "C" fn splice(
    inp: c_int,
    in_off: *mut off_t,
    out: c_int,
    out_off: *mut off_t,
    n: size_t,
    flags: c_uint,
) -> ssize_t {
    fallback(&[inp, out]);
    // SAFETY: the caller's arguments, passed on.
    pass!(splice(inp, in_off, out, out_off, n, flags), unsafe {
        libc::syscall(libc::SYS_splice, inp, in_off, out, out_off, n, flags) as ssize_t
    })
}

/// `ioctl` requests that read or share the kernel file's blocks: `FICLONE`,
/// `FICLONERANGE`, `FIDEDUPERANGE`, `FS_IOC_FIEMAP`.
const BLOCK_IOCTLS: [c_ulong; 4] = [0x4004_9409, 0x4020_940d, 0xc018_9436, 0xc020_660b];

/// `ioctl`: clone/dedupe/fiemap act on the kernel file; terminal and other
/// requests pass through without touching the tier.
#[no_mangle]
pub unsafe extern "C" fn ioctl(fd: c_int, req: c_ulong, arg: c_ulong) -> c_int {
    if BLOCK_IOCTLS.contains(&req) {
        fallback(&[fd]);
        if let Ok(src) = c_int::try_from(arg) {
            if req == BLOCK_IOCTLS[0] {
                fallback(&[src]);
            }
        }
    }
    // SAFETY: the caller's arguments, passed on.
    pass!(ioctl(fd, req, arg), unsafe {
        libc::syscall(libc::SYS_ioctl, fd, req, arg) as c_int
    })
}

/// POSIX aio: glibc's helper threads call `pread`/`pwrite` internally, past
/// our hooks, so the file is handed to the kernel before the request starts.
unsafe fn aio_fallback(cb: *const libc::aiocb) {
    if !cb.is_null() {
        // SAFETY: the caller's control block.
        fallback(&[unsafe { (*cb).aio_fildes }]);
    }
}

#[no_mangle]
pub unsafe extern "C" fn aio_read64(cb: *mut libc::aiocb) -> c_int {
    // SAFETY: the caller's control block.
    unsafe { aio_fallback(cb) };
    // SAFETY: the caller's argument, passed on.
    pass!(aio_read64(cb), crate::sys::fail(libc::ENOSYS))
}

#[no_mangle]
pub unsafe extern "C" fn aio_read(cb: *mut libc::aiocb) -> c_int {
    // SAFETY: same contract.
    unsafe { aio_read64(cb) }
}

#[no_mangle]
pub unsafe extern "C" fn aio_write64(cb: *mut libc::aiocb) -> c_int {
    // SAFETY: the caller's control block.
    unsafe { aio_fallback(cb) };
    // SAFETY: the caller's argument, passed on.
    pass!(aio_write64(cb), crate::sys::fail(libc::ENOSYS))
}

#[no_mangle]
pub unsafe extern "C" fn aio_write(cb: *mut libc::aiocb) -> c_int {
    // SAFETY: same contract.
    unsafe { aio_write64(cb) }
}

#[no_mangle]
pub unsafe extern "C" fn lio_listio64(
    mode: c_int,
    list: *const *mut libc::aiocb,
    n: c_int,
    sig: *mut libc::sigevent,
) -> c_int {
    if !list.is_null() {
        for i in 0..n.max(0) as usize {
            // SAFETY: the caller passes `n` entries (NULL entries are allowed).
            unsafe { aio_fallback(*list.add(i)) };
        }
    }
    // SAFETY: the caller's arguments, passed on.
    pass!(
        lio_listio64(mode, list, n, sig),
        crate::sys::fail(libc::ENOSYS)
    )
}

#[no_mangle]
pub unsafe extern "C" fn lio_listio(
    mode: c_int,
    list: *const *mut libc::aiocb,
    n: c_int,
    sig: *mut libc::sigevent,
) -> c_int {
    // SAFETY: same contract.
    unsafe { lio_listio64(mode, list, n, sig) }
}
