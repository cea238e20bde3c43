//! One file for every process: the per-file table every process of the
//! instance maps (layout and reasons in `ephemera_control_block::table`).
//!
//! The rule it enforces: a tier file is served from memory by at most one
//! process, the *owner*, and only while no other process has it open. A
//! process opening a file that another process owns takes it away: under
//! the entry's lock it cuts the kernel size back to the published logical
//! size and clears the owner; from then on every process serves the file on
//! the kernel path, where the kernel makes sizes, appends, truncations and
//! locks exact. The owner holds the entry's lock across each of its
//! operations (one uncontended compare-and-swap), and finds out it lost the
//! file on its next one. The owner publishes the logical size on every
//! change, so after a crash the reservation can be trimmed (by the next
//! process that opens the file, or the agent / `ephemera run`).
//!
//! The table is the control block's tail when `EPHEMERA_CONTROL` names one
//! that has it, else a file in `/dev/shm` named after the tier directory.
//! Without either, each process keeps its own sizes (the old behaviour).
//! Every call is made under the tier lock, so within a process nothing here
//! runs concurrently; across processes the words are atomics.

use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use ephemera_control_block::table::{
    ENTRIES, ENTRY_WORDS, E_BIRTH, E_DEV, E_FD, E_FLAGS, E_INO, E_LOCK, E_OWNER, E_SIZE, E_USERS,
    FILE_SIZE, F_CROWDED, TABLE_OFFSET, TABLE_SIZE,
};
use libc::c_int;

use crate::sys;

static TABLE: AtomicPtr<AtomicU64> = AtomicPtr::new(std::ptr::null_mut());
/// This process's pid (re-read after fork).
static ME: AtomicU64 = AtomicU64::new(0);

/// Maps the table. Called once from the constructor, after `config` and
/// `control`. A new process image (after `exec`) first forgets what the
/// old one registered under the same pid; `inherited` re-registers the fds
/// that survived.
pub fn init() {
    refresh_pid();
    let map = map_control().or_else(map_default);
    if let Some(p) = map {
        TABLE.store(p, Ordering::Release);
        forget_me();
    }
}

/// Re-reads the pid (the child of `fork`).
pub fn refresh_pid() {
    ME.store(sys::getpid().max(0) as u64, Ordering::Relaxed);
}

fn me() -> u64 {
    ME.load(Ordering::Relaxed)
}

/// The table in the control block, if it carries one.
fn map_control() -> Option<*mut AtomicU64> {
    let path = crate::config::env(c"EPHEMERA_CONTROL")?;
    let mut buf = [0u8; crate::config::PATH_MAX];
    if path.is_empty() || path.len() >= buf.len() {
        return None;
    }
    buf[..path.len()].copy_from_slice(path);
    // SAFETY: `buf` is NUL-terminated.
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            buf.as_ptr().cast(),
            libc::O_RDWR | libc::O_CLOEXEC,
            0,
        )
    };
    map_fd(fd, TABLE_OFFSET, FILE_SIZE)
}

