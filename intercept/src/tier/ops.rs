//! Serving reads, writes, seeks, truncation and sync of files in memory.
//!
//! Each operation first checks (under the file's shared entry lock, held to
//! the end of the operation) that this process still owns the file: a
//! second process that opened it has taken it to the kernel path, and then
//! this process follows (see `crate::shared`).

use libc::{c_int, c_void};

use ephemera_control_block::Slot;

use super::Tier;
use crate::control;
use crate::fdtable::Ofd;
use crate::inode::Place;
use crate::mapping;
use crate::shared;
use crate::sys::{self, fail};

/// The kernel's cap on one read or write.
const MAX_RW: usize = 0x7fff_f000;

impl Tier {
    /// Description and inode of `fd` when the inode is served from memory.
    /// For a shared file, enters its entry ([`Tier::leave`] ends it); when
    /// another process took the file away, follows it to the kernel path.
    fn memory_fd(&mut self, fd: c_int) -> Option<(u32, Ofd)> {
        let (id, o) = self.ofd(fd)?;
        let inode = self.inodes.get(o.inode);
        if inode.place != Place::Memory {
            return None;
        }
        let slot = inode.slot;
        if slot != 0 {
            self.entered = slot;
            if !shared::enter(slot) {
                self.lost(o.inode);
                return None;
            }
        }
        let inode = self.inodes.get(o.inode);
        if inode.handover_pending {
            // Evicted by the adapter (written back and paged out already).
            self.hand_to_kernel(o.inode);
            return None;
        }
        Some((id, o))
    }

    /// Ends the shared-entry section [`Tier::memory_fd`] began, if any.
    fn leave(&mut self) {
        if self.entered != 0 {
            shared::leave(std::mem::replace(&mut self.entered, 0));
        }
    }

    /// Runs one operation, then ends the shared-entry section it began.
    fn op<R>(&mut self, f: impl FnOnce(&mut Tier) -> R) -> R {
        let r = f(self);
        self.leave();
        r
    }

    /// `read`/`pread` from memory; `None`: the kernel serves it.
    ///
    /// # Safety
    /// `buf` must be valid for `n` bytes of writes.
    pub unsafe fn read(
        &mut self,
        fd: c_int,
        buf: *mut c_void,
        n: usize,
        at: Option<i64>,
    ) -> Option<isize> {
        // SAFETY: the caller's contract.
        self.op(|t| unsafe { t.read_in(fd, buf, n, at) })
    }

    /// `write`/`pwrite` into memory; `None`: the kernel serves it.
    ///
    /// # Safety
    /// `buf` must be valid for `n` bytes of reads.
    pub unsafe fn write(
        &mut self,
        fd: c_int,
        buf: *const c_void,
        n: usize,
        at: Option<i64>,
    ) -> Option<isize> {
        // SAFETY: the caller's contract.
        self.op(|t| unsafe { t.write_in(fd, buf, n, at) })
    }

    /// `lseek` in memory.
    pub fn seek(&mut self, fd: c_int, off: i64, whence: c_int) -> Option<i64> {
        self.op(|t| t.seek_in(fd, off, whence))
    }

    /// `ftruncate` in memory.
    pub fn truncate(&mut self, fd: c_int, len: i64) -> Option<c_int> {
        self.op(|t| t.truncate_in(fd, len))
    }

    /// `fsync`/`fdatasync`: syncs the size to the kernel.
    pub fn sync(&mut self, fd: c_int) {
        self.op(|t| t.sync_in(fd))
    }

    /// `read`/`pread` from memory.
    ///
    /// # Safety
    /// `buf` must be valid for `n` bytes of writes.
    unsafe fn read_in(
        &mut self,
        fd: c_int,
        buf: *mut c_void,
        n: usize,
        at: Option<i64>,
    ) -> Option<isize> {
        let (id, o) = self.memory_fd(fd)?;
        // The kernel checks a negative position before the access mode.
        let off = match at {
            Some(p) if p < 0 => return Some(fail(libc::EINVAL)),
            Some(p) => p as u64,
            None => o.offset,
        };
        if !o.readable() {
            return Some(fail(libc::EBADF));
        }
        self.tick += 1;
        let inode = self.inodes.get(o.inode);
        inode.last_use = self.tick;
        // SAFETY: the caller guarantees `buf` for `n` bytes.
        let k = unsafe { mapping::copy_out(inode, off, buf.cast(), n.min(MAX_RW)) };
        if at.is_none() {
            if let Some(d) = self.ofds.get(id) {
                d.offset = off + k as u64;
            }
        }
        control::add(Slot::Reads, 1);
        control::add(Slot::BytesRead, k as u64);
        Some(k as isize)
    }

