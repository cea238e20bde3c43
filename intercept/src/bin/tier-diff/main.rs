//! `tier-diff`: the differential driver. Run it under the preload with the
//! tier directory containing `--inside` but not `--outside`; it applies one
//! seeded random sequence of file operations to both directories, in
//! lockstep, and exits non-zero at the first operation whose result (return
//! value, errno, bytes, stat fields, directory listing) differs.
//!
//! `tier-diff --seed N --ops N --inside DIR --outside DIR [--procs N]`
//!
//! With `--procs N` the driver starts N worker processes (each its own
//! `exec`ed image with its own fds) and, step by step, picks which one
//! applies the next operation to both directories; workers also fork
//! children that act on the fds they share, and run shell commands (with
//! and without the preload) that read and append to the files.

use std::ffi::CString;
use std::process::ExitCode;

use ephemera_sys::rng::Rng;
use libc::{c_int, c_void};

mod procs;

/// Open fd pairs the driver juggles.
const SLOTS: usize = 8;
/// Names the operations pick from (files, directories, nested paths).
const NAMES: [&str; 12] = [
    "f0", "f1", "f2", "f3", "f4", "d0", "d1", "d0/f0", "d0/f1", "d1/f0", "d0/e", "d0/e/f",
];

/// What one side of an operation observed.
#[derive(Debug, PartialEq)]
enum Seen {
    /// A return value compared exactly.
    Val(i64),
    /// Success that yields an fd (numbers differ between sides).
    Fd,
    /// Failure with this errno.
    Err(i32),
    /// Bytes read.
    Bytes(Vec<u8>),
    /// `(size, file type and permissions, link count)` from a stat.
    Stat(i64, u32, u64),
    /// A sorted directory listing.
    List(Vec<String>),
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn val(r: i64) -> Seen {
    if r < 0 {
        Seen::Err(errno())
    } else {
        Seen::Val(r)
    }
}

fn fd_seen(r: c_int) -> Seen {
    if r < 0 {
        Seen::Err(errno())
    } else {
        Seen::Fd
    }
}

fn cpath(base: &str, name: &str) -> CString {
    CString::new(format!("{base}/{name}")).expect("no NUL in test paths")
}

fn stat_seen(r: c_int, st: &libc::stat) -> Seen {
    if r < 0 {
        Seen::Err(errno())
    } else {
        Seen::Stat(st.st_size, st.st_mode, st.st_nlink)
    }
}

/// One side: its base directory and its open fds.
#[derive(Clone)]
struct Side {
    base: String,
    fds: [c_int; SLOTS],
}

impl Side {
    fn close_all(&mut self) {
        for slot in 0..SLOTS {
            self.close_slot(slot);
        }
    }

    fn open(&mut self, slot: usize, name: &str, flags: c_int) -> Seen {
        let p = cpath(&self.base, name);
        // SAFETY: `p` is a valid C string; open has no other precondition.
        let fd = unsafe { libc::open(p.as_ptr(), flags, 0o644) };
        if fd >= 0 {
            self.close_slot(slot);
            self.fds[slot] = fd;
        }
        fd_seen(fd)
    }

    fn close_slot(&mut self, slot: usize) -> Seen {
        let fd = std::mem::replace(&mut self.fds[slot], -1);
        // SAFETY: closing an fd number we own (or -1, which fails EBADF).
        val(i64::from(unsafe { libc::close(fd) }))
    }

    fn read(&mut self, slot: usize, n: usize, at: Option<i64>) -> Seen {
        let mut buf = vec![0u8; n];
        let r = match at {
            // SAFETY: `buf` is writable for `n` bytes.
            Some(off) => unsafe {
                libc::pread(self.fds[slot], buf.as_mut_ptr().cast::<c_void>(), n, off)
            },
            // SAFETY: `buf` is writable for `n` bytes.
            None => unsafe { libc::read(self.fds[slot], buf.as_mut_ptr().cast::<c_void>(), n) },
        };
        if r < 0 {
            return Seen::Err(errno());
        }
        buf.truncate(r as usize);
        Seen::Bytes(buf)
    }

    fn write(&mut self, slot: usize, data: &[u8], at: Option<i64>) -> Seen {
        let r = match at {
            // SAFETY: `data` is readable for its length.
            Some(off) => unsafe {
                libc::pwrite(
                    self.fds[slot],
                    data.as_ptr().cast::<c_void>(),
                    data.len(),
                    off,
                )
            },
            // SAFETY: `data` is readable for its length.
            None => unsafe {
                libc::write(self.fds[slot], data.as_ptr().cast::<c_void>(), data.len())
            },
        };
        val(r as i64)
    }

