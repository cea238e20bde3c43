//! The workloads, run in a child process (`tier-bench worker KIND DIR SIZE
//! OPS`), each printing the wall and CPU seconds of its timed part, and
//! the file helpers they share.

use std::ffi::CString;
use std::path::Path;
use std::time::Instant;

use ephemera_sys::rng::Rng;
use libc::{c_int, c_void};

pub fn check(r: isize, what: &str) {
    if r < 0 {
        eprintln!("{what}: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
}

pub fn open(path: &Path) -> c_int {
    let p = CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL");
    // SAFETY: `p` is a valid C string.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
            0o644,
        )
    };
    check(fd as isize, "open");
    fd
}

pub fn write_at(fd: c_int, buf: &[u8], off: i64) {
    // SAFETY: lseek takes no pointers; `buf` is readable for its length.
    let r = unsafe {
        libc::lseek(fd, off, libc::SEEK_SET);
        libc::write(fd, buf.as_ptr().cast::<c_void>(), buf.len())
    };
    check(r, "write");
}

pub fn read_at(fd: c_int, buf: &mut [u8], off: i64) {
    // SAFETY: lseek takes no pointers; `buf` is writable for its length.
    let r = unsafe {
        libc::lseek(fd, off, libc::SEEK_SET);
        libc::read(fd, buf.as_mut_ptr().cast::<c_void>(), buf.len())
    };
    check(r, "read");
}

pub fn close(fd: c_int) {
    // SAFETY: closing our own fd.
    check(unsafe { libc::close(fd) } as isize, "close");
}

/// CPU seconds (user + system) this process has used so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: all-zero is a valid `rusage`, and getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is writable.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The memory-limit workload: writes two files of `size` bytes, then reads
/// `ops` random 8 KiB blocks back and checks them. True if every block held
/// what was written.
fn two_files(dir: &Path, size: u64, ops: u64) -> bool {
    let pattern = |file: u64, block: u64| ((block * 31 + file * 7) % 251) as u8;
    let fds: Vec<c_int> = (0..2u64)
        .map(|f| open(&dir.join(format!("two-{f}.dat"))))
        .collect();
    let mut chunk = vec![0u8; 8192];
    for (f, &fd) in fds.iter().enumerate() {
        let mut off = 0;
        while off < size {
            chunk.fill(pattern(f as u64, off / 8192));
            write_at(fd, &chunk, off as i64);
            off += 8192;
        }
    }
    let mut rng = Rng::new(7);
    let blocks = size / 8192;
    for _ in 0..ops {
        let f = rng.next_u64() % 2;
        let b = rng.next_u64() % blocks;
        read_at(fds[f as usize], &mut chunk, (b * 8192) as i64);
        if chunk.iter().any(|&x| x != pattern(f, b)) {
            return false;
        }
    }
    for (f, fd) in fds.into_iter().enumerate() {
        close(fd);
        let _ = std::fs::remove_file(dir.join(format!("two-{f}.dat")));
    }
    true
}

/// One workload in this process; prints the wall and CPU seconds of the
/// timed part.
pub fn worker(kind: &str, dir: &Path, size: u64, ops: u64) {
    let path = dir.join("bench.dat");
    let start;
    let cpu0;
    match kind {
        "random" => {
            let fd = open(&path);
            let block = vec![0x5au8; 8192];
            let mut buf = vec![0u8; 8192];
            let mut off = 0;
            while off < size {
                write_at(fd, &block, off as i64);
                off += 8192;
            }
            let blocks = size / 8192;
            let mut rng = Rng::new(42);
            cpu0 = cpu_seconds();
            start = Instant::now();
            for _ in 0..ops {
                write_at(fd, &block, ((rng.next_u64() % blocks) * 8192) as i64);
            }
            for _ in 0..ops {
                read_at(fd, &mut buf, ((rng.next_u64() % blocks) * 8192) as i64);
            }
            close(fd);
        }
        "seq8k" | "seq1m" => {
            let bs = if kind == "seq8k" { 8192 } else { 1 << 20 };
            let block = vec![0xa5u8; bs];
            let mut buf = vec![0u8; bs];
            cpu0 = cpu_seconds();
            start = Instant::now();
            let fd = open(&path);
            for round in 0..4 {
                let mut off = 0;
                while off < size {
                    write_at(fd, &block, off as i64);
                    off += bs as u64;
                }
                off = 0;
                while off < size {
                    read_at(fd, &mut buf, off as i64);
                    off += bs as u64;
                }
                let _ = round;
            }
            close(fd);
        }
        "raw" => {
            // The ceiling: the same random 8 KiB copies straight into a
            // MAP_SHARED mapping, no tier and no system calls.
            let fd = open(&path);
            // SAFETY: ftruncate takes no pointers.
            check(
                unsafe { libc::ftruncate(fd, size as i64) } as isize,
                "ftruncate",
            );
            // SAFETY: a fresh shared mapping of `size` bytes of our own file.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            check(if map == libc::MAP_FAILED { -1 } else { 0 }, "mmap");
            let map = map.cast::<u8>();
            let block = vec![0x5au8; 8192];
            let mut buf = vec![0u8; 8192];
            let blocks = size / 8192;
            for b in 0..blocks {
                // SAFETY: `b * 8192 + 8192 <= size`, inside the mapping.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        block.as_ptr(),
                        map.add((b * 8192) as usize),
                        8192,
                    )
                };
            }
            let mut rng = Rng::new(42);
            cpu0 = cpu_seconds();
            start = Instant::now();
            for _ in 0..ops {
                let off = ((rng.next_u64() % blocks) * 8192) as usize;
                // SAFETY: `off + 8192 <= size`, inside the mapping.
                unsafe { std::ptr::copy_nonoverlapping(block.as_ptr(), map.add(off), 8192) };
            }
            for _ in 0..ops {
                let off = ((rng.next_u64() % blocks) * 8192) as usize;
                // SAFETY: `off + 8192 <= size`, inside the mapping.
                unsafe { std::ptr::copy_nonoverlapping(map.add(off), buf.as_mut_ptr(), 8192) };
            }
            std::hint::black_box(&buf);
            // SAFETY: our mapping, no longer used.
            unsafe { libc::munmap(map.cast(), size as usize) };
            close(fd);
        }
        "twofiles" => {
            cpu0 = cpu_seconds();
            start = Instant::now();
            if !two_files(dir, size, ops) {
                eprintln!("two_files: data mismatch");
                std::process::exit(1);
            }
        }
        _ => {
            cpu0 = cpu_seconds();
            start = Instant::now();
            let mut x = 1u64;
            for i in 0..ops * 400 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(i ^ (x >> 29));
            }
            std::hint::black_box(x);
        }
    }
    println!(
        "{:.6} {:.6}",
        start.elapsed().as_secs_f64(),
        cpu_seconds() - cpu0
    );
    let _ = std::fs::remove_file(&path);
}
