//! The tier's state and its operations: registering fds of tier files,
//! serving reads/writes/seeks from memory, syncing logical sizes to the
//! kernel and falling back to the kernel path.
//!
//! Every operation runs under the one tier lock ([`lock`]). Operations that
//! return `Option` answer `None` when the fd is not served from memory: the
//! hook then calls the real libc function.

use libc::{c_int, c_void};

use ephemera_control_block::{Mode, Slot};

use crate::control;
use crate::fdtable::{ofd_of, set_ofd, trackable, Ofd, OfdTable};
use crate::inode::{InodeTable, Place};
use crate::lock::{Guard, Locked};
use crate::mapping;
use crate::sys::{self, fail};

/// The kernel's cap on one read or write.
const MAX_RW: usize = 0x7fff_f000;

/// All tier state of this process.
pub struct Tier {
    /// Open file descriptions of tracked fds.
    ofds: OfdTable,
    /// Tracked inodes.
    inodes: InodeTable,
    /// Highest fd ever tracked (bounds fd scans).
    max_fd: c_int,
    /// Access clock for LRU order.
    tick: u64,
}

/// Retained files are dropped when fewer inode slots than this are free.
const MIN_FREE_INODES: usize = 256;

static STATE: Locked<Tier> = Locked::new(Tier {
    ofds: OfdTable::new(),
    inodes: InodeTable::new(),
    max_fd: -1,
    tick: 0,
});

/// Takes the tier lock.
pub fn lock() -> Guard<'static, Tier> {
    STATE.lock()
}

/// The lock itself, for the fork hook.
pub fn state() -> &'static Locked<Tier> {
    &STATE
}

/// Whether a newly opened file should be mapped, given its open flags and size.
pub fn wants_memory(flags: c_int, size: u64) -> bool {
    if flags & (libc::O_APPEND | libc::O_SYNC | libc::O_DSYNC) != 0
        || flags & libc::O_TMPFILE == libc::O_TMPFILE
    {
        // Appends from several processes must meet at the kernel's EOF, an
        // O_TMPFILE may be linked into the tree at any time, and O_(D)SYNC
        // writes must be durable when they return: all stay on the kernel path.
        return false;
    }
    match control::mode() {
        Mode::Disk => false,
        Mode::Memory => true,
        Mode::Adaptive => crate::adapter::fits(size) || make_room(size),
    }
}

/// Evicts closed (retained) files, least recently used first, until a file
/// of `size` bytes fits the budget; false if it still does not.
fn make_room(size: u64) -> bool {
    loop {
        let detached = lock().evict_retained();
        match detached {
            Some(d) => mapping::release(d),
            None => return false,
        }
        if crate::adapter::fits(size) {
            return true;
        }
    }
}

impl Tier {
    /// Copy of the description of `fd` and its id, if tracked.
    fn ofd(&mut self, fd: c_int) -> Option<(u32, Ofd)> {
        let id = ofd_of(fd);
        if id == 0 {
            return None;
        }
        self.ofds.get(id).map(|o| (id, *o))
    }

    /// Description and inode of `fd` when the inode is served from memory.
    fn memory_fd(&mut self, fd: c_int) -> Option<(u32, Ofd)> {
        let (id, o) = self.ofd(fd)?;
        let inode = self.inodes.get(o.inode);
        if inode.place != Place::Memory {
            return None;
        }
        if inode.handover_pending {
            // Evicted by the adapter (written back and paged out already).
            self.hand_to_kernel(o.inode);
            return None;
        }
        Some((id, o))
    }

    /// Starts tracking a freshly opened fd of a regular tier file.
    pub fn register(&mut self, fd: c_int, flags: c_int, st: &libc::stat, memory: bool) {
        control::add(Slot::Opens, 1);
        control::max(Slot::LargestFile, st.st_size.max(0) as u64);
        self.track(fd, flags, st, memory);
    }

