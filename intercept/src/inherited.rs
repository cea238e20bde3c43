//! Fds a process inherits (a shell's `> /tmp/out`, a parent's open file):
//! the parent synced them to the kernel before `exec`, and this process may
//! write through them with plain system calls. If the process then opened the
//! same file by name, mapping it would miss those writes; so, at start-up,
//! every inherited fd of a tier file is tracked on the kernel path, and the
//! file stays there while that fd is open. A few system calls, no allocation.

use crate::{path, sys, tier};

/// Tracks every inherited fd that refers to a regular file in the tier.
pub fn adopt_all() {
    // SAFETY: the path is a NUL-terminated literal.
    let dir = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            c"/proc/self/fd".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
        )
    };
    if dir < 0 {
        return;
    }
    let mut buf = [0u8; 2048];
    loop {
        // SAFETY: `buf` is writable for its length.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        while off + 19 < n as usize {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let name = &buf[off + 19..off + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if let Some(fd) = parse_fd(name) {
                if fd != dir {
                    adopt(fd);
                }
            }
            off += reclen;
        }
    }
    sys::close(dir);
}

fn parse_fd(name: &[u8]) -> Option<libc::c_int> {
    if name.is_empty() || name.len() > 9 || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        name.iter()
            .fold(0, |v, &b| v * 10 + libc::c_int::from(b - b'0')),
    )
}

fn adopt(fd: libc::c_int) {
    let mut link = [0u8; 32];
    let mut target = [0u8; crate::config::PATH_MAX];
    let Some(len) = sys::readlink(sys::proc_fd_path(fd, &mut link), &mut target) else {
        return;
    };
    let Some(cfg) = crate::config::get() else {
        return;
    };
    if !path::under(&target[..len], &cfg.tier[..cfg.tier_len]) {
        return;
    }
    let Some(st) = sys::fstat(fd) else { return };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return;
    }
    // SAFETY: F_GETFL takes no pointer.
    let flags = unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_GETFL) } as libc::c_int;
    if flags >= 0 {
        crate::guard((), || tier::lock().adopt(fd, flags, &st));
    }
}
