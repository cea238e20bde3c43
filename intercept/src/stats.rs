//! `EPHEMERA_STATS=PATH`: this process's counters as one JSON object,
//! written at exit with raw system calls (no allocation). `%p` in the path
//! is replaced by the pid, so processes of one run can each leave a file.

use ephemera_control_block::Slot;

use crate::{config, control, fmt, sys};

const FIELDS: [(&str, Slot); 12] = [
    ("reads", Slot::Reads),
    ("writes", Slot::Writes),
    ("bytes_read", Slot::BytesRead),
    ("bytes_written", Slot::BytesWritten),
    ("files_mapped", Slot::FilesMapped),
    ("evictions", Slot::Evictions),
    ("fallbacks", Slot::Fallbacks),
    ("peak_native", Slot::PeakNative),
    ("largest_file", Slot::LargestFile),
    ("mapped_bytes", Slot::MappedBytes),
    ("opens", Slot::Opens),
    ("safeguard_raised", Slot::SafeguardRaised),
];

/// A fixed buffer we append to.
struct Buf {
    b: [u8; 1024],
    n: usize,
}

impl Buf {
    fn push(&mut self, s: &[u8]) {
        let k = s.len().min(self.b.len() - self.n);
        self.b[self.n..self.n + k].copy_from_slice(&s[..k]);
        self.n += k;
    }
    fn num(&mut self, v: u64) {
        let n = fmt::write_u64(&mut self.b[self.n..], v);
        self.n += n;
    }
}

/// Writes the stats file, if one was asked for.
pub fn write() {
    let Some(cfg) = config::get() else { return };
    if cfg.stats_len == 0 {
        return;
    }
    let pid = sys::getpid() as u64;
    let mut path = [0u8; config::PATH_MAX + 24];
    let mut n = 0;
    let src = &cfg.stats[..cfg.stats_len];
    let mut i = 0;
    while i < src.len() && n < config::PATH_MAX {
        if src[i] == b'%' && src.get(i + 1) == Some(&b'p') {
            n += fmt::write_u64(&mut path[n..], pid);
            i += 2;
        } else {
            path[n] = src[i];
            n += 1;
            i += 1;
        }
    }
    path[n] = 0;
    let mut out = Buf { b: [0; 1024], n: 0 };
    out.push(b"{\"pid\":");
    out.num(pid);
    out.push(b",\"mode\":\"");
    out.push(control::mode().as_str().as_bytes());
    out.push(b"\"");
    for (name, slot) in FIELDS {
        out.push(b",\"");
        out.push(name.as_bytes());
        out.push(b"\":");
        out.num(control::local(slot));
    }
    out.push(b"}\n");
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            path.as_ptr().cast(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        )
    };
    if fd < 0 {
        return;
    }
    // SAFETY: `out.b[..out.n]` is initialised.
    unsafe { sys::write(fd, out.b.as_ptr().cast(), out.n) };
    sys::close(fd);
}
