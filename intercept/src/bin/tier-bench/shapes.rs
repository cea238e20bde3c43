//! Workload shapes of real functions (FunctionBench / SeBS-like), each run
//! interleaved on the tier, a plain directory on disk and tmpfs (tier,
//! disk, tmpfs, tier, disk, tmpfs, ...), so that load on a shared machine
//! hits all three alike; reported as the median of per-round ratios with
//! their spread, with and without a memory cgroup.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use ephemera_sys::scoped::ScopedCgroup;

use crate::work::{check, close, cpu_seconds, open, read_at, write_at};

/// The shapes, in report order.
pub const SHAPES: [&str; 5] = ["video", "stream", "gzip", "small", "sqlite"];

/// One video frame (FunctionBench `video_processing`: ~675 KiB per frame).
const FRAME: usize = 675 << 10;
/// Frames per run.
const FRAMES: usize = 300;

/// Runs shape `kind` in `dir` in this process (sqlite: `exec`s Python);
/// prints `wall cpu`. False for an unknown shape.
pub fn worker(kind: &str, dir: &Path) -> bool {
    if kind == "sqlite" {
        let err = Command::new("python3")
            .arg("-c")
            .arg(SQLITE)
            .arg(dir)
            .exec();
        eprintln!("python3: {err}");
        std::process::exit(1);
    }
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    match kind {
        "video" => video(dir),
        "stream" => stream(dir),
        "gzip" => gzip(dir),
        "small" => small(dir),
        _ => return false,
    }
    println!(
        "{:.6} {:.6}",
        start.elapsed().as_secs_f64(),
        cpu_seconds() - cpu0
    );
    true
}

fn open_flags(path: &Path, flags: libc::c_int) -> libc::c_int {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: `c` is a valid C string.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
    check(fd as isize, "open");
    fd
}

fn write_all(fd: libc::c_int, buf: &[u8]) {
    // SAFETY: `buf` is readable for its length.
    let r = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    check(r, "write");
}

fn read_some(fd: libc::c_int, buf: &mut [u8]) -> usize {
    // SAFETY: `buf` is writable for its length.
    let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    check(r, "read");
    r as usize
}