    fn lseek(&mut self, slot: usize, off: i64, whence: c_int) -> Seen {
        // SAFETY: lseek takes no pointers.
        val(unsafe { libc::lseek(self.fds[slot], off, whence) })
    }

    fn ftruncate(&mut self, slot: usize, len: i64) -> Seen {
        // SAFETY: ftruncate takes no pointers.
        val(i64::from(unsafe { libc::ftruncate(self.fds[slot], len) }))
    }

    fn fsync(&mut self, slot: usize) -> Seen {
        // SAFETY: fsync takes no pointers.
        val(i64::from(unsafe { libc::fsync(self.fds[slot]) }))
    }

    fn fstat(&mut self, slot: usize) -> Seen {
        // SAFETY: all-zero is a valid `stat`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is writable.
        let r = unsafe { libc::fstat(self.fds[slot], &mut st) };
        stat_seen(r, &st)
    }

    fn stat(&mut self, name: &str, nofollow: bool) -> Seen {
        let p = cpath(&self.base, name);
        // SAFETY: all-zero is a valid `stat`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let r = if nofollow {
            // SAFETY: valid path and writable `st`.
            unsafe { libc::lstat(p.as_ptr(), &mut st) }
        } else {
            // SAFETY: valid path and writable `st`.
            unsafe { libc::stat(p.as_ptr(), &mut st) }
        };
        stat_seen(r, &st)
    }

    fn list(&mut self, name: &str) -> Seen {
        match std::fs::read_dir(format!("{}/{name}", self.base)) {
            Err(e) => Seen::Err(e.raw_os_error().unwrap_or(0)),
            Ok(rd) => {
                let mut v: Vec<String> = rd
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                Seen::List(v)
            }
        }
    }

    fn whole(&mut self, name: &str) -> Seen {
        match std::fs::read(format!("{}/{name}", self.base)) {
            Ok(b) => Seen::Bytes(b),
            Err(e) => Seen::Err(e.raw_os_error().unwrap_or(0)),
        }
    }
}

/// Runs `f` on both sides and compares.
fn both(a: &mut Side, b: &mut Side, mut f: impl FnMut(&mut Side) -> Seen) -> Result<(), String> {
    let x = f(a);
    let y = f(b);
    if x == y {
        Ok(())
    } else {
        let show = |s: &Seen| match s {
            Seen::Bytes(v) => format!("Bytes(len {}, first diff below)", v.len()),
            other => format!("{other:?}"),
        };
        let mut msg = format!("inside: {}\noutside: {}", show(&x), show(&y));
        if let (Seen::Bytes(p), Seen::Bytes(q)) = (&x, &y) {
            if let Some(i) = p.iter().zip(q).position(|(m, n)| m != n) {
                msg += &format!("\nfirst differing byte at {i}: {} vs {}", p[i], q[i]);
            }
        }
        Err(msg)
    }
}

/// `SEEK_DATA`/`SEEK_HOLE`: where a filesystem reports a hole depends on
/// its block allocation and writeback state (an fsync or an eviction can
/// turn a zeroed tail block into data), and POSIX allows holes to be
/// reported as data. So both sides must agree on failure and errno, the
/// inside answer must lie in `[off, size]` and on the right side of data,
/// and both offsets are then set to the kernel's answer.
fn seek_data_hole(
    a: &mut Side,
    b: &mut Side,
    slot: usize,
    off: i64,
    whence: c_int,
) -> Result<(), String> {
    // SAFETY: lseek takes no pointers.
    let x = val(unsafe { libc::lseek(a.fds[slot], off, whence) });
    // SAFETY: lseek takes no pointers.
    let y = val(unsafe { libc::lseek(b.fds[slot], off, whence) });
    match (&x, &y) {
        (Seen::Val(r), Seen::Val(k)) => {
            let (size, mode) = match a.fstat(slot) {
                Seen::Stat(size, mode, _) => (size, mode),
                other => return Err(format!("fstat after lseek: {other:?}")),
            };
            if mode & libc::S_IFMT != libc::S_IFREG {
                // Not a file (a directory): the kernel answers both sides.
                return if r == k {
                    Ok(())
                } else {
                    Err(format!("inside: {r}\noutside: {k}"))
                };
            }
            if *r < off || *r > size {
                return Err(format!(
                    "inside answer {r} outside [{off}, {size}] (kernel: {k})"
                ));
            }
            // SAFETY: lseek takes no pointers.
            unsafe { libc::lseek(a.fds[slot], *k, libc::SEEK_SET) };
            Ok(())
        }
        // A hole reported as data (an `O_TRUNC` served in memory zeroes
        // the old bytes where the kernel leaves a hole): valid for
        // SEEK_DATA when it answers `off` inside the file.
        (Seen::Val(r), Seen::Err(libc::ENXIO))
            if whence == libc::SEEK_DATA
                && *r == off
                && matches!(a.fstat(slot), Seen::Stat(size, _, _) if off < size) =>
        {
            // SAFETY: lseek takes no pointers.
            unsafe { libc::lseek(b.fds[slot], off, libc::SEEK_SET) };
            Ok(())
        }
        _ if x == y => Ok(()),
        _ => Err(format!("inside: {x:?}\noutside: {y:?}")),
    }
}

