//! Fd lifetime: `close`, `dup*`, `fcntl`, `close_range`, `closefrom`.

use libc::{c_int, c_uint, c_ulong};

use super::{guard, pass};
use crate::fdtable::ofd_of;
use crate::{sys, tier};

#[no_mangle]
pub extern "C" fn close(fd: c_int) -> c_int {
    if ofd_of(fd) != 0 {
        guard((), || tier::lock().untrack(fd, true));
    }
    pass!(close(fd), sys::close(fd))
}

#[no_mangle]
pub extern "C" fn dup(old: c_int) -> c_int {
    // SAFETY: dup takes no pointers.
    let new = pass!(dup(old), unsafe {
        libc::syscall(libc::SYS_dup, old) as c_int
    });
    if new >= 0 && ofd_of(old) != 0 {
        guard((), || tier::lock().dup_to(old, new));
    }
    new
}

/// `dup2`/`dup3`: the target's old file is closed by the kernel, so it is
/// untracked (and synced) first.
fn dup_onto(old: c_int, new: c_int, flags: c_int, three: bool) -> c_int {
    // The kernel closes `new` only when `old` is a valid, different fd.
    if old != new && ofd_of(new) != 0 && sys::fstat(old).is_some() {
        guard((), || tier::lock().untrack(new, true));
    }
    let r = if three {
        // SAFETY: dup3 takes no pointers.
        pass!(dup3(old, new, flags), unsafe {
            libc::syscall(libc::SYS_dup3, old, new, flags) as c_int
        })
    } else {
        pass!(dup2(old, new), raw_dup2(old, new))
    };
    if r >= 0 && old != new && ofd_of(old) != 0 {
        guard((), || tier::lock().dup_to(old, r));
    }
    r
}

/// `dup2` from raw system calls (before the constructor).
fn raw_dup2(old: c_int, new: c_int) -> c_int {
    if old == new {
        // SAFETY: F_GETFD takes no pointer.
        let r = unsafe { libc::syscall(libc::SYS_fcntl, old, libc::F_GETFD) as c_int };
        return if r < 0 { r } else { new };
    }
    // SAFETY: dup3 takes no pointers.
    unsafe { libc::syscall(libc::SYS_dup3, old, new, 0) as c_int }
}

#[no_mangle]
pub extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    dup_onto(old, new, 0, false)
}

#[no_mangle]
pub extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    dup_onto(old, new, flags, true)
}

/// `fcntl`: duplicating commands are tracked, `F_SETFL` hands the file to the
/// kernel (its flags now matter to every later call), the rest pass through.
#[no_mangle]
pub extern "C" fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    let tracked = ofd_of(fd) != 0;
    if tracked && cmd == libc::F_SETFL {
        guard((), || tier::lock().fallback_fd(fd));
    }
    // SAFETY: for pointer commands `arg` is the caller's pointer, passed on unchanged.
    let r = pass!(fcntl64(fd, cmd, arg), unsafe {
        libc::syscall(libc::SYS_fcntl, fd, cmd, arg) as c_int
    });
    if r >= 0 && tracked && (cmd == libc::F_DUPFD || cmd == libc::F_DUPFD_CLOEXEC) {
        guard((), || tier::lock().dup_to(fd, r));
    }
    r
}

#[no_mangle]
pub extern "C" fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int {
    fcntl64(fd, cmd, arg)
}

/// Untracks every tracked fd in `[first, last]` before the kernel closes them.
fn untrack_range(first: c_uint, last: c_uint) {
    let last = last.min(crate::fdtable::MAX_FDS as c_uint - 1);
    if first > last {
        return;
    }
    guard((), || {
        let mut t = tier::lock();
        for fd in first..=last {
            if ofd_of(fd as c_int) != 0 {
                t.untrack(fd as c_int, true);
            }
        }
    });
}

#[no_mangle]
pub extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    if flags & libc::CLOSE_RANGE_CLOEXEC as c_int == 0 {
        untrack_range(first, last);
    }
    // SAFETY: close_range takes no pointers.
    pass!(close_range(first, last, flags), unsafe {
        libc::syscall(libc::SYS_close_range, first, last, flags) as c_int
    })
}

#[no_mangle]
pub extern "C" fn closefrom(low: c_int) {
    untrack_range(low.max(0) as c_uint, c_uint::MAX);
    pass!(closefrom(low), {
        // SAFETY: close_range takes no pointers.
        unsafe { libc::syscall(libc::SYS_close_range, low.max(0) as c_uint, c_uint::MAX, 0) };
    })
}
