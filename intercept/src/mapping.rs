//! All mapping code: mapping a tier file `MAP_SHARED`, growing it, copying
//! in and out, shrinking the kernel file back to the logical size, unmapping.
//!
//! The invariant that keeps this sound: bytes `[0, ksize)` of the mapping are
//! backed by the file (touching past the kernel's EOF would raise `SIGBUS`),
//! `size <= ksize <= cap`, and bytes `[size, ksize)` are zero, so growing the
//! logical size never exposes stale data. Every access is bounds-checked
//! against `size`/`ksize` under the tier lock.

use libc::c_int;

use ephemera_control_block::Slot;

use crate::control;
use crate::inode::{Inode, Place, HANDOVERS, MEM_INODES};
use crate::sys;

const PAGE: u64 = 4096;
/// Smallest address range reserved for a file.
const MIN_CAP: u64 = 256 << 10;
/// `MADV_POPULATE_WRITE` (Linux 5.14; older kernels refuse it, harmlessly).
const POPULATE_WRITE: libc::c_int = 23;
/// Smallest step the kernel size grows by.
const MIN_GROW: u64 = 64 << 10;

fn round_page(v: u64) -> Option<u64> {
    v.checked_add(PAGE - 1).map(|v| v & !(PAGE - 1))
}

/// Maps the file open on `fd` (access mode `accmode`, kernel size `size`)
/// into `inode`. A file not opened `O_RDWR` is reopened read-write through
/// `/proc/self/fd` just for the `mmap` call; if that is refused, a readable
/// fd gets a read-only mapping. On failure the inode stays on the kernel path.
pub fn map(inode: &mut Inode, fd: c_int, accmode: c_int, size: u64) -> Result<(), c_int> {
    let cap = round_page(size.max(MIN_CAP)).ok_or(libc::EFBIG)?;
    let cap = usize::try_from(cap).map_err(|_| libc::EFBIG)?;
    let (map_fd, writable, temp) = if accmode == libc::O_RDWR {
        (fd, true, false)
    } else {
        let rw = sys::reopen(fd, libc::O_RDWR);
        if rw >= 0 {
            (rw, true, true)
        } else if accmode == libc::O_RDONLY {
            (fd, false, false)
        } else {
            return Err(sys::errno());
        }
    };
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let addr = sys::mmap(cap, prot, libc::MAP_SHARED, map_fd);
    let err = sys::errno();
    if temp {
        sys::close(map_fd);
    }
    if addr == libc::MAP_FAILED {
        return Err(err);
    }
    inode.base = addr as usize;
    inode.cap = cap;
    inode.ksize = 0;
    set_ksize(inode, size);
    inode.size = size;
    inode.writable = writable;
    inode.dirty = false;
    inode.handover_pending = false;
    inode.place = Place::Memory;
    MEM_INODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    control::add(Slot::FilesMapped, 1);
    crate::trace::event("map", [inode.ino, size, cap as u64, fd as u64]);
    Ok(())
}

/// Sets the kernel size we track, keeping the `MappedBytes` gauge (the sum
/// of file-backed bytes under our mappings) in step.
fn set_ksize(inode: &mut Inode, new: u64) {
    if new > inode.ksize {
        control::add(Slot::MappedBytes, new - inode.ksize);
    } else {
        control::sub(Slot::MappedBytes, inode.ksize - new);
    }
    inode.ksize = new;
}

