//! The memory adapter: the placement budget, and a background thread that
//! watches the instance's memory against the current limit.
//!
//! The limit is read live every time (the control block's `MemLimit`, which
//! the node agent rewrites when it resizes the instance; else
//! `EPHEMERA_MEM_LIMIT`; else the cgroup's own limit), so the tier adapts
//! when the limit changes at run time. The thread samples `/proc/self/statm`
//! and the cgroup's usage (`memory.current` on v2, `memory.usage_in_bytes`
//! on v1), records the peak in `PeakNative`, raises `Safeguard` near the
//! limit and, in adaptive mode, evicts: closed retained files first (least
//! recently used: msync, `MADV_PAGEOUT`, munmap), open files only when that
//! is not enough (written back and paged out in place; the program's next
//! call on the file hands it to the kernel path). The thread has its own,
//! empty fd table ([`detach_fd_table`]). It starts at load time
//! in a process that has a control block (so the profiler sees the peak of
//! functions that never touch the tier), else on the first tier file opened
//! while a limit exists, and is restarted in a fork child on demand.
//!
//! The placement budget leaves room for memory the tier does not own (the
//! process's own, and the cgroup's other pages): a file may be mapped, and
//! its reserved size grow, only while everything stays under the low-water
//! mark. A file that would not fit goes to the kernel path at once instead
//! of filling the cgroup until the adapter has to evict it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use ephemera_control_block::{Mode, Slot};

use crate::{control, sys, tier};

/// How often the thread samples memory use.
const PERIOD: Duration = Duration::from_millis(20);
/// Safeguard and eviction start above this share of the limit (percent).
const HIGH_PCT: u64 = 90;
/// Eviction stops below this share of the limit (percent).
const LOW_PCT: u64 = 80;
/// Evictions per sample at most (bounds lock hold time).
const MAX_EVICT_PER_TICK: usize = 64;

static STARTED: AtomicBool = AtomicBool::new(false);
/// When a writer last refreshed [`NATIVE`] itself (monotonic ns).
static NATIVE_AT: AtomicU64 = AtomicU64::new(0);
/// How old [`NATIVE`] may be when the budget is checked.
const FRESH: Duration = Duration::from_millis(2);
/// The cgroup limit found at start-up (0 = none readable); see [`cgroup`].
static CGROUP_LIMIT: AtomicU64 = AtomicU64::new(0);
/// Memory the tier does not own, at the last sample: the larger of this
/// process's resident bytes less the tier's mapped bytes (heap, stacks,
/// libraries) and the cgroup's usage less them (other processes, page
/// cache of other files).
static NATIVE: AtomicU64 = AtomicU64::new(0);

/// Bytes mapped now: the control block's gauge when shared, else ours.
fn mapped() -> u64 {
    control::shared(Slot::MappedBytes).unwrap_or_else(|| control::local(Slot::MappedBytes))
}

/// The limit in force (0 = unlimited).
pub fn limit() -> u64 {
    match control::mem_limit() {
        0 => CGROUP_LIMIT.load(Ordering::Relaxed),
        v => v,
    }
}

/// Bytes the tier may still map: the low-water mark of the limit less
/// what is mapped and the memory the tier does not own. Unbounded without
/// a limit and in `memory` mode. Staying under the low-water mark keeps a
/// growing file out of the adapter's way: it is handed to the kernel path
/// (no write-back) before the adapter would have to evict it (write-back).
pub fn room() -> u64 {
    let limit = limit();
    if limit == 0 || control::mode() == Mode::Memory {
        return u64::MAX;
    }
    refresh_native();
    (limit / 100 * LOW_PCT)
        .saturating_sub(mapped())
        .saturating_sub(NATIVE.load(Ordering::Relaxed))
}

/// Whether a file of `size` bytes may be placed in memory (adaptive mode).
pub fn fits(size: u64) -> bool {
    size <= room()
}

/// Whether a closed file may stay mapped for a reopen.
pub fn may_retain() -> bool {
    if control::mode() == Mode::Disk {
        return false;
    }
    let limit = limit();
    limit == 0 || mapped() <= limit / 100 * LOW_PCT
}

