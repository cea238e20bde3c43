//! `EPHEMERA_TRACE=PATH`: a debugging log of the tier's state changes
//! (map, grow, sync, unmap, evict, fallback), one line per event, written
//! with raw system calls. Off unless the variable is set.

use std::sync::atomic::{AtomicI32, Ordering};

static FD: AtomicI32 = AtomicI32::new(-1);

/// Opens the trace file if `EPHEMERA_TRACE` names one.
pub fn init() {
    let Some(p) = crate::config::env(c"EPHEMERA_TRACE") else {
        return;
    };
    let mut buf = [0u8; crate::config::PATH_MAX];
    if p.is_empty() || p.len() >= buf.len() {
        return;
    }
    buf[..p.len()].copy_from_slice(p);
    // SAFETY: `buf` is NUL-terminated.
    let fd = unsafe {
        crate::sys::openat(
            libc::AT_FDCWD,
            buf.as_ptr().cast(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
            0o644,
        )
    };
    FD.store(fd, Ordering::Relaxed);
}

/// The trace file's fd (-1 when tracing is off).
pub fn fd() -> i32 {
    FD.load(Ordering::Relaxed)
}

/// Logs `what` with up to four numbers.
pub fn event(what: &str, nums: [u64; 4]) {
    let fd = FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let mut line = [0u8; 160];
    let mut n = 0;
    for &b in what.as_bytes().iter().take(40) {
        line[n] = b;
        n += 1;
    }
    for v in nums {
        line[n] = b' ';
        n += 1;
        n += crate::fmt::write_u64(&mut line[n..], v);
    }
    line[n] = b'\n';
    // SAFETY: `line[..=n]` is initialised.
    unsafe { crate::sys::write(fd, line.as_ptr().cast(), n + 1) };
}