fn data(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 0,
        1 => 1,
        2..=5 => rng.below(512) as usize,
        6 | 7 => rng.below(9000) as usize,
        8 => 4096,
        _ => rng.below(200_000) as usize,
    };
    let fill = rng.next_u64() as u8;
    (0..len)
        .map(|i| fill.wrapping_add((i % 251) as u8))
        .collect()
}

fn offset(rng: &mut Rng) -> i64 {
    match rng.below(8) {
        0 => 0,
        1 => -(rng.below(10) as i64) - 1,
        2 => rng.below(4096) as i64,
        3 => 4096,
        4 => rng.below(3 << 20) as i64,
        _ => rng.below(300_000) as i64,
    }
}

fn open_flags(rng: &mut Rng) -> c_int {
    let mut f = rng.pick(&[libc::O_RDONLY, libc::O_WRONLY, libc::O_RDWR, libc::O_RDWR]);
    for (flag, pct) in [
        (libc::O_CREAT, 60),
        (libc::O_EXCL, 10),
        (libc::O_TRUNC, 12),
        (libc::O_APPEND, 12),
        (libc::O_DIRECTORY, 3),
        (libc::O_CLOEXEC, 30),
    ] {
        if rng.chance(pct) {
            f |= flag;
        }
    }
    if rng.chance(2) {
        f = libc::O_TMPFILE | libc::O_RDWR;
    }
    f
}

/// Applies `ops` random operations; returns the first mismatch.
fn run(seed: u64, ops: u64, a: &mut Side, b: &mut Side) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    for i in 0..ops {
        step(&mut rng, a, b).map_err(|msg| format!("seed {seed} op {i}: {msg}"))?;
    }
    a.close_all();
    b.close_all();
    Ok(())
}

