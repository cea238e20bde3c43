//! `tier-bench`: the tier against a plain directory and a tmpfs mount.
//!
//! `tier-bench [--ops N] [--size BYTES] [--reps N] [--no-limit] [--sweeps] [--rounds N] [--no-shapes]` (run from a release build, next to
//! `libephemera_intercept.so`) runs each workload three times — in a plain
//! directory on the same disk, on a fresh tmpfs mount (root only; skipped
//! otherwise), and in a tier directory under `LD_PRELOAD` — as child
//! processes of itself (`tier-bench worker …`), then prints times and
//! ratios. Workloads: the thesis's random_disk_io (8 KiB `lseek`+`write`
//! at random offsets of a file, then as many `lseek`+`read`), sequential
//! 8 KiB and 1 MiB writes then reads, and a CPU-only loop (preload overhead);
//! then two 48 MiB files through a 64 MiB memory cgroup on tmpfs and in the
//! tier (`--no-limit` skips it), and with `--sweeps` the thesis's sweeps of
//! memory limit, file size and operation count. Then the shapes of real
//! functions (`shapes`: video frames rewritten with `O_TRUNC`, streaming
//! append, gzip-like, many small files, SQLite), interleaved, without and
//! inside a memory cgroup (`--rounds N`, `--shape-limit BYTES`,
//! `--no-shapes`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use ephemera_sys::scoped::ScopedCgroup;

mod shapes;
mod work;

use work::worker;