/// `/dev/shm/ephemera-tier.<uid>.<dev>.<ino>` of the tier directory, made
/// on first use (0600, ours, not a symlink) and sized to one table.
fn map_default() -> Option<*mut AtomicU64> {
    let cfg = crate::config::get()?;
    let mut dir = [0u8; crate::config::PATH_MAX + 1];
    dir[..cfg.tier_len].copy_from_slice(&cfg.tier[..cfg.tier_len]);
    let mut st: libc::stat = zeroed_stat();
    // SAFETY: `dir` is NUL-terminated, `st` writable.
    if unsafe { sys::fstatat(libc::AT_FDCWD, dir.as_ptr().cast(), &mut st, 0) } != 0 {
        return None;
    }
    // SAFETY: getuid has no arguments.
    let uid = unsafe { libc::syscall(libc::SYS_getuid) } as u64;
    let mut name = [0u8; 96];
    let prefix = b"/dev/shm/ephemera-tier.";
    name[..prefix.len()].copy_from_slice(prefix);
    let mut n = prefix.len();
    for (i, v) in [uid, st.st_dev, st.st_ino].into_iter().enumerate() {
        if i > 0 {
            name[n] = b'.';
            n += 1;
        }
        n += crate::fmt::write_u64(&mut name[n..], v);
    }
    // SAFETY: `name` is NUL-terminated (zeroed past `n`).
    let fd = unsafe {
        sys::openat(
            libc::AT_FDCWD,
            name.as_ptr().cast(),
            libc::O_RDWR | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return None;
    }
    let mine = sys::fstat(fd)
        .is_some_and(|s| u64::from(s.st_uid) == uid && s.st_mode & libc::S_IFMT == libc::S_IFREG);
    if !mine {
        sys::close(fd);
        return None;
    }
    map_fd(fd, 0, TABLE_SIZE as u64)
}

fn zeroed_stat() -> libc::stat {
    // SAFETY: all-zero bytes are a valid `stat`.
    unsafe { std::mem::zeroed() }
}

/// Maps `TABLE_SIZE` bytes at `off` of `fd` (growing a file shorter than
/// `need` only when it is the default table: `off == 0`); closes `fd`.
fn map_fd(fd: c_int, off: u64, need: u64) -> Option<*mut AtomicU64> {
    if fd < 0 {
        return None;
    }
    let size = sys::fstat(fd).map_or(0, |s| s.st_size.max(0) as u64);
    if size < need && (off != 0 || sys::ftruncate(fd, need as i64) != 0) {
        sys::close(fd);
        return None;
    }
    let p = sys::mmap_at(
        TABLE_SIZE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
        fd,
        off as libc::off_t,
    );
    sys::close(fd);
    (p != libc::MAP_FAILED).then_some(p.cast())
}

/// The table's words, if mapped.
fn words() -> Option<&'static [AtomicU64]> {
    let p = TABLE.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` maps TABLE_SIZE bytes for the life of the process, page
    // aligned, and every process only accesses it through atomics.
    Some(unsafe { std::slice::from_raw_parts(p, TABLE_SIZE / 8) })
}

/// The words of entry `slot` (1..ENTRIES).
fn entry(slot: u32) -> Option<&'static [AtomicU64]> {
    let s = slot as usize;
    if s == 0 || s >= ENTRIES {
        return None;
    }
    words().map(|w| &w[s * ENTRY_WORDS..(s + 1) * ENTRY_WORDS])
}

/// Takes a lock word (holder's pid), stealing it from a dead holder, or
/// from our own pid (a previous image of this process, after `exec`).
fn lock(word: &AtomicU64) {
    let me = me();
    let mut spins = 0u32;
    loop {
        match word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return,
            Err(h) if h == me => return,
            Err(h) => {
                if !sys::alive(h as c_int)
                    && word
                        .compare_exchange(h, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return;
                }
            }
        }
        spins += 1;
        if spins > 64 {
            sys::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

fn unlock(word: &AtomicU64) {
    word.store(0, Ordering::Release);
}

/// What [`open`] decided.
pub struct Opened {
    /// Entry index (0: no table, or it is full).
    pub slot: u32,
    /// This process may map the file (and now owns it).
    pub map: bool,
    /// The file was taken from another owner: its kernel size may have
    /// changed since the caller's `fstat`.
    pub took: bool,
}

/// Registers this process as having the file on `fd` open. If another
/// process owns it, takes it away (trimming the kernel size to the logical
/// size); grants ownership when `want_map` and nobody else has it open.
pub fn open(dev: u64, ino: u64, fd: c_int, want_map: bool, size: u64) -> Opened {
    let Some(w) = words() else {
        return Opened {
            slot: 0,
            map: want_map,
            took: false,
        };
    };
    let me = me();
    lock(&w[0]);
    let slot = find(w, dev, ino).or_else(|| claim(w, dev, ino, fd));
    let Some(slot) = slot else {
        unlock(&w[0]);
        // A full table: nobody can be told, so nobody maps.
        return Opened {
            slot: 0,
            map: false,
            took: false,
        };
    };
    let Some(e) = entry(slot) else {
        unlock(&w[0]);
        return Opened {
            slot: 0,
            map: false,
            took: false,
        };
    };
    let mut others = e[E_FLAGS].load(Ordering::Relaxed) & F_CROWDED != 0;
    let mut placed = false;
    for u in &e[E_USERS..] {
        let pid = u.load(Ordering::Relaxed);
        if pid == me {
            placed = true;
        } else if pid != 0 && !sys::alive(pid as c_int) {
            u.store(0, Ordering::Relaxed);
        } else if pid != 0 {
            others = true;
        }
    }
    if !placed {
        match e[E_USERS..].iter().find(|u| u.load(Ordering::Relaxed) == 0) {
            Some(u) => u.store(me, Ordering::Relaxed),
            None => {
                e[E_FLAGS].fetch_or(F_CROWDED, Ordering::Relaxed);
            }
        }
    }
    let owner = e[E_OWNER].load(Ordering::Acquire);
    let took = owner != 0 && owner != me;
    if took {
        take_away(e, fd);
    }
    let map = want_map && !others && e[E_OWNER].load(Ordering::Acquire) == 0;
    if map {
        let size = if took {
            sys::fstat(fd).map_or(size, |s| s.st_size.max(0) as u64)
        } else {
            size
        };
        e[E_SIZE].store(size, Ordering::Release);
        e[E_FD].store(fd.max(0) as u64, Ordering::Relaxed);
        // The entry may be older than this file (an inode number recycled
        // while a dead opener kept the entry): this file's birth from now on.
        e[E_BIRTH].store(sys::birth(fd), Ordering::Relaxed);
        e[E_OWNER].store(me, Ordering::Release);
    }
    unlock(&w[0]);
    Opened { slot, map, took }
}

fn find(w: &[AtomicU64], dev: u64, ino: u64) -> Option<u32> {
    (1..ENTRIES).find_map(|s| {
        let e = &w[s * ENTRY_WORDS..];
        (e[E_INO].load(Ordering::Relaxed) == ino && e[E_DEV].load(Ordering::Relaxed) == dev)
            .then_some(s as u32)
    })
}

fn claim(w: &[AtomicU64], dev: u64, ino: u64, fd: c_int) -> Option<u32> {
    let s = (1..ENTRIES).find(|&s| w[s * ENTRY_WORDS + E_INO].load(Ordering::Relaxed) == 0)?;
    let e = &w[s * ENTRY_WORDS..(s + 1) * ENTRY_WORDS];
    for x in &e[E_SIZE..] {
        x.store(0, Ordering::Relaxed);
    }
    e[E_BIRTH].store(sys::birth(fd), Ordering::Relaxed);
    e[E_DEV].store(dev, Ordering::Relaxed);
    e[E_INO].store(ino, Ordering::Release);
    Some(s as u32)
}

/// Hands a file another (live or dead) process owns to the kernel path:
/// under the entry lock, the kernel size goes back to the published logical
/// size (only ever shorter) and the owner is cleared.
fn take_away(e: &[AtomicU64], fd: c_int) {
    lock(&e[E_LOCK]);
    let owner = e[E_OWNER].load(Ordering::Acquire);
    // A live owner has this very file open (its inode cannot be recycled);
    // a dead owner's entry is trusted only if the birth time matches.
    let birth = e[E_BIRTH].load(Ordering::Relaxed);
    let same_file = birth == 0 || sys::alive(owner as c_int) || birth == sys::birth(fd);
    if owner != 0 && owner != me() && same_file {
        trim(fd, e[E_SIZE].load(Ordering::Acquire));
    }
    e[E_OWNER].store(0, Ordering::Release);
    unlock(&e[E_LOCK]);
}

/// Cuts the file on `fd` back to `size` if it is longer (through a
/// write-only reopen: `fd` may be read-only).
fn trim(fd: c_int, size: u64) {
    if sys::fstat(fd).is_none_or(|s| s.st_size.max(0) as u64 <= size) {
        return;
    }
    let w = sys::reopen(fd, libc::O_WRONLY);
    if w >= 0 {
        sys::ftruncate(w, size as i64);
        sys::close(w);
    }
}

/// Before an operation on an owned file: takes the entry lock and answers
/// whether this process still owns the file. The lock is held either way
/// until [`leave`].
pub fn enter(slot: u32) -> bool {
    let Some(e) = entry(slot) else {
        return true;
    };
    lock(&e[E_LOCK]);
    e[E_OWNER].load(Ordering::Acquire) == me()
}

/// Ends an operation begun by [`enter`].
/// Only a lock this process holds is released: a nested hand-over may have
/// released it already, and another process may hold it by now.
pub fn leave(slot: u32) {
    if let Some(e) = entry(slot) {
        let _ = e[E_LOCK].compare_exchange(me(), 0, Ordering::Release, Ordering::Relaxed);
    }
}

/// Whether this process owns the file of `slot` (true without a table).
pub fn owns(slot: u32) -> bool {
    entry(slot).is_none_or(|e| e[E_OWNER].load(Ordering::Acquire) == me())
}

/// Publishes the owner's logical size.
pub fn publish(slot: u32, size: u64) {
    if let Some(e) = entry(slot) {
        e[E_SIZE].store(size, Ordering::Release);
    }
}

/// Records which fd of the owner other processes can reach the file by.
pub fn set_fd(slot: u32, fd: c_int) {
    if let Some(e) = entry(slot) {
        if e[E_OWNER].load(Ordering::Acquire) == me() {
            e[E_FD].store(fd.max(0) as u64, Ordering::Relaxed);
        }
    }
}

/// Gives up ownership (the kernel size has been set to the logical size).
pub fn disown(slot: u32) {
    if let Some(e) = entry(slot) {
        let _ = e[E_OWNER].compare_exchange(me(), 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

/// This process closed its last fd of the file: unregisters it, freeing
/// the entry when nobody is left.
pub fn close(slot: u32) {
    let (Some(w), Some(e)) = (words(), entry(slot)) else {
        return;
    };
    let me = me();
    lock(&w[0]);
    let _ = e[E_OWNER].compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
    drop_user(e, me);
    unlock(&w[0]);
}

/// Removes `pid` from an entry's openers, freeing the entry if it is unused.
fn drop_user(e: &[AtomicU64], pid: u64) {
    for u in &e[E_USERS..] {
        if u.load(Ordering::Relaxed) == pid {
            u.store(0, Ordering::Relaxed);
        }
    }
    free_if_unused(e);
}

fn free_if_unused(e: &[AtomicU64]) {
    // A crowded entry is freed too once its recorded users are gone: the
    // table cannot know about the unrecorded ones (documented limit).
    let empty = e[E_USERS..].iter().all(|u| u.load(Ordering::Relaxed) == 0)
        && e[E_OWNER].load(Ordering::Relaxed) == 0;
    if empty {
        e[E_INO].store(0, Ordering::Release);
        e[E_DEV].store(0, Ordering::Relaxed);
    }
}

/// The child of `fork` inherited the parent's fds: it has the file open too.
pub fn add_user(slot: u32) {
    let (Some(w), Some(e)) = (words(), entry(slot)) else {
        return;
    };
    let me = me();
    lock(&w[0]);
    if e[E_INO].load(Ordering::Relaxed) != 0
        && !e[E_USERS..].iter().any(|u| u.load(Ordering::Relaxed) == me)
    {
        match e[E_USERS..].iter().find(|u| u.load(Ordering::Relaxed) == 0) {
            Some(u) => u.store(me, Ordering::Relaxed),
            None => {
                e[E_FLAGS].fetch_or(F_CROWDED, Ordering::Relaxed);
            }
        }
    }
    unlock(&w[0]);
}

/// A new process image under an old pid: drops what the old image
/// registered (it synced its files before `exec`).
fn forget_me() {
    let Some(w) = words() else { return };
    let me = me();
    lock(&w[0]);
    for s in 1..ENTRIES {
        let e = &w[s * ENTRY_WORDS..(s + 1) * ENTRY_WORDS];
        if e[E_INO].load(Ordering::Relaxed) == 0 {
            continue;
        }
        let _ = e[E_OWNER].compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
        let _ = e[E_LOCK].compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
        drop_user(e, me);
    }
    unlock(&w[0]);
}

/// The published logical size of `(dev, ino)` when another live process
/// owns it (its kernel size then holds a reservation).
pub fn foreign_size(dev: u64, ino: u64) -> Option<u64> {
    let w = words()?;
    let s = find(w, dev, ino)?;
    let e = entry(s)?;
    let owner = e[E_OWNER].load(Ordering::Acquire);
    if owner == 0 || owner == me() || !sys::alive(owner as c_int) {
        return None;
    }
    Some(e[E_SIZE].load(Ordering::Acquire))
}

/// Before this process starts another program (`exec`, spawns): takes
/// every file another live process owns to the kernel path, so a program
/// without the preload (a static binary, a child with `LD_PRELOAD`
/// removed) sees exact sizes too. The file is reached through the owner's
/// fd (`/proc/<owner>/fd/<n>`, same user), checked by device and inode;
/// a file that cannot be reached stays with its owner.
pub fn take_all() {
    let Some(w) = words() else { return };
    let me = me();
    lock(&w[0]);
    for s in 1..ENTRIES {
        let e = &w[s * ENTRY_WORDS..(s + 1) * ENTRY_WORDS];
        let owner = e[E_OWNER].load(Ordering::Acquire);
        if e[E_INO].load(Ordering::Relaxed) == 0 || owner == 0 || owner == me {
            continue;
        }
        let mut path = [0u8; 64];
        let prefix = b"/proc/";
        path[..prefix.len()].copy_from_slice(prefix);
        let mut n = prefix.len();
        n += crate::fmt::write_u64(&mut path[n..], owner);
        path[n..n + 4].copy_from_slice(b"/fd/");
        n += 4;
        crate::fmt::write_u64(&mut path[n..], e[E_FD].load(Ordering::Relaxed));
        // SAFETY: `path` is NUL-terminated (zeroed past the digits).
        let fd = unsafe {
            sys::openat(
                libc::AT_FDCWD,
                path.as_ptr().cast(),
                libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK,
                0,
            )
        };
        if fd < 0 {
            continue;
        }
        let same = sys::fstat(fd).is_some_and(|st| {
            st.st_dev == e[E_DEV].load(Ordering::Relaxed)
                && st.st_ino == e[E_INO].load(Ordering::Relaxed)
        });
        if same {
            take_away(e, fd);
        }
        sys::close(fd);
    }
    unlock(&w[0]);
}