/// Per frame: open with `O_TRUNC`, write the frame, close, reopen, read it
/// back, append an eighth of it (the encoded frame) to the output.
fn video(dir: &Path) {
    let frame_path = dir.join("frame.raw");
    let mut frame = vec![0u8; FRAME];
    let mut back = vec![0u8; FRAME];
    let out = open_flags(
        &dir.join("out.avi"),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
    );
    for f in 0..FRAMES {
        frame.fill(f as u8);
        let fd = open_flags(&frame_path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
        write_all(fd, &frame);
        close(fd);
        let fd = open_flags(&frame_path, libc::O_RDONLY);
        let n = read_some(fd, &mut back);
        assert_eq!(n, FRAME, "frame read back");
        close(fd);
        write_all(out, &back[..FRAME / 8]);
    }
    close(out);
    let _ = std::fs::remove_file(frame_path);
    let _ = std::fs::remove_file(dir.join("out.avi"));
}

/// Streaming append: 64 MiB in 64 KiB writes, then read back sequentially.
fn stream(dir: &Path) {
    let path = dir.join("log.bin");
    let chunk = vec![0x6cu8; 64 << 10];
    let fd = open_flags(&path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
    for _ in 0..1024 {
        write_all(fd, &chunk);
    }
    close(fd);
    let mut buf = vec![0u8; 64 << 10];
    let fd = open_flags(&path, libc::O_RDONLY);
    while read_some(fd, &mut buf) > 0 {}
    close(fd);
    let _ = std::fs::remove_file(path);
}

/// A stand-in for deflate's CPU cost: a rolling hash per byte, keeping
/// every `keep`-th byte as "output".
fn transform(input: &[u8], keep: usize, out: &mut Vec<u8>) {
    let mut h = 0u32;
    for (i, &b) in input.iter().enumerate() {
        h = h.rotate_left(5) ^ u32::from(b);
        if i % keep == 0 {
            out.push(h as u8);
        }
    }
}

/// gzip-like: write a 16 MiB input, read it in 64 KiB chunks, compress
/// (1/3 size) into an output file, then read that and expand it back.
fn gzip(dir: &Path) {
    let (input, packed, unpacked) = (dir.join("in"), dir.join("in.gz"), dir.join("out"));
    let chunk: Vec<u8> = (0..64 << 10).map(|i| (i % 251) as u8).collect();
    let fd = open_flags(&input, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC);
    for _ in 0..256 {
        write_all(fd, &chunk);
    }
    close(fd);
    let mut buf = vec![0u8; 64 << 10];
    let mut out = Vec::with_capacity(64 << 10);
    let (src, dst) = (
        open_flags(&input, libc::O_RDONLY),
        open_flags(&packed, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
    );
    loop {
        let n = read_some(src, &mut buf);
        if n == 0 {
            break;
        }
        out.clear();
        transform(&buf[..n], 3, &mut out);
        write_all(dst, &out);
    }
    close(src);
    close(dst);
    let (src, dst) = (
        open_flags(&packed, libc::O_RDONLY),
        open_flags(&unpacked, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
    );
    loop {
        let n = read_some(src, &mut buf[..(64 << 10) / 3]);
        if n == 0 {
            break;
        }
        out.clear();
        for &b in &buf[..n] {
            out.extend_from_slice(&[b, b ^ 0x55, b ^ 0xaa]);
        }
        write_all(dst, &out);
    }
    close(src);
    close(dst);
    for p in [input, packed, unpacked] {
        let _ = std::fs::remove_file(p);
    }
}

/// Many small files: 2,000 files of 4 KiB written, read back, removed.
fn small(dir: &Path) {
    let data = vec![0x42u8; 4096];
    let mut buf = vec![0u8; 4096];
    let name = |i: usize| dir.join(format!("s{i}"));
    for i in 0..2000 {
        let fd = open(&name(i));
        write_at(fd, &data, 0);
        close(fd);
    }
    for i in 0..2000 {
        let fd = open(&name(i));
        read_at(fd, &mut buf, 0);
        close(fd);
    }
    for i in 0..2000 {
        let _ = std::fs::remove_file(name(i));
    }
}

/// SQLite: 20,000 rows in 200 transactions, an index, 2,000 lookups.
const SQLITE: &str = r#"
import os, sqlite3, sys, time
db = os.path.join(sys.argv[1], "bench.db")
c0, t0 = time.process_time(), time.monotonic()
c = sqlite3.connect(db)
c.execute("create table t(k integer, v text)")
for b in range(200):
    c.executemany("insert into t values(?, ?)", ((b * 100 + i, "x" * 100) for i in range(100)))
    c.commit()
c.execute("create index ti on t(k)")
for i in range(2000):
    c.execute("select v from t where k = ?", (i * 7 % 20000,)).fetchone()
c.close()
os.remove(db)
print(f"{time.monotonic() - t0:.6f} {time.process_time() - c0:.6f}")
"#;

/// Wall seconds of one run of `shape` in `dir`, in a fresh memory cgroup
/// of `limit` bytes when given; `None` if it failed (OOM-killed, ...).
fn one(exe: &Path, so: Option<&Path>, shape: &str, dir: &Path, limit: Option<u64>) -> Option<f64> {
    let cg = match limit {
        Some(l) => Some(ScopedCgroup::create("ephemera-bench", l)?),
        None => None,
    };
    let mut cmd = match &cg {
        Some(cg) => cg.command(exe).ok()?,
        None => Command::new(exe),
    };
    cmd.args(["worker", shape])
        .arg(dir)
        .args(["0", "0"])
        .env_remove("LD_PRELOAD");
    if let Some(so) = so {
        cmd.env("LD_PRELOAD", so)
            .env("EPHEMERA_TIER_DIR", dir)
            .env("EPHEMERA_MODE", "adaptive");
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}-{hi:.2}")
}

/// Every shape, `rounds` interleaved rounds each; prints one row per shape
/// and the geometric means of the median ratios.
pub fn run(
    exe: &Path,
    so: &Path,
    dirs: (&Path, &Path, Option<&Path>),
    rounds: usize,
    limit: Option<u64>,
) {
    let (tier, disk, tmpfs) = dirs;
    match limit {
        Some(l) => println!("shapes in a {} MiB memory cgroup, {rounds} interleaved rounds (wall seconds; ratio = tier/other, median of rounds, min-max):", l >> 20),
        None => println!("shapes, no cgroup, {rounds} interleaved rounds (wall seconds; ratio = tier/other, median of rounds, min-max):"),
    }
    println!(
        "  {:<8} {:>8} {:>8} {:>8}  {:>20}  {:>20}",
        "shape", "tier", "disk", "tmpfs", "tier/disk", "tier/tmpfs"
    );
    let (mut geo_d, mut geo_m, mut n_d, mut n_m) = (0.0, 0.0, 0, 0);
    for shape in SHAPES {
        let (mut t, mut d, mut m) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rd, mut rm) = (Vec::new(), Vec::new());
        let mut failed = Vec::new();
        for _ in 0..rounds {
            let ti = one(exe, Some(so), shape, tier, limit);
            let di = one(exe, None, shape, disk, limit);
            let mi = tmpfs.map(|p| one(exe, None, shape, p, limit));
            match ti {
                Some(x) => t.push(x),
                None => failed.push("tier"),
            }
            match di {
                Some(x) => d.push(x),
                None => failed.push("disk"),
            }
            match mi {
                Some(Some(x)) => m.push(x),
                Some(None) => failed.push("tmpfs"),
                None => {}
            }
            if let (Some(x), Some(y)) = (ti, di) {
                rd.push(x / y);
            }
            if let (Some(x), Some(Some(y))) = (ti, mi) {
                rm.push(x / y);
            }
        }
        let cell = |r: &mut Vec<f64>| {
            if r.is_empty() {
                "-".to_string()
            } else {
                let s = spread(r);
                format!("{:.2}x ({s})", median(r))
            }
        };
        if !rd.is_empty() {
            geo_d += median(&mut rd.clone()).ln();
            n_d += 1;
        }
        if !rm.is_empty() {
            geo_m += median(&mut rm.clone()).ln();
            n_m += 1;
        }
        let fail = if failed.is_empty() {
            String::new()
        } else {
            format!("  failed: {failed:?}")
        };
        println!(
            "  {shape:<8} {:>8.3} {:>8.3} {:>8.3}  {:>20}  {:>20}{fail}",
            median(&mut t),
            median(&mut d),
            median(&mut m),
            cell(&mut rd),
            cell(&mut rm),
        );
    }
    let geo = |s: f64, n: usize| {
        if n == 0 {
            f64::NAN
        } else {
            (s / n as f64).exp()
        }
    };
    println!(
        "  geometric mean of the median ratios: tier/disk {:.2}x, tier/tmpfs {:.2}x",
        geo(geo_d, n_d),
        geo(geo_m, n_m)
    );
}
