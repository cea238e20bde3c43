//! Raw system calls for the tier's own use.
//!
//! Everything the tier does for itself (mapping, resizing, reading `/proc`)
//! goes through `syscall(2)` directly: calling `open`, `mmap` or `ftruncate`
//! by name from inside this library would land in our own hooks, because the
//! preloaded library interposes those names for every caller, itself included.
//! Each wrapper returns the kernel's result with `-1`/`errno` on failure, as
//! glibc's `syscall()` reports it.

use libc::{c_char, c_int, c_long, c_void, off_t, size_t, ssize_t};

/// The calling thread's `errno`.
pub fn errno() -> c_int {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
pub fn set_errno(e: c_int) {
    // SAFETY: __errno_location always returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() = e }
}

/// Sets `errno` to `e` and returns -1, the libc failure convention.
pub fn fail<T: From<i8>>(e: c_int) -> T {
    set_errno(e);
    T::from(-1)
}

/// `openat(2)`.
///
/// # Safety
/// `path` must be a valid NUL-terminated string.
pub unsafe fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: libc::mode_t) -> c_int {
    // SAFETY: the caller guarantees `path`; the kernel validates the rest.
    unsafe { libc::syscall(libc::SYS_openat, dirfd, path, flags, mode as c_long) as c_int }
}

/// `close(2)`.
pub fn close(fd: c_int) -> c_int {
    // SAFETY: closing an fd number has no memory-safety effect on this process.
    unsafe { libc::syscall(libc::SYS_close, fd) as c_int }
}

/// `read(2)`.
///
/// # Safety
/// `buf` must be valid for `n` bytes of writes.
pub unsafe fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t {
    // SAFETY: the caller guarantees `buf`.
    unsafe { libc::syscall(libc::SYS_read, fd, buf, n) as ssize_t }
}

/// `write(2)`.
///
/// # Safety
/// `buf` must be valid for `n` bytes of reads.
pub unsafe fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t {
    // SAFETY: the caller guarantees `buf`.
    unsafe { libc::syscall(libc::SYS_write, fd, buf, n) as ssize_t }
}

/// `pread64(2)`.
///
/// # Safety
/// `buf` must be valid for `n` bytes of writes.
pub unsafe fn pread(fd: c_int, buf: *mut c_void, n: size_t, off: off_t) -> ssize_t {
    // SAFETY: the caller guarantees `buf`.
    unsafe { libc::syscall(libc::SYS_pread64, fd, buf, n, off) as ssize_t }
}

/// `pwrite64(2)`.
///
/// # Safety
/// `buf` must be valid for `n` bytes of reads.
pub unsafe fn pwrite(fd: c_int, buf: *const c_void, n: size_t, off: off_t) -> ssize_t {
    // SAFETY: the caller guarantees `buf`.
    unsafe { libc::syscall(libc::SYS_pwrite64, fd, buf, n, off) as ssize_t }
}

/// `lseek(2)`.
pub fn lseek(fd: c_int, off: off_t, whence: c_int) -> off_t {
    // SAFETY: no pointers are involved.
    unsafe { libc::syscall(libc::SYS_lseek, fd, off, whence) as off_t }
}

/// `ftruncate(2)`.
pub fn ftruncate(fd: c_int, len: off_t) -> c_int {
    // SAFETY: no pointers are involved.
    unsafe { libc::syscall(libc::SYS_ftruncate, fd, len) as c_int }
}

/// `fsync(2)` / `fdatasync(2)`.
pub fn fsync(fd: c_int, data_only: bool) -> c_int {
    let nr = if data_only {
        libc::SYS_fdatasync
    } else {
        libc::SYS_fsync
    };
    // SAFETY: no pointers are involved.
    unsafe { libc::syscall(nr, fd) as c_int }
}

/// `posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED)`: drops the file's clean
/// pages from the page cache.
pub fn drop_cached(fd: c_int) -> c_int {
    // SAFETY: no pointers are involved.
    unsafe {
        libc::syscall(
            libc::SYS_fadvise64,
            fd,
            0 as off_t,
            0 as off_t,
            libc::POSIX_FADV_DONTNEED,
        ) as c_int
    }
}

/// `fstat(2)` into a zeroed `stat`; `None` on failure (errno set).
pub fn fstat(fd: c_int) -> Option<libc::stat> {
    // SAFETY: all-zero bytes are a valid `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable `stat`.
    let r = unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st as *mut libc::stat) };
    (r == 0).then_some(st)
}

/// `newfstatat(2)`.
///
/// # Safety
/// `path` must be NUL-terminated and `st` writable.
pub unsafe fn fstatat(
    dirfd: c_int,
    path: *const c_char,
    st: *mut libc::stat,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller guarantees the pointers.
    unsafe { libc::syscall(libc::SYS_newfstatat, dirfd, path, st, flags) as c_int }
}

/// `statx(2)`.
///
/// # Safety
/// `path` must be NUL-terminated and `buf` writable.
pub unsafe fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: libc::c_uint,
    buf: *mut libc::statx,
) -> c_int {
    // SAFETY: the caller guarantees the pointers.
    unsafe { libc::syscall(libc::SYS_statx, dirfd, path, flags, mask, buf) as c_int }
}

/// `getcwd(2)` into `buf`; returns the length without the NUL, or `None`.
pub fn getcwd(buf: &mut [u8]) -> Option<usize> {
    // SAFETY: `buf` is writable for its length.
    let r = unsafe { libc::syscall(libc::SYS_getcwd, buf.as_mut_ptr(), buf.len()) };
    if r <= 0 {
        return None;
    }
    buf.iter().position(|&b| b == 0)
}