/// Makes `[0, end)` touchable: grows the reserved range (`mremap`) and the
/// kernel file (`ftruncate` through the writable `fd`) when needed, ahead
/// (doubling) by at most `room` bytes, so that writes inside the reserved
/// size never take the tier past its budget.
pub fn reserve(inode: &mut Inode, end: u64, fd: c_int, room: u64) -> Result<(), c_int> {
    if end <= inode.ksize {
        return Ok(());
    }
    if !inode.writable {
        return Err(libc::EBADF);
    }
    let ahead = inode
        .ksize
        .saturating_mul(2)
        .max(MIN_GROW)
        .min(inode.ksize.saturating_add(room));
    let want = end.max(ahead);
    let want = round_page(want).ok_or(libc::EFBIG)?;
    if want > i64::MAX as u64 {
        return Err(libc::EFBIG);
    }
    if want > inode.cap as u64 {
        let new_cap = usize::try_from(want.max((inode.cap as u64).saturating_mul(2)))
            .map_err(|_| libc::EFBIG)?;
        // SAFETY: the mapping belongs to this inode and is only referenced
        // under the tier lock, which we hold; nobody keeps pointers into it.
        let addr = unsafe { sys::mremap(inode.base as *mut libc::c_void, inode.cap, new_cap) };
        if addr == libc::MAP_FAILED {
            return Err(sys::errno());
        }
        inode.base = addr as usize;
        inode.cap = new_cap;
    }
    let target = want.min(inode.cap as u64);
    if sys::ftruncate(fd, target as i64) != 0 {
        return Err(sys::errno());
    }
    set_ksize(inode, target);
    crate::trace::event("grow", [inode.ino, inode.size, target, fd as u64]);
    Ok(())
}

/// Copies up to `n` bytes at `off` out of the file into `buf`; returns the
/// count (0 at or past EOF).
///
/// # Safety
/// `buf` must be valid for `n` bytes of writes.
pub unsafe fn copy_out(inode: &Inode, off: u64, buf: *mut u8, n: usize) -> usize {
    if off >= inode.size {
        return 0;
    }
    let k = ((inode.size - off).min(n as u64)) as usize;
    // SAFETY: `off + k <= size <= ksize <= cap`, so the source lies inside
    // the file-backed part of our mapping; the caller guarantees `buf`.
    unsafe { std::ptr::copy_nonoverlapping((inode.base as *const u8).add(off as usize), buf, k) };
    k
}

/// Copies `n` bytes from `buf` into the file at `off`, which [`reserve`] has
/// made touchable; extends the logical size.
///
/// # Safety
/// `buf` must be valid for `n` bytes of reads and `off + n <= ksize`.
pub unsafe fn copy_in(inode: &mut Inode, off: u64, buf: *const u8, n: usize) {
    debug_assert!(off + n as u64 <= inode.ksize);
    // SAFETY: the caller reserved `[off, off + n)` inside the file-backed
    // part of our writable mapping; the caller guarantees `buf`.
    unsafe { std::ptr::copy_nonoverlapping(buf, (inode.base as *mut u8).add(off as usize), n) };
    inode.size = inode.size.max(off + n as u64);
    inode.dirty = true;
}

/// Writes `n` bytes at `off` that reach past the kernel size with
/// `pwrite(2)` through the writable `fd` (every such write, small ones
/// too: with a 16 KiB threshold the many-small-files shape ran 34x tmpfs,
/// with none 4x; a small append costs what `write(2)` costs elsewhere): the kernel puts them in the page
/// cache and extends the file to exactly their end, so the file grows
/// with no reservation and no page faults. A freshly extended `MAP_SHARED`
/// page of an ext4 file costs a fault and `ext4_page_mkwrite` each, which
/// made streaming appends through the mapping ~2x slower than `write(2)`.
/// The mapping sees the bytes (same page cache) once it covers them.
///
/// # Safety
/// `buf` must be valid for `n` bytes of reads.
pub unsafe fn extend(
    inode: &mut Inode,
    fd: c_int,
    off: u64,
    buf: *const u8,
    n: usize,
) -> Result<(), c_int> {
    let end = off + n as u64;
    if !inode.writable {
        return Err(libc::EBADF);
    }
    if end > inode.cap as u64 {
        let want = round_page(end.max((inode.cap as u64).saturating_mul(2))).ok_or(libc::EFBIG)?;
        let new_cap = usize::try_from(want).map_err(|_| libc::EFBIG)?;
        // SAFETY: the mapping belongs to this inode and is only referenced
        // under the tier lock, which we hold.
        let addr = unsafe { sys::mremap(inode.base as *mut libc::c_void, inode.cap, new_cap) };
        if addr == libc::MAP_FAILED {
            return Err(sys::errno());
        }
        inode.base = addr as usize;
        inode.cap = new_cap;
    }
    let mut done = 0usize;
    while done < n {
        // SAFETY: the caller guarantees `buf` for `n` bytes.
        let r = unsafe {
            sys::pwrite(
                fd,
                buf.add(done).cast(),
                n - done,
                (off + done as u64) as libc::off_t,
            )
        };
        if r <= 0 {
            return Err(if r < 0 { sys::errno() } else { libc::EIO });
        }
        done += r as usize;
    }
    // Map the new pages now, in one call (MADV_POPULATE_WRITE), rather than
    // one fault each when they are next read or rewritten through the
    // mapping: sequential 1 MiB rewrites measured 0.67x disk without it.
    let from = inode.ksize & !(PAGE - 1);
    if end > from {
        // SAFETY: `[from, end)` lies in our mapping (cap >= end) and in the
        // file (its size is now at least `end`); populating changes no data.
        unsafe {
            sys::madvise(
                (inode.base + from as usize) as *mut libc::c_void,
                (end - from) as usize,
                POPULATE_WRITE,
            )
        };
    }
    set_ksize(inode, inode.ksize.max(end));
    inode.size = inode.size.max(end);
    crate::trace::event("extend", [inode.ino, inode.size, inode.ksize, fd as u64]);
    Ok(())
}