    /// Tracks an fd inherited from the parent process on the kernel path, so
    /// the file is not mapped while the kernel fd can change it.
    pub fn adopt(&mut self, fd: c_int, flags: c_int, st: &libc::stat) {
        self.track(fd, flags, st, false);
    }

    fn track(&mut self, fd: c_int, flags: c_int, st: &libc::stat, memory: bool) {
        let (dev, ino, size) = (st.st_dev, st.st_ino, st.st_size.max(0) as u64);
        if ofd_of(fd) != 0 {
            // A stale entry: the fd was closed behind our back and reused.
            self.untrack(fd, false);
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let mut existing = self.inodes.find(dev, ino);
        if let Some(i) = existing {
            let inode = self.inodes.get(i);
            if inode.retained() {
                let reusable = memory
                    && inode.closed_as == crate::inode::identity(st)
                    && (inode.writable || !writable);
                if !reusable {
                    // Changed since we closed it (or not wanted in memory):
                    // the kernel's copy is the truth; drop ours.
                    mapping::unmap(inode);
                    self.inodes.free(i);
                    existing = None;
                }
            }
        }
        if !trackable(fd) {
            if let Some(i) = existing {
                self.fallback_inode(i);
            }
            return;
        }
        let (idx, fresh) = match existing {
            Some(i) => (i, false),
            None => {
                if self.inodes.free_slots() < MIN_FREE_INODES {
                    self.drop_lru_retained();
                }
                match self.inodes.alloc(dev, ino, size) {
                    Some(i) => (i, true),
                    None => return,
                }
            }
        };
        let inode = self.inodes.get(idx);
        if fresh && memory {
            if mapping::map(inode, fd, flags & libc::O_ACCMODE, size).is_err() {
                control::add(Slot::Fallbacks, 1);
            }
        } else if inode.place == Place::Memory && (!memory || (writable && !inode.writable)) {
            self.fallback_inode(idx);
        }
        let Some(id) = self.ofds.alloc(idx, flags) else {
            if self.inodes.get(idx).ofds == 0 {
                self.fallback_inode(idx);
            }
            return;
        };
        self.tick += 1;
        let inode = self.inodes.get(idx);
        inode.ofds += 1;
        crate::trace::event(
            "track",
            [
                inode.ino,
                fd as u64,
                u64::from(inode.ofds),
                (inode.place == Place::Memory) as u64,
            ],
        );
        inode.last_use = self.tick;
        set_ofd(fd, id);
        self.max_fd = self.max_fd.max(fd);
    }

    /// Unmaps the least recently used retained file (to free a table slot).
    fn drop_lru_retained(&mut self) {
        if let Some(i) = self.inodes.lru(self.inodes.retained()) {
            mapping::unmap(self.inodes.get(i));
            self.inodes.free(i);
        }
    }

    /// Makes `new` (just returned by a successful dup) share `old`'s description.
    pub fn dup_to(&mut self, old: c_int, new: c_int) {
        if ofd_of(new) != 0 {
            self.untrack(new, false);
        }
        let Some((id, o)) = self.ofd(old) else {
            return;
        };
        if !trackable(new) {
            self.fallback_inode(o.inode);
            return;
        }
        if let Some(d) = self.ofds.get(id) {
            d.refs += 1;
        }
        set_ofd(new, id);
        self.max_fd = self.max_fd.max(new);
    }

    /// Forgets `fd` (about to be closed, or already gone when `!valid`). When
    /// it was the last fd of an inode in memory, syncs the size through it;
    /// the mapping is retained for a reopen if the budget allows.
    pub fn untrack(&mut self, fd: c_int, valid: bool) {
        let Some((id, o)) = self.ofd(fd) else {
            set_ofd(fd, 0);
            return;
        };
        set_ofd(fd, 0);
        let Some(d) = self.ofds.get(id) else { return };
        d.refs -= 1;
        if d.refs > 0 {
            return;
        }
        self.ofds.free(id);
        let inode = self.inodes.get(o.inode);
        inode.ofds -= 1;
        crate::trace::event(
            "lastclose",
            [inode.ino, inode.size, u64::from(inode.ofds), fd as u64],
        );
        if inode.ofds > 0 {
            return;
        }
        if inode.place == Place::Memory && valid {
            let wfd = if o.writable() { fd } else { -1 };
            let synced = mapping::sync_size(inode, wfd, fd).is_ok();
            if synced && crate::adapter::may_retain() {
                if let Some(st) = sys::fstat(fd) {
                    inode.closed_as = crate::inode::identity(&st);
                    return;
                }
            }
        }
        mapping::unmap(inode);
        self.inodes.free(o.inode);
    }

    /// Hands inode `idx` to the kernel: every fd's offset is written to the
    /// kernel, the kernel size set to the logical size, the mapping dropped.
    /// A retained inode (no fds) is simply dropped.
    pub fn fallback_inode(&mut self, idx: usize) {
        if self.hand_to_kernel(idx) {
            control::add(Slot::Fallbacks, 1);
        }
    }

    /// [`Tier::fallback_inode`] without counting; true if a mapping of an
    /// open file was handed over.
    fn hand_to_kernel(&mut self, idx: usize) -> bool {
        let inode = self.inodes.get(idx);
        crate::trace::event(
            "handover",
            [inode.ino, inode.size, inode.ksize, u64::from(inode.ofds)],
        );
        if inode.ofds == 0 {
            mapping::unmap(inode);
            self.inodes.free(idx);
            return false;
        }
        if inode.place != Place::Memory {
            return false;
        }
        let (mut wfd, mut any) = (-1, -1);
        for fd in 0..=self.max_fd {
            let id = ofd_of(fd);
            if id == 0 {
                continue;
            }
            let Some(o) = self.ofds.get(id).copied() else {
                continue;
            };
            if o.inode != idx {
                continue;
            }
            sys::lseek(fd, o.offset as i64, libc::SEEK_SET);
            any = fd;
            if o.writable() {
                wfd = fd;
            }
        }
        let inode = self.inodes.get(idx);
        if any >= 0 {
            let _ = mapping::sync_size(inode, wfd, any);
        }
        mapping::unmap(inode);
        true
    }

    /// Evicts the least recently used retained (closed) file: detached here,
    /// written back and reclaimed by the caller outside the lock.
    pub fn evict_retained(&mut self) -> Option<mapping::Detached> {
        let i = self.inodes.lru(self.inodes.retained())?;
        let d = mapping::detach(self.inodes.get(i));
        self.inodes.free(i);
        control::add(Slot::Evictions, 1);
        d
    }

    /// The adapter's eviction of an open file, least recently used first.
    /// The adapter thread has no fd of the program's (see
    /// `adapter::detach_fd_table`), so it writes the mapping back and pages it
    /// out in place (`msync`, `MADV_PAGEOUT`): the memory is freed now and
    /// the data stays correct, faulting back in from disk if touched. The
    /// program's next call on the file hands it to the kernel path. Returns
    /// false when no open file is left to evict.
    pub fn evict_open(&mut self) -> bool {
        let Some(i) = self.inodes.lru(self.inodes.open_in_memory()) else {
            return false;
        };
        let inode = self.inodes.get(i);
        inode.handover_pending = true;
        crate::trace::event("evict", [inode.ino, inode.size, inode.ksize, 0]);
        mapping::page_out(inode);
        control::add(Slot::Evictions, 1);
        true
    }

    /// Drops every retained mapping (exit), or forgets them without touching
    /// the shared gauge (a fork child, which inherited the parent's).
    pub fn drop_retained(&mut self, in_child: bool) {
        loop {
            let Some(i) = self.inodes.retained().next() else {
                break;
            };
            let inode = self.inodes.get(i);
            if in_child {
                control::add(Slot::MappedBytes, inode.ksize);
            }
            mapping::unmap(inode);
            self.inodes.free(i);
        }
    }

    /// Drops the retained mapping of `(dev, ino)` (its name is going away:
    /// keeping it would keep the disk blocks of an unlinked file alive).
    pub fn forget_retained(&mut self, dev: u64, ino: u64) {
        if let Some(i) = self.inodes.find(dev, ino) {
            if self.inodes.get(i).retained() {
                mapping::unmap(self.inodes.get(i));
                self.inodes.free(i);
            }
        }
    }

    /// Hands the inode behind `fd` to the kernel (mmap, sendfile, stdio, ...).
    pub fn fallback_fd(&mut self, fd: c_int) {
        if let Some((_, o)) = self.ofd(fd) {
            self.fallback_inode(o.inode);
        }
    }

    /// Hands every inode to the kernel (before fork, exec, spawn, exit).
    pub fn fallback_all(&mut self) {
        let mut i = 0;
        loop {
            let Some(idx) = self.inodes.open_in_memory().find(|&x| x >= i) else {
                break;
            };
            self.fallback_inode(idx);
            i = idx + 1;
        }
    }

    /// The logical size of `(dev, ino)` if it is in memory.
    pub fn memory_size(&self, dev: u64, ino: u64) -> Option<u64> {
        self.inodes.memory_size(dev, ino)
    }

    /// `read`/`pread` from memory.
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
    pub unsafe fn write(
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
        if mapping::reserve(inode, end, fd, room).is_err() {
            self.fallback_inode(o.inode);
            return None;
        }
        self.tick += 1;
        let inode = self.inodes.get(o.inode);
        inode.last_use = self.tick;
        // SAFETY: `reserve` made `[off, end)` file-backed; the caller
        // guarantees `buf`.
        unsafe { mapping::copy_in(inode, off, buf.cast(), n) };
        let size = inode.size;
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
    pub fn seek(&mut self, fd: c_int, off: i64, whence: c_int) -> Option<i64> {
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
    pub fn truncate(&mut self, fd: c_int, len: i64) -> Option<c_int> {
        let (_, o) = self.memory_fd(fd)?;
        if len < 0 || !o.writable() {
            return Some(fail(libc::EINVAL));
        }
        let inode = self.inodes.get(o.inode);
        let room = crate::adapter::room();
        if (len as u64).saturating_sub(inode.ksize) > room
            || mapping::set_len(inode, len as u64, fd, room).is_err()
        {
            self.fallback_inode(o.inode);
            return None;
        }
        control::max(Slot::LargestFile, len as u64);
        Some(0)
    }

    /// Before `fsync`/`fdatasync`: flushes the mapping and syncs the size.
    pub fn sync(&mut self, fd: c_int) {
        let Some((_, o)) = self.memory_fd(fd) else {
            return;
        };
        let wfd = if o.writable() {
            fd
        } else {
            self.writable_fd(o.inode)
        };
        let inode = self.inodes.get(o.inode);
        let _ = mapping::sync_size(inode, wfd, fd);
        mapping::flush(inode);
    }

    /// A writable tracked fd of the in-memory inode `(dev, ino)`, for
    /// serving `truncate(path)`; -1 when there is none.
    pub fn writable_fd_of(&mut self, dev: u64, ino: u64) -> c_int {
        match self.inodes.find(dev, ino) {
            Some(idx) if self.inodes.get(idx).place == Place::Memory => self.writable_fd(idx),
            _ => -1,
        }
    }

    /// A tracked writable fd of inode `idx`, or -1.
    fn writable_fd(&mut self, idx: usize) -> c_int {
        for fd in 0..=self.max_fd {
            let id = ofd_of(fd);
            if id == 0 {
                continue;
            }
            if let Some(o) = self.ofds.get(id) {
                if o.inode == idx && o.writable() {
                    return fd;
                }
            }
        }
        -1
    }

    /// Falls back the inode `(dev, ino)` if it is in memory.
    pub fn fallback_dev_ino(&mut self, dev: u64, ino: u64) {
        if let Some(idx) = self.inodes.find(dev, ino) {
            self.fallback_inode(idx);
        }
    }
}
