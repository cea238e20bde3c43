//! Counters: this process's own copy (for `EPHEMERA_STATS`) and the shared
//! control block named by `EPHEMERA_CONTROL` (for the node agent), which also
//! carries the memory limit and mode the agent sets at run time.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use ephemera_control_block::{Mode, Slot, MAGIC, SIZE, SLOTS};

/// Words of this process's counters, indexed like the control block.
const LOCAL_WORDS: usize = 32;

static LOCAL: [AtomicU64; LOCAL_WORDS] = [const { AtomicU64::new(0) }; LOCAL_WORDS];
static BLOCK: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());

/// Maps the control block named by `EPHEMERA_CONTROL`, if it is valid.
/// Called once from the constructor.
pub fn init() {
    let Some(path) = crate::config::env(c"EPHEMERA_CONTROL") else {
        return;
    };
    let mut buf = [0u8; crate::config::PATH_MAX];
    if path.is_empty() || path.len() >= buf.len() {
        return;
    }
    buf[..path.len()].copy_from_slice(path);
    // SAFETY: `buf` is NUL-terminated.
    let fd = unsafe {
        crate::sys::openat(
            libc::AT_FDCWD,
            buf.as_ptr().cast(),
            libc::O_RDWR | libc::O_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return;
    }
    let big_enough = crate::sys::fstat(fd).is_some_and(|st| st.st_size >= SIZE as i64);
    let map = if big_enough {
        crate::sys::mmap(
            SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
        )
    } else {
        libc::MAP_FAILED
    };
    crate::sys::close(fd);
    if map == libc::MAP_FAILED {
        return;
    }
    let words = map.cast::<AtomicU64>();
    // SAFETY: the mapping is SIZE bytes, page aligned, and only ever accessed
    // atomically, by us and by other processes.
    let magic = unsafe { &*words }.load(Ordering::Acquire);
    if magic != MAGIC {
        // SAFETY: we own this fresh mapping and nothing references it.
        unsafe { crate::sys::munmap(map, SIZE) };
        return;
    }
    BLOCK.store(words, Ordering::Release);
}

fn block_word(slot: Slot) -> Option<&'static AtomicU64> {
    let p = BLOCK.load(Ordering::Acquire);
    if p.is_null() || slot as usize >= SLOTS {
        return None;
    }
    // SAFETY: `p` points at SLOTS atomics mapped for the life of the process.
    Some(unsafe { &*p.add(slot as usize) })
}

/// Adds `n` to a counter, locally and in the control block.
pub fn add(slot: Slot, n: u64) {
    if let Some(w) = LOCAL.get(slot as usize) {
        w.fetch_add(n, Ordering::Relaxed);
    }
    if let Some(w) = block_word(slot) {
        w.fetch_add(n, Ordering::Relaxed);
    }
}

/// Subtracts `n` from a gauge (`MappedBytes`), never below zero.
pub fn sub(slot: Slot, n: u64) {
    let dec = |w: &AtomicU64| {
        let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    };
    if let Some(w) = LOCAL.get(slot as usize) {
        dec(w);
    }
    if let Some(w) = block_word(slot) {
        dec(w);
    }
}

/// Raises a maximum (`LargestFile`, `PeakNative`).
pub fn max(slot: Slot, v: u64) {
    if let Some(w) = LOCAL.get(slot as usize) {
        w.fetch_max(v, Ordering::Relaxed);
    }
    if let Some(w) = block_word(slot) {
        w.fetch_max(v, Ordering::Relaxed);
    }
}

/// Sets a flag word in the control block (`Safeguard`).
pub fn set(slot: Slot, v: u64) {
    if let Some(w) = LOCAL.get(slot as usize) {
        w.store(v, Ordering::Relaxed);
    }
    if let Some(w) = block_word(slot) {
        w.store(v, Ordering::Relaxed);
    }
}

/// Zeroes this process's counters (a fork child starts its own count).
pub fn reset_local() {
    for w in &LOCAL {
        w.store(0, Ordering::Relaxed);
    }
}

/// This process's value of a counter.
pub fn local(slot: Slot) -> u64 {
    LOCAL
        .get(slot as usize)
        .map_or(0, |w| w.load(Ordering::Relaxed))
}

/// The control block's value of a word, if a block is mapped.
pub fn shared(slot: Slot) -> Option<u64> {
    block_word(slot).map(|w| w.load(Ordering::Acquire))
}

/// The mode in force: `EPHEMERA_MODE`, else the control block's, else adaptive.
pub fn mode() -> Mode {
    if let Some(m) = crate::config::get().and_then(|c| c.mode_env) {
        return m;
    }
    shared(Slot::Mode).map_or(Mode::Adaptive, Mode::from_u64)
}

/// The memory budget in bytes (0 = unlimited): the control block's limit,
/// else `EPHEMERA_MEM_LIMIT`, else the cgroup's limit (read by the adapter).
pub fn mem_limit() -> u64 {
    match shared(Slot::MemLimit) {
        Some(v) if v > 0 => v,
        _ => crate::config::get().map_or(0, |c| c.mem_limit_env),
    }
}