/// Paths of the cgroup's usage and limit files, found once.
struct Cgroup {
    usage: Option<std::path::PathBuf>,
}

fn cgroup() -> &'static Cgroup {
    static CG: OnceLock<Cgroup> = OnceLock::new();
    CG.get_or_init(|| {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut usage = None;
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, ctrl, path) = (
                parts.next(),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or("/"),
            );
            let rel = path.trim_start_matches('/');
            let (dirs, use_name, lim_name) = if ctrl.is_empty() {
                (
                    [
                        format!("/sys/fs/cgroup/{rel}"),
                        "/sys/fs/cgroup".to_string(),
                    ],
                    "memory.current",
                    "memory.max",
                )
            } else if ctrl.split(',').any(|c| c == "memory") {
                (
                    [
                        format!("/sys/fs/cgroup/memory/{rel}"),
                        "/sys/fs/cgroup/memory".to_string(),
                    ],
                    "memory.usage_in_bytes",
                    "memory.limit_in_bytes",
                )
            } else {
                continue;
            };
            for d in dirs {
                let u = std::path::Path::new(&d).join(use_name);
                if u.exists() {
                    let lim = read_u64(&std::path::Path::new(&d).join(lim_name)).unwrap_or(0);
                    // v1 reports "no limit" as a huge page-rounded number.
                    if lim > 0 && lim < (1 << 60) {
                        CGROUP_LIMIT.store(lim, Ordering::Relaxed);
                    }
                    usage = Some(u);
                    break;
                }
            }
            if usage.is_some() {
                break;
            }
        }
        Cgroup { usage }
    })
}

