//! The tier's state and its operations: registering fds of tier files,
//! serving reads/writes/seeks from memory, syncing logical sizes to the
//! kernel and falling back to the kernel path.
//!
//! Every operation runs under the one tier lock ([`lock`]). Operations that
//! return `Option` answer `None` when the fd is not served from memory: the
//! hook then calls the real libc function.

use libc::c_int;

use ephemera_control_block::{Mode, Slot};

use crate::control;
use crate::fdtable::{ofd_of, set_ofd, trackable, Ofd, OfdTable};
use crate::inode::{InodeTable, Place};
use crate::lock::{Guard, Locked};
use crate::mapping;
use crate::shared;
use crate::sys;

mod ops;

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
    /// Shared entry whose lock the current operation holds (0: none).
    entered: u32,
}

/// Retained files are dropped when fewer inode slots than this are free.
const MIN_FREE_INODES: usize = 256;

static STATE: Locked<Tier> = Locked::new(Tier {
    ofds: OfdTable::new(),
    inodes: InodeTable::new(),
    max_fd: -1,
    tick: 0,
    entered: 0,
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
        let (dev, ino, mut size) = (st.st_dev, st.st_ino, st.st_size.max(0) as u64);
        if ofd_of(fd) != 0 {
            // A stale entry: the fd was closed behind our back and reused.
            self.untrack(fd, false);
        }
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let mut existing = self.inodes.find(dev, ino);
        if !trackable(fd) {
            if let Some(i) = existing {
                self.fallback_inode(i);
            }
            return;
        }
        // The first fd of the file in this process tells the other processes
        // (and may take the file away from one of them); it maps only if
        // nobody else has it open.
        let first = existing.is_none_or(|i| self.inodes.get(i).ofds == 0);
        let mut memory = memory;
        let mut slot = 0;
        if first {
            let opened = shared::open(dev, ino, fd, memory, size);
            memory = opened.map;
            slot = opened.slot;
            if opened.took {
                // Trimmed back from another owner's reservation.
                size = sys::fstat(fd).map_or(size, |s| s.st_size.max(0) as u64);
            }
        }
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
        let (idx, fresh) = match existing {
            Some(i) => (i, false),
            None => {
                if self.inodes.free_slots() < MIN_FREE_INODES {
                    self.drop_lru_retained();
                }
                match self.inodes.alloc(dev, ino, size) {
                    Some(i) => (i, true),
                    None => {
                        shared::close(slot);
                        return;
                    }
                }
            }
        };
        let inode = self.inodes.get(idx);
        if first {
            inode.slot = slot;
        }
        if fresh && memory {
            if mapping::map(inode, fd, flags & libc::O_ACCMODE, size).is_err() {
                shared::disown(slot);
                control::add(Slot::Fallbacks, 1);
            }
        } else if inode.place == Place::Memory && (!memory || (writable && !inode.writable)) {
            self.fallback_inode(idx);
        }
        let Some(id) = self.ofds.alloc(idx, flags) else {
            if self.inodes.get(idx).ofds == 0 {
                self.fallback_inode(idx);
                shared::close(std::mem::replace(&mut self.inodes.get(idx).slot, 0));
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

    /// One fd of an owned file closed while others stay open: the shared
    /// table gets one that is still open (other processes reach the file
    /// through it to take it to the kernel path before an `exec`).
    fn republish_fd(&mut self, idx: usize) {
        let slot = self.inodes.get(idx).slot;
        if slot == 0 || self.inodes.get(idx).place != Place::Memory {
            return;
        }
        let fd = (0..=self.max_fd).find(|&f| {
            let id = ofd_of(f);
            id != 0 && self.ofds.get(id).is_some_and(|o| o.inode == idx)
        });
        if let Some(f) = fd {
            shared::set_fd(slot, f);
        }
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
            self.republish_fd(o.inode);
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
            self.republish_fd(o.inode);
            return;
        }
        let mut synced = false;
        if inode.place == Place::Memory && valid {
            // Only an owner sets the kernel size: a file another process
            // took away has its size in the kernel already, maybe grown since.
            let slot = inode.slot;
            if shared::enter(slot) {
                let wfd = if o.writable() { fd } else { -1 };
                synced = mapping::sync_size(inode, wfd, fd).is_ok();
            }
            shared::leave(slot);
        }
        // The size is exact now: other processes may map the file.
        shared::close(std::mem::replace(&mut inode.slot, 0));
        // `synced` implies the file is in memory and the fd valid.
        if synced && crate::adapter::may_retain() {
            if let Some(st) = sys::fstat(fd) {
                inode.closed_as = crate::inode::identity(&st);
                return;
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
        // As in `untrack`: only the owner sets the kernel size.
        let slot = inode.slot;
        if any >= 0 && shared::enter(slot) {
            let _ = mapping::sync_size(inode, wfd, any);
        }
        mapping::unmap(inode);
        shared::disown(slot);
        shared::leave(slot);
        true
    }

    /// Another process opened the file and took it to the kernel path (its
    /// kernel size is already the logical size, and may have changed since):
    /// only our offsets go back to the kernel, and the mapping is dropped.
    fn lost(&mut self, idx: usize) {
        for fd in 0..=self.max_fd {
            let id = ofd_of(fd);
            if id == 0 {
                continue;
            }
            if let Some(o) = self.ofds.get(id).copied() {
                if o.inode == idx {
                    sys::lseek(fd, o.offset as i64, libc::SEEK_SET);
                }
            }
        }
        let inode = self.inodes.get(idx);
        crate::trace::event("lost", [inode.ino, inode.size, inode.ksize, 0]);
        inode.dirty = false;
        mapping::unmap(inode);
        control::add(Slot::Fallbacks, 1);
    }

    /// The child of `fork` has every file the parent had open open too.
    pub fn after_fork_child(&mut self) {
        for slot in self.inodes.open_slots() {
            shared::add_user(slot);
        }
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

    /// Hands every inode to the kernel (before fork, exec, spawn, exit),
    /// including files the adapter paged out and marked for hand-over.
    pub fn fallback_all(&mut self) {
        let mut i = 0;
        loop {
            let Some(idx) = self.inodes.mapped_open().find(|&x| x >= i) else {
                break;
            };
            self.fallback_inode(idx);
            i = idx + 1;
        }
    }

    /// Completes an `O_TRUNC` open made without the flag: in memory when the
    /// file is still mapped and ours (see `mapping::clear`), else by the
    /// kernel.
    pub fn truncate_opened(&mut self, fd: c_int) {
        let Some((_, o)) = self.ofd(fd) else {
            sys::ftruncate(fd, 0);
            return;
        };
        let inode = self.inodes.get(o.inode);
        let ours = inode.place == Place::Memory
            && inode.writable
            && !inode.handover_pending
            && shared::owns(inode.slot);
        if ours {
            shared::publish(inode.slot, 0);
            mapping::clear(inode);
            return;
        }
        self.fallback_inode(o.inode);
        sys::ftruncate(fd, 0);
    }

    /// The logical size of `(dev, ino)` if it is in memory.
    pub fn memory_size(&self, dev: u64, ino: u64) -> Option<u64> {
        self.inodes.memory_size(dev, ino)
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