/// `readlink(2)` of a NUL-terminated path into `buf`; returns the length.
pub fn readlink(path: &[u8], buf: &mut [u8]) -> Option<usize> {
    if path.last() != Some(&0) {
        return None;
    }
    // SAFETY: `path` is NUL-terminated and `buf` is writable for its length.
    let r = unsafe {
        libc::syscall(
            libc::SYS_readlinkat,
            libc::AT_FDCWD,
            path.as_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
        )
    };
    (r > 0 && (r as usize) < buf.len()).then_some(r as usize)
}

/// `mmap(2)`; returns `MAP_FAILED` on failure.
pub fn mmap(len: usize, prot: c_int, flags: c_int, fd: c_int) -> *mut c_void {
    mmap_at(len, prot, flags, fd, 0)
}

/// `mmap(2)` of the file range starting at `off`; `MAP_FAILED` on failure.
pub fn mmap_at(len: usize, prot: c_int, flags: c_int, fd: c_int, off: off_t) -> *mut c_void {
    // SAFETY: a NULL hint never replaces an existing mapping; the kernel
    // picks a free range.
    unsafe {
        libc::syscall(
            libc::SYS_mmap,
            std::ptr::null_mut::<c_void>(),
            len,
            prot,
            flags,
            fd,
            off,
        ) as *mut c_void
    }
}

/// `mremap(2)` with `MREMAP_MAYMOVE`; returns `MAP_FAILED` on failure.
///
/// # Safety
/// `[addr, addr + old)` must be a mapping owned by the caller that nobody
/// else references.
pub unsafe fn mremap(addr: *mut c_void, old: usize, new: usize) -> *mut c_void {
    // SAFETY: the caller owns the mapping.
    unsafe { libc::syscall(libc::SYS_mremap, addr, old, new, libc::MREMAP_MAYMOVE) as *mut c_void }
}

/// `munmap(2)`.
///
/// # Safety
/// `[addr, addr + len)` must be a mapping owned by the caller that nobody
/// else references.
pub unsafe fn munmap(addr: *mut c_void, len: usize) -> c_int {
    // SAFETY: the caller owns the mapping.
    unsafe { libc::syscall(libc::SYS_munmap, addr, len) as c_int }
}

/// `msync(2)`.
///
/// # Safety
/// `[addr, addr + len)` must be mapped.
pub unsafe fn msync(addr: *mut c_void, len: usize, flags: c_int) -> c_int {
    // SAFETY: the caller guarantees the range.
    unsafe { libc::syscall(libc::SYS_msync, addr, len, flags) as c_int }
}

/// `madvise(2)`.
///
/// # Safety
/// `[addr, addr + len)` must be a mapping owned by the caller.
pub unsafe fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int {
    // SAFETY: the caller owns the range.
    unsafe { libc::syscall(libc::SYS_madvise, addr, len, advice) as c_int }
}

/// Sets the modification (and change) time of `fd` to now, leaving atime.
pub fn touch_mtime(fd: c_int) {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
    ];
    // SAFETY: a NULL path with AT_FDCWD-less fd targets `fd` itself; `times`
    // is a valid array of two timespecs.
    unsafe {
        libc::syscall(
            libc::SYS_utimensat,
            fd,
            std::ptr::null::<c_char>(),
            times.as_ptr(),
            0,
        );
    }
}

/// Whether process `pid` exists (`kill(pid, 0)`; `EPERM` means it does).
pub fn alive(pid: c_int) -> bool {
    // SAFETY: signal 0 checks existence only.
    let r = unsafe { libc::syscall(libc::SYS_kill, pid, 0) };
    r == 0 || errno() == libc::EPERM
}

/// `sched_yield(2)`.
pub fn yield_now() {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_sched_yield) };
}

/// The birth time of the file open on `fd` in ns (0 when unknown).
pub fn birth(fd: c_int) -> u64 {
    // SAFETY: all-zero bytes are a valid `statx`.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the path is an empty literal, `stx` is writable.
    let r = unsafe {
        statx(
            fd,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_BTIME,
            &mut stx,
        )
    };
    if r != 0 || stx.stx_mask & libc::STATX_BTIME == 0 {
        return 0;
    }
    (stx.stx_btime.tv_sec.max(0) as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(stx.stx_btime.tv_nsec))
}

/// `getpid(2)`.
pub fn getpid() -> c_int {
    // SAFETY: no arguments.
    unsafe { libc::syscall(libc::SYS_getpid) as c_int }
}

/// `futex(FUTEX_WAIT_PRIVATE)`.
pub fn futex_wait(word: &std::sync::atomic::AtomicU32, expected: u32) {
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// `futex(FUTEX_WAKE_PRIVATE)` waking one waiter.
pub fn futex_wake(word: &std::sync::atomic::AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// Opens the file behind `fd` again with `flags` (through
/// `/proc/self/fd/<fd>`, plus `O_CLOEXEC`): a new open file description,
/// e.g. writable when `fd` is not. -1 with errno on failure.
pub fn reopen(fd: c_int, flags: c_int) -> c_int {
    let mut buf = [0u8; 32];
    let p = proc_fd_path(fd, &mut buf);
    // SAFETY: `p` is NUL-terminated.
    unsafe {
        openat(
            libc::AT_FDCWD,
            p.as_ptr().cast(),
            flags | libc::O_CLOEXEC,
            0,
        )
    }
}

/// Formats `/proc/self/fd/<fd>` NUL-terminated into `buf`; returns the slice.
pub fn proc_fd_path(fd: c_int, buf: &mut [u8; 32]) -> &[u8] {
    let prefix = b"/proc/self/fd/";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut n = prefix.len();
    n += crate::fmt::write_u64(&mut buf[n..], fd.max(0) as u64);
    buf[n] = 0;
    &buf[..=n]
}