/// Sets the logical size to `len` (`ftruncate` semantics), keeping the bytes
/// past it zero. `fd` is a writable fd of the file; `room` as for [`reserve`].
pub fn set_len(inode: &mut Inode, len: u64, fd: c_int, room: u64) -> Result<(), c_int> {
    if len > inode.size {
        reserve(inode, len, fd, room)?;
    } else if len < inode.size {
        // Cut the tail off in the kernel too (truncate down, then back up to
        // the reserved size): the bytes past `len` become a hole that reads
        // as zeros, exactly as after the kernel's own ftruncate.
        if sys::ftruncate(fd, len as i64) != 0 {
            return Err(sys::errno());
        }
        if sys::ftruncate(fd, inode.ksize as i64) != 0 {
            set_ksize(inode, len);
        }
    }
    inode.size = len;
    inode.dirty = true;
    Ok(())
}

/// Brings the kernel file size down to the logical size and bumps mtime if
/// the file was written. `fd` must be a writable fd of the file (or -1 when
/// there is none, in which case the inode is reopened write-only through
/// `/proc/self/fd/<any_fd>`).
pub fn sync_size(inode: &mut Inode, fd: c_int, any_fd: c_int) -> Result<(), c_int> {
    if inode.ksize == inode.size && !inode.dirty {
        return Ok(());
    }
    let (wfd, temp) = if fd >= 0 {
        (fd, false)
    } else {
        let w = sys::reopen(any_fd, libc::O_WRONLY);
        if w < 0 {
            return Err(sys::errno());
        }
        (w, true)
    };
    let mut res = Ok(());
    if inode.ksize != inode.size {
        if sys::ftruncate(wfd, inode.size as i64) == 0 {
            set_ksize(inode, inode.size);
        } else {
            res = Err(sys::errno());
        }
    }
    if inode.dirty {
        sys::touch_mtime(wfd);
        inode.dirty = false;
    }
    if temp {
        sys::close(wfd);
    }
    crate::trace::event("sync", [inode.ino, inode.size, inode.ksize, wfd as u64]);
    res
}

/// Unmaps an inode's data and puts it on the kernel path. The size must
/// already be synced.
pub fn unmap(inode: &mut Inode) {
    if inode.place != Place::Memory {
        return;
    }
    crate::trace::event(
        "unmap",
        [inode.ino, inode.size, inode.ksize, u64::from(inode.ofds)],
    );
    // SAFETY: the mapping belongs to this inode, and we hold the tier lock so
    // no copy is in flight; nothing keeps pointers into it afterwards.
    unsafe { sys::munmap(inode.base as *mut libc::c_void, inode.cap) };
    set_ksize(inode, 0);
    HANDOVERS.fetch_add(1, std::sync::atomic::Ordering::Release);
    MEM_INODES.fetch_sub(1, std::sync::atomic::Ordering::Release);
    inode.base = 0;
    inode.cap = 0;
    inode.place = Place::Kernel;
}