fn read_u64(p: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// `/proc/self/statm`'s resident and shared sizes, in bytes. Raw system
/// calls and a stack buffer: it also runs inside hooks, under the tier lock.
fn statm() -> Option<(u64, u64)> {
    let mut buf = [0u8; 160];
    // SAFETY: the path is a NUL-terminated literal.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            c"/proc/self/statm".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: `buf` is writable for its length.
    let n = unsafe { sys::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    sys::close(fd);
    let text = buf.get(..usize::try_from(n).ok()?)?;
    let mut fields = text
        .split(|b| b.is_ascii_whitespace())
        .skip(1)
        .map(|f| std::str::from_utf8(f).ok()?.parse::<u64>().ok());
    let (resident, shared) = (fields.next()??, fields.next()??);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Some((resident * page, shared * page))
}

/// The part of this process's resident memory the tier does not own: all
/// of it less the tier's mapped bytes (libraries are resident file pages
/// too), at least the anonymous part.
fn not_tier((resident, shared): (u64, u64)) -> u64 {
    resident
        .saturating_sub(shared)
        .max(resident.saturating_sub(mapped()))
}

/// Resident set size of this process in bytes; records the part the tier
/// does not own for the budget.
fn rss() -> u64 {
    let sizes = statm().unwrap_or((0, 0));
    NATIVE.store(not_tier(sizes), Ordering::Relaxed);
    sizes.0
}

/// Raises the recorded memory the tier does not own from a fresh sample
/// when the last one is older than [`FRESH`]: a file can grow faster than
/// the adapter thread samples, and on a busy machine that thread may not
/// run for a while.
fn refresh_native() {
    // SAFETY: all-zero is a valid timespec, which clock_gettime fills.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is writable.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let now = (ts.tv_sec.max(0) as u64) * 1_000_000_000 + ts.tv_nsec.max(0) as u64;
    let last = NATIVE_AT.load(Ordering::Relaxed);
    if now.saturating_sub(last) < FRESH.as_nanos() as u64
        || NATIVE_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    if let Some(sizes) = statm() {
        NATIVE.fetch_max(not_tier(sizes), Ordering::Relaxed);
    }
}

/// Starts the adapter thread once, if there is anything to adapt to.
pub fn ensure_started() {
    if STARTED.load(Ordering::Relaxed) {
        return;
    }
    if control::shared(Slot::Magic).is_none() && limit() == 0 {
        // Reading the cgroup limit is a few syscalls; do it once here.
        let _ = cgroup();
        if limit() == 0 {
            return;
        }
    }
    if STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    // The budget needs the process's own memory before the first sample.
    control::max(Slot::PeakNative, rss());
    let spawned = std::thread::Builder::new()
        .name("ephemera-adapter".into())
        .stack_size(64 << 10)
        .spawn(run);
    if spawned.is_err() {
        STARTED.store(false, Ordering::Release);
    }
}

/// Memory pressure now: the process's resident set against the limit in
/// force, and the cgroup's usage against the cgroup's own limit (the whole
/// instance, page cache included). Returns `(used, allowed)` of the tighter.
fn pressure() -> (u64, u64) {
    let resident = rss();
    control::max(Slot::PeakNative, resident);
    let mut worst = (resident, limit());
    let cg_limit = CGROUP_LIMIT.load(Ordering::Relaxed);
    if cg_limit > 0 {
        if let Some(used) = cgroup().usage.as_deref().and_then(read_u64) {
            NATIVE.fetch_max(used.saturating_sub(mapped()), Ordering::Relaxed);
            let ratio = |(u, l): (u64, u64)| u.saturating_mul(1000).checked_div(l).unwrap_or(0);
            if ratio((used, cg_limit)) > ratio(worst) {
                worst = (used, cg_limit);
            }
        }
    }
    worst
}

/// One sample: records the peak, raises the safeguard near the limit and,
/// in adaptive mode, evicts. Returns true when above the high-water mark.
pub fn sample() -> bool {
    let (used, allowed) = pressure();
    if allowed == 0 || used < allowed / 100 * HIGH_PCT {
        return false;
    }
    let raised =
        control::shared(Slot::Safeguard).unwrap_or_else(|| control::local(Slot::Safeguard));
    if raised != 1 {
        control::set(Slot::Safeguard, 1);
        control::add(Slot::SafeguardRaised, 1);
    }
    if control::mode() == Mode::Adaptive {
        evict_until();
    }
    true
}

/// Evicts retained files, then open ones, until pressure falls below the
/// low-water mark.
fn evict_until() {
    for _ in 0..MAX_EVICT_PER_TICK {
        let (used, allowed) = pressure();
        if used < allowed / 100 * LOW_PCT {
            return;
        }
        let detached = tier::lock().evict_retained();
        if let Some(d) = detached {
            crate::mapping::release(d);
            continue;
        }
        if !tier::lock().evict_open() {
            return;
        }
    }
}

/// Gives this thread its own, empty fd table. While a second thread shares
/// the program's table, every system call on an fd loses the kernel's
/// single-threaded fast path (it takes a file reference and the file
/// position lock): measured +10 % system time for a read/write/lseek loop
/// next to an idle thread. The adapter needs none of the program's fds (it
/// opens its own files and evicts through the mappings), so it unshares the
/// table and closes its copy of every fd but the trace file's. Where seccomp
/// refuses `unshare` (Docker's default profile), the table stays shared.
fn detach_fd_table() {
    // SAFETY: no pointers; affects this thread's fd table only.
    if unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_FILES) } != 0 {
        return;
    }
    let keep = crate::trace::fd();
    let close_range = |from: i32, to: u32| {
        // SAFETY: closes fds in this thread's private table only.
        unsafe { libc::syscall(libc::SYS_close_range, from as u32, to, 0u32) };
    };
    if keep < 0 {
        close_range(0, u32::MAX);
    } else {
        if keep > 0 {
            close_range(0, (keep - 1) as u32);
        }
        close_range(keep + 1, u32::MAX);
    }
}

fn run() {
    detach_fd_table();
    loop {
        std::thread::sleep(PERIOD);
        crate::guard((), || {
            sample();
        });
    }
}

/// Records this process's peak resident set (`ru_maxrss`) in `PeakNative`:
/// called at exit, so every process of the instance contributes even if the
/// adapter thread never ran in it.
pub fn record_peak() {
    // SAFETY: all-zero is a valid `rusage`.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is writable.
    if unsafe { libc::syscall(libc::SYS_getrusage, libc::RUSAGE_SELF, &mut ru) } == 0 {
        control::max(Slot::PeakNative, (ru.ru_maxrss.max(0) as u64) * 1024);
    }
}

/// In a fork child the thread is gone: allow a restart.
pub fn after_fork_child() {
    STARTED.store(false, Ordering::Release);
}