/// One random operation on both sides; the mismatch, described, if any.
fn step(rng: &mut Rng, a: &mut Side, b: &mut Side) -> Result<(), String> {
    {
        let slot = rng.below(SLOTS as u64) as usize;
        let name = rng.pick(&NAMES);
        let op = rng.below(100);
        let what;
        let r = match op {
            0..=11 => {
                let flags = if rng.chance(5) {
                    libc::O_DIRECTORY | libc::O_RDONLY
                } else {
                    open_flags(rng)
                };
                let name = if flags & libc::O_TMPFILE == libc::O_TMPFILE {
                    rng.pick(&["d0", "d1", "."])
                } else {
                    name
                };
                what = format!("open({name}, {flags:#o}) -> slot {slot}");
                both(a, b, |s| s.open(slot, name, flags))
            }
            12..=25 => {
                let n = rng.pick(&[0usize, 1, 100, 4096, 5000, 70_000]);
                what = format!("read(slot {slot}, {n})");
                both(a, b, |s| s.read(slot, n, None))
            }
            26..=41 => {
                let d = data(rng);
                what = format!("write(slot {slot}, {} bytes)", d.len());
                both(a, b, |s| s.write(slot, &d, None))
            }
            42..=47 => {
                let (n, off) = (rng.pick(&[1usize, 100, 4096, 9000]), offset(rng));
                what = format!("pread(slot {slot}, {n}, {off})");
                both(a, b, |s| s.read(slot, n, Some(off)))
            }
            48..=54 => {
                let (d, off) = (data(rng), offset(rng));
                what = format!("pwrite(slot {slot}, {} bytes, {off})", d.len());
                both(a, b, |s| s.write(slot, &d, Some(off)))
            }
            55..=62 => {
                let whence = rng.pick(&[
                    libc::SEEK_SET,
                    libc::SEEK_CUR,
                    libc::SEEK_END,
                    libc::SEEK_DATA,
                    libc::SEEK_HOLE,
                ]);
                let off = offset(rng);
                what = format!("lseek(slot {slot}, {off}, {whence})");
                if whence == libc::SEEK_DATA || whence == libc::SEEK_HOLE {
                    seek_data_hole(a, b, slot, off, whence)
                } else {
                    both(a, b, |s| s.lseek(slot, off, whence))
                }
            }
            63..=66 => {
                let len = offset(rng);
                what = format!("ftruncate(slot {slot}, {len})");
                both(a, b, |s| s.ftruncate(slot, len))
            }
            67..=68 => {
                let len = offset(rng);
                what = format!("truncate({name}, {len})");
                both(a, b, |s| {
                    let p = cpath(&s.base, name);
                    // SAFETY: valid C string.
                    val(i64::from(unsafe { libc::truncate(p.as_ptr(), len) }))
                })
            }
            69..=72 => {
                what = format!("fstat(slot {slot})");
                both(a, b, |s| s.fstat(slot))
            }
            73..=75 => {
                let nofollow = rng.chance(30);
                what = format!("stat({name}, nofollow {nofollow})");
                both(a, b, |s| s.stat(name, nofollow))
            }
            76..=77 => {
                let to = rng.below(SLOTS as u64) as usize;
                what = format!("dup(slot {slot}) -> slot {to}");
                both(a, b, |s| {
                    // SAFETY: dup takes no pointers.
                    let fd = unsafe { libc::dup(s.fds[slot]) };
                    if fd >= 0 {
                        s.close_slot(to);
                        s.fds[to] = fd;
                    }
                    fd_seen(fd)
                })
            }
            78 => {
                what = format!("fsync(slot {slot})");
                both(a, b, |s| s.fsync(slot))
            }
            79..=84 => {
                what = format!("close(slot {slot})");
                both(a, b, |s| s.close_slot(slot))
            }
            85..=86 => {
                what = format!("unlink({name})");
                both(a, b, |s| {
                    let p = cpath(&s.base, name);
                    // SAFETY: valid C string.
                    val(i64::from(unsafe { libc::unlink(p.as_ptr()) }))
                })
            }
            87..=88 => {
                let to = rng.pick(&NAMES);
                what = format!("rename({name}, {to})");
                both(a, b, |s| {
                    let (p, q) = (cpath(&s.base, name), cpath(&s.base, to));
                    // SAFETY: valid C strings.
                    val(i64::from(unsafe { libc::rename(p.as_ptr(), q.as_ptr()) }))
                })
            }
            89..=90 => {
                what = format!("mkdir({name})");
                both(a, b, |s| {
                    let p = cpath(&s.base, name);
                    // SAFETY: valid C string.
                    val(i64::from(unsafe { libc::mkdir(p.as_ptr(), 0o755) }))
                })
            }
            91 => {
                what = format!("rmdir({name})");
                both(a, b, |s| {
                    let p = cpath(&s.base, name);
                    // SAFETY: valid C string.
                    val(i64::from(unsafe { libc::rmdir(p.as_ptr()) }))
                })
            }
            92..=94 => {
                let dir = rng.pick(&[".", "d0", "d1", "d0/e"]);
                what = format!("listdir({dir})");
                both(a, b, |s| s.list(dir))
            }
            _ => {
                what = format!("read whole {name}");
                both(a, b, |s| s.whole(name))
            }
        };
        r.map_err(|msg| format!("{what}\n{msg}"))
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).is_some_and(|a| a == "--worker") {
        return procs::worker(&args[2..]);
    }
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(seed), Some(ops), Some(inside), Some(outside)) = (
        get("--seed"),
        get("--ops"),
        get("--inside"),
        get("--outside"),
    ) else {
        eprintln!("usage: tier-diff --seed N --ops N --inside DIR --outside DIR");
        return ExitCode::from(2);
    };
    let (Ok(seed), Ok(ops)) = (seed.parse(), ops.parse()) else {
        eprintln!("--seed and --ops take numbers");
        return ExitCode::from(2);
    };
    let mut a = Side {
        base: inside,
        fds: [-1; SLOTS],
    };
    let mut b = Side {
        base: outside,
        fds: [-1; SLOTS],
    };
    let procs: usize = get("--procs").and_then(|p| p.parse().ok()).unwrap_or(1);
    let result = if procs > 1 {
        procs::drive(seed, ops, procs, &a.base, &b.base)
    } else {
        run(seed, ops, &mut a, &mut b)
    };
    match result {
        Ok(()) => {
            println!("ok: seed {seed}, {ops} operations agree");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("MISMATCH at {msg}");
            ExitCode::FAILURE
        }
    }
}