/// A detached mapping: the range of a closed file removed from the tables,
/// to be written back and released outside the lock.
pub struct Detached {
    base: usize,
    cap: usize,
    len: usize,
}

/// Takes the mapping away from a closed (retained) inode, leaving it on the
/// kernel path; release it with [`release`].
pub fn detach(inode: &mut Inode) -> Option<Detached> {
    if inode.place != Place::Memory {
        return None;
    }
    crate::trace::event(
        "detach",
        [inode.ino, inode.size, inode.ksize, u64::from(inode.ofds)],
    );
    let d = Detached {
        base: inode.base,
        cap: inode.cap,
        len: inode.ksize as usize,
    };
    set_ksize(inode, 0);
    HANDOVERS.fetch_add(1, std::sync::atomic::Ordering::Release);
    MEM_INODES.fetch_sub(1, std::sync::atomic::Ordering::Release);
    inode.base = 0;
    inode.cap = 0;
    inode.place = Place::Kernel;
    Some(d)
}

/// Writes a detached mapping back, asks the kernel to reclaim its pages
/// (`MADV_PAGEOUT`) and unmaps it.
pub fn release(d: Detached) {
    // SAFETY: the range was detached from the tables, so nothing else
    // refers to it; `[base, base + len)` is file-backed (len = kernel size).
    unsafe {
        if d.len > 0 {
            sys::msync(d.base as *mut libc::c_void, d.len, libc::MS_SYNC);
            sys::madvise(d.base as *mut libc::c_void, d.len, libc::MADV_PAGEOUT);
        }
        sys::munmap(d.base as *mut libc::c_void, d.cap);
    }
}

/// Flushes the mapped bytes to disk (`msync(MS_SYNC)`).
pub fn flush(inode: &Inode) {
    if inode.place == Place::Memory && inode.ksize > 0 {
        // SAFETY: `[base, base + ksize)` is inside our live mapping.
        unsafe {
            sys::msync(
                inode.base as *mut libc::c_void,
                inode.ksize as usize,
                libc::MS_SYNC,
            )
        };
    }
}

/// Writes the mapped bytes back and asks the kernel to reclaim their pages
/// (`MADV_PAGEOUT`), keeping the mapping: touched again, they fault back in
/// from the file.
pub fn page_out(inode: &Inode) {
    if inode.place == Place::Memory && inode.ksize > 0 {
        flush(inode);
        // SAFETY: `[base, base + ksize)` is inside our live mapping; the
        // advice frees no memory we refer to, only clean page-cache pages.
        unsafe {
            sys::madvise(
                inode.base as *mut libc::c_void,
                inode.ksize as usize,
                libc::MADV_PAGEOUT,
            )
        };
    }
}

/// `O_TRUNC` served in memory: the logical size becomes 0 and the old bytes
/// are zeroed in place (keeping the invariant that bytes past the logical
/// size are zero), instead of the kernel cutting the file to 0. On ext4 a
/// truncation to 0 followed by writes and a close forces the new blocks to
/// be allocated and written back at close (`auto_da_alloc`), which made the
/// per-frame rewrite of FunctionBench's video shape slower than `write(2)`;
/// the pages, already in memory, are about to be rewritten anyway.
pub fn clear(inode: &mut Inode) {
    if inode.place != Place::Memory || !inode.writable {
        return;
    }
    // SAFETY: `[0, size)` lies inside the file-backed part of our writable
    // mapping (`size <= ksize`), and we hold the tier lock.
    unsafe { std::ptr::write_bytes(inode.base as *mut u8, 0, inode.size as usize) };
    inode.size = 0;
    inode.dirty = true;
}