    /// `write`/`pwrite` into memory. Falls back to the kernel (returning
    /// `None`) when the mapping cannot grow.
    ///
    /// # Safety
    /// `buf` must be valid for `n` bytes of reads.
    unsafe fn write_in(
        &mut self,
        fd: c_int,
        buf: *const c_void,
        n: usize,
        at: Option<i64>,
    ) -> Option<isize> {
        let (id, o) = self.memory_fd(fd)?;
        if at.is_some_and(|p| p < 0) {
            return Some(fail(libc::EINVAL));
        }
        if !o.writable() {
            return Some(fail(libc::EBADF));
        }
        let n = n.min(MAX_RW);
        let inode = self.inodes.get(o.inode);
        let off = match at {
            Some(p) if p < 0 => return Some(fail(libc::EINVAL)),
            _ if o.flags & libc::O_APPEND != 0 => inode.size,
            Some(p) => p as u64,
            None => o.offset,
        };
        if n == 0 {
            return Some(0);
        }
        let end = match off.checked_add(n as u64) {
            Some(e) if e <= i64::MAX as u64 => e,
            _ => return Some(fail(libc::EFBIG)),
        };
        let room = crate::adapter::room();
        if end.saturating_sub(inode.ksize) > room {
            // Over budget: the kernel takes the file over, and the memory
            // with it. Its pages, dirtied through the mapping, are written
            // back and dropped: our page faults made them large folios, and
            // each kernel `write` into one walks all of its buffers (ext4,
            // 6.18: random 8 KiB rewrites of a 128 MiB file took 4-7x as long
            // as on a file made by `write`). The kernel recreates what it
            // needs as small folios; the disk copy is current.
            self.fallback_inode(o.inode);
            sys::fsync(fd, true);
            sys::drop_cached(fd);
            return None;
        }
        if end > inode.ksize {
            // A write past the kernel size: `pwrite(2)` it (see
            // `mapping::extend`), no reservation and no page faults.
            // SAFETY: the caller guarantees `buf` for `n` bytes.
            if unsafe { mapping::extend(inode, fd, off, buf.cast(), n) }.is_err() {
                self.fallback_inode(o.inode);
                return None;
            }
        } else {
            if mapping::reserve(inode, end, fd, room).is_err() {
                self.fallback_inode(o.inode);
                return None;
            }
            // SAFETY: `reserve` made `[off, end)` file-backed; the caller
            // guarantees `buf`.
            unsafe { mapping::copy_in(inode, off, buf.cast(), n) };
        }
        self.tick += 1;
        let inode = self.inodes.get(o.inode);
        inode.last_use = self.tick;
        let size = inode.size;
        shared::publish(inode.slot, size);
        if at.is_none() {
            if let Some(d) = self.ofds.get(id) {
                d.offset = end;
            }
        }
        control::add(Slot::Writes, 1);
        control::add(Slot::BytesWritten, n as u64);
        control::max(Slot::LargestFile, size);
        Some(n as isize)
    }

    /// `lseek` in memory.
    fn seek_in(&mut self, fd: c_int, off: i64, whence: c_int) -> Option<i64> {
        let (id, o) = self.memory_fd(fd)?;
        let size = self.inodes.get(o.inode).size as i64;
        let new = match whence {
            libc::SEEK_SET => Some(off),
            libc::SEEK_CUR => (o.offset as i64).checked_add(off),
            libc::SEEK_END => size.checked_add(off),
            libc::SEEK_DATA | libc::SEEK_HOLE => {
                // Holes are the kernel's to report: bring its size to ours
                // and ask it (written pages in the page cache count as data).
                let wfd = if o.writable() {
                    fd
                } else {
                    self.writable_fd(o.inode)
                };
                let inode = self.inodes.get(o.inode);
                if mapping::sync_size(inode, wfd, fd).is_err() {
                    self.fallback_inode(o.inode);
                    return None;
                }
                let r = sys::lseek(fd, off, whence);
                if r < 0 {
                    return Some(-1);
                }
                Some(r)
            }
            _ => return Some(fail(libc::EINVAL)),
        };
        let new = match new {
            None => return Some(fail(libc::EOVERFLOW)),
            Some(v) if v < 0 => return Some(fail(libc::EINVAL)),
            Some(v) => v,
        };
        if let Some(d) = self.ofds.get(id) {
            d.offset = new as u64;
        }
        Some(new)
    }

    /// `ftruncate` in memory.
    fn truncate_in(&mut self, fd: c_int, len: i64) -> Option<c_int> {
        let (_, o) = self.memory_fd(fd)?;
        if len < 0 || !o.writable() {
            return Some(fail(libc::EINVAL));
        }
        let inode = self.inodes.get(o.inode);
        if (len as u64) < inode.size {
            // Published first: a crash mid-truncation leaves the shorter size.
            shared::publish(inode.slot, len as u64);
        }
        let room = crate::adapter::room();
        if (len as u64).saturating_sub(inode.ksize) > room
            || mapping::set_len(inode, len as u64, fd, room).is_err()
        {
            self.fallback_inode(o.inode);
            return None;
        }
        shared::publish(self.inodes.get(o.inode).slot, len as u64);
        control::max(Slot::LargestFile, len as u64);
        Some(0)
    }

    /// `fsync`/`fdatasync`: syncs the size to the kernel.
    fn sync_in(&mut self, fd: c_int) {
        let Some((_, o)) = self.memory_fd(fd) else {
            return;
        };
        let wfd = if o.writable() {
            fd
        } else {
            self.writable_fd(o.inode)
        };
        // Coherent (the kernel size is the logical size) but not forced to
        // disk: see `hooks::io::fsync`.
        let inode = self.inodes.get(o.inode);
        let _ = mapping::sync_size(inode, wfd, fd);
    }
}