/// A tmpfs mounted for the run and unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={}", (size * 3).max(256 << 20)),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            Some(Tmpfs(at.to_path_buf()))
        } else {
            let _ = std::fs::remove_dir(at);
            None
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Runs one workload in a fresh memory cgroup of `limit` bytes; describes
/// how it ended (time, OOM kill, failure).
#[allow(clippy::too_many_arguments)]
fn run_in_cgroup(
    exe: &Path,
    so: &Path,
    kind: &str,
    dir: &Path,
    size: u64,
    ops: u64,
    limit: u64,
    preload: bool,
) -> String {
    let Some(cg) = ScopedCgroup::create("ephemera-bench", limit) else {
        return "no cgroup".into();
    };
    let Ok(mut cmd) = cg.command(exe) else {
        return "no cgroup".into();
    };
    cmd.args(["worker", kind])
        .arg(dir)
        .args([size.to_string(), ops.to_string()])
        .env_remove("LD_PRELOAD");
    if preload {
        cmd.env("LD_PRELOAD", so).env("EPHEMERA_TIER_DIR", dir);
    }
    let out = cmd.output().expect("spawn");
    for f in ["two-0.dat", "two-1.dat", "bench.dat"] {
        let _ = std::fs::remove_file(dir.join(f));
    }
    use std::os::unix::process::ExitStatusExt;
    match (out.status.code(), out.status.signal()) {
        (Some(0), _) => {
            let wall = String::from_utf8_lossy(&out.stdout);
            format!("{} s", wall.split_whitespace().next().unwrap_or("?"))
        }
        (_, Some(9)) => "OOM-killed".into(),
        (code, sig) => format!("failed (exit {code:?}, signal {sig:?})"),
    }
}

/// The limit workload in a fresh 64 MiB cgroup: two 48 MiB files written
/// and randomly re-read, on tmpfs and in the tier.
fn limit_rows(exe: &Path, so: &Path, tier: &Path, tmpfs: Option<&Tmpfs>) {
    println!("64 MiB cgroup, two 48 MiB files written then 20,000 random 8 KiB reads:");
    if let Some(t) = tmpfs {
        println!(
            "  tmpfs: {}",
            run_in_cgroup(exe, so, "twofiles", &t.0, 48 << 20, 20_000, 64 << 20, false)
        );
    }
    println!(
        "  tier (adaptive): {}",
        run_in_cgroup(exe, so, "twofiles", tier, 48 << 20, 20_000, 64 << 20, true)
    );
}

/// The thesis's sweeps (section 5.2) with random_disk_io in a memory
/// cgroup: limit 32-256 MiB (96 MiB file), file size 32-160 MiB (150 MiB
/// limit), operation count 500-500,000 (32 MiB file, 150 MiB limit).
fn sweep_rows(exe: &Path, so: &Path, tier: &Path, tmpfs: &Tmpfs) {
    let mib = |v: u64| v << 20;
    let mut points: Vec<(String, u64, u64, u64)> = Vec::new();
    for l in [32, 64, 128, 256] {
        points.push((
            format!("limit {l} MiB, file 96 MiB, 50k ops"),
            mib(96),
            50_000,
            mib(l),
        ));
    }
    for f in [32, 64, 96, 128, 160] {
        points.push((
            format!("file {f} MiB, limit 150 MiB, 50k ops"),
            mib(f),
            50_000,
            mib(150),
        ));
    }
    for n in [500, 5_000, 50_000, 500_000] {
        points.push((
            format!("{n} ops, file 32 MiB, limit 150 MiB"),
            mib(32),
            n,
            mib(150),
        ));
    }
    println!("sweeps (random_disk_io in a memory cgroup; wall seconds of the timed part):");
    println!("  {:<40} {:>14} {:>14}  winner", "point", "tmpfs", "tier");
    for (name, size, ops, limit) in points {
        let m = run_in_cgroup(exe, so, "random", &tmpfs.0, size, ops, limit, false);
        let t = run_in_cgroup(exe, so, "random", tier, size, ops, limit, true);
        let secs = |v: &str| v.strip_suffix(" s").and_then(|x| x.parse::<f64>().ok());
        let winner = match (secs(&m), secs(&t)) {
            (Some(a), Some(b)) if a < b => "tmpfs",
            (_, Some(_)) => "tier",
            (Some(_), None) => "tmpfs",
            _ => "neither",
        };
        println!("  {name:<40} {m:>14} {t:>14}  {winner}");
    }
}

/// Runs one workload in a child `reps` times; returns the best
/// `(wall, cpu)` seconds (each minimised separately).
fn timed(
    exe: &Path,
    kind: &str,
    dir: &Path,
    size: u64,
    ops: u64,
    preload: Option<&Path>,
    reps: u32,
) -> (f64, f64) {
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..reps {
        let mut cmd = Command::new(exe);
        cmd.args(["worker", kind])
            .arg(dir)
            .args([size.to_string(), ops.to_string()])
            .env_remove("LD_PRELOAD");
        if let Some(so) = preload {
            cmd.env("LD_PRELOAD", so)
                .env("EPHEMERA_TIER_DIR", dir)
                .env("EPHEMERA_MODE", "memory");
        }
        let out = cmd.output().expect("spawn worker");
        assert!(
            out.status.success(),
            "{kind} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text
            .split_whitespace()
            .map(|v| v.parse::<f64>().expect("worker prints seconds"));
        let (wall, cpu) = (it.next().unwrap_or(f64::MAX), it.next().unwrap_or(f64::MAX));
        best = (best.0.min(wall), best.1.min(cpu));
    }
    best
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") && args.len() == 6 {
        if shapes::worker(&args[2], Path::new(&args[3])) {
            return ExitCode::SUCCESS;
        }
        worker(
            &args[2],
            Path::new(&args[3]),
            args[4].parse().unwrap_or(32 << 20),
            args[5].parse().unwrap_or(1000),
        );
        return ExitCode::SUCCESS;
    }
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    let ops: u64 = get("--ops").unwrap_or(500_000);
    let size: u64 = get("--size").unwrap_or(32 << 20);
    let reps = u32::try_from(get("--reps").unwrap_or(3)).unwrap_or(3);
    let exe = std::env::current_exe().expect("current_exe");
    let so = exe.with_file_name("libephemera_intercept.so");
    if !so.exists() {
        eprintln!(
            "{} missing: cargo build --release -p ephemera-intercept",
            so.display()
        );
        return ExitCode::FAILURE;
    }
    let base = std::env::temp_dir();
    let plain = base.join(format!("ephemera-bench-plain-{}", std::process::id()));
    let tier = base.join(format!("ephemera-bench-tier-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&plain);
    let _ = std::fs::create_dir_all(&tier);
    let tmpfs = Tmpfs::mount(
        &base.join(format!("ephemera-bench-tmpfs-{}", std::process::id())),
        size,
    );
    if tmpfs.is_none() {
        eprintln!("note: could not mount tmpfs (needs root); tmpfs column skipped");
    }
    println!(
        "tier-bench: file {} MiB, {ops} ops, best of {reps}; wall and CPU (user+sys) seconds",
        size >> 20
    );
    println!(
        "{:<8} {:>16} {:>16} {:>16} {:>18} {:>18}",
        "workload",
        "plain wall/cpu",
        "tmpfs wall/cpu",
        "tier wall/cpu",
        "plain/tier w/c",
        "tmpfs/tier w/c"
    );
    let pair = |(w, c): (f64, f64)| format!("{w:.3}/{c:.3}");
    let ratio = |(w, c): (f64, f64), (tw, tc): (f64, f64)| format!("{:.2}x/{:.2}x", w / tw, c / tc);
    for kind in ["random", "seq8k", "seq1m", "cpu"] {
        let p = timed(&exe, kind, &plain, size, ops, None, reps);
        let m = tmpfs
            .as_ref()
            .map(|t| timed(&exe, kind, &t.0, size, ops, None, reps));
        let dir = if kind == "cpu" { &plain } else { &tier };
        let t = timed(&exe, kind, dir, size, ops, Some(&so), reps);
        println!(
            "{kind:<8} {:>16} {:>16} {:>16} {:>18} {:>18}",
            pair(p),
            m.map_or("-".into(), pair),
            pair(t),
            ratio(p, t),
            m.map_or("-".into(), |m| ratio(m, t))
        );
    }
    println!("(cpu row: the same loop without and with the preload; 1.00x = no overhead)");
    let raw = timed(&exe, "raw", &plain, size, ops, None, reps);
    let tier_random = timed(&exe, "random", &tier, size, ops, Some(&so), reps);
    println!(
        "random_disk_io ceiling, raw mmap+memcpy without the tier: {} s (wall/cpu); tier {} s: {:.0}% of raw speed by CPU",
        pair(raw),
        pair(tier_random),
        100.0 * raw.1 / tier_random.1
    );
    if !args.iter().any(|a| a == "--no-limit") {
        limit_rows(&exe, &so, &tier, tmpfs.as_ref());
    }
    if !args.iter().any(|a| a == "--no-shapes") {
        let rounds = usize::try_from(get("--rounds").unwrap_or(5)).unwrap_or(5);
        let dirs = (
            tier.as_path(),
            plain.as_path(),
            tmpfs.as_ref().map(|t| t.0.as_path()),
        );
        shapes::run(&exe, &so, dirs, rounds, None);
        let limit: u64 = get("--shape-limit").unwrap_or(256 << 20);
        if ScopedCgroup::create("ephemera-bench", limit).is_some() {
            shapes::run(&exe, &so, dirs, rounds, Some(limit));
        } else {
            println!("(no memory cgroup could be made: the constrained shapes are skipped)");
        }
    }
    if let (true, Some(t)) = (args.iter().any(|a| a == "--sweeps"), tmpfs.as_ref()) {
        sweep_rows(&exe, &so, &tier, t);
    }
    drop(tmpfs);
    let _ = std::fs::remove_dir_all(&plain);
    let _ = std::fs::remove_dir_all(&tier);
    ExitCode::SUCCESS
}
