//! Per-inode state, shared by every fd of the same file in this process, so
//! two fds see one logical size and one mapping.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Inodes we can track at once.
pub const MAX_INODES: usize = 2048;

/// Inodes currently placed in memory; lets the stat hooks skip the lock when
/// there is nothing to correct.
pub static MEM_INODES: AtomicUsize = AtomicUsize::new(0);

/// Bumped whenever a mapping is dropped (the file leaves memory, its kernel
/// size having just been set to the logical size). A stat that read the
/// kernel's size before such a hand-over and found no mapping after it
/// retries, so it never reports a stale reserved size.
pub static HANDOVERS: AtomicU64 = AtomicU64::new(0);

/// Where an inode's data is served from (the thesis's placement).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Place {
    /// Mapped: reads and writes are `memcpy`, offsets in user space.
    Memory,
    /// Plain system calls: the kernel owns offsets and size.
    Kernel,
}

/// One tracked file.
#[derive(Clone, Copy)]
pub struct Inode {
    /// In use.
    pub used: bool,
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
    /// Open file descriptions on it.
    pub ofds: u32,
    /// Where its data is served from.
    pub place: Place,
    /// Start of the mapping (Memory only).
    pub base: usize,
    /// Length of the mapping (address space reserved).
    pub cap: usize,
    /// The kernel's idea of the file size (capacity made touchable).
    pub ksize: u64,
    /// The logical size: what `stat` and `SEEK_END` report.
    pub size: u64,
    /// Written since the last size sync (mtime needs bumping).
    pub dirty: bool,
    /// The mapping is writable (mapped through an `O_RDWR` fd).
    pub writable: bool,
    /// Access tick of the last open, read or write (LRU order).
    pub last_use: u64,
    /// `(size, mtime, ctime)` in nanoseconds when the last fd closed: a
    /// retained mapping is reused only if the file still matches.
    pub closed_as: (u64, i128, i128),
    /// Paged out by the adapter thread, which holds no fd of the program's:
    /// the program's next call on it hands it to the kernel path.
    pub handover_pending: bool,
    /// Entry in the instance's shared table while this process has the
    /// file open (0: none), see `crate::shared`.
    pub slot: u32,
}

impl Inode {
    const EMPTY: Inode = Inode {
        used: false,
        dev: 0,
        ino: 0,
        ofds: 0,
        place: Place::Kernel,
        base: 0,
        cap: 0,
        ksize: 0,
        size: 0,
        dirty: false,
        writable: false,
        last_use: 0,
        closed_as: (0, 0, 0),
        handover_pending: false,
        slot: 0,
    };

    /// Closed but still mapped: kept for a reopen until the adapter evicts it.
    pub fn retained(&self) -> bool {
        self.used && self.ofds == 0 && self.place == Place::Memory
    }
}

/// `(size, mtime, ctime)` of a stat result, for [`Inode::closed_as`].
pub fn identity(st: &libc::stat) -> (u64, i128, i128) {
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    (
        st.st_size.max(0) as u64,
        ns(st.st_mtime, st.st_mtime_nsec),
        ns(st.st_ctime, st.st_ctime_nsec),
    )
}

/// The fixed table of inodes.
pub struct InodeTable {
    slots: [Inode; MAX_INODES],
    /// One past the highest slot ever used (bounds scans).
    high: usize,
}

impl InodeTable {
    /// An empty table.
    pub const fn new() -> Self {
        InodeTable {
            slots: [Inode::EMPTY; MAX_INODES],
            high: 0,
        }
    }

    /// The index of the inode `(dev, ino)`, if tracked.
    pub fn find(&self, dev: u64, ino: u64) -> Option<usize> {
        self.slots[..self.high]
            .iter()
            .position(|i| i.used && i.dev == dev && i.ino == ino)
    }

    /// Starts tracking `(dev, ino)` on the kernel path.
    pub fn alloc(&mut self, dev: u64, ino: u64, size: u64) -> Option<usize> {
        let i = self.slots.iter().position(|i| !i.used)?;
        self.slots[i] = Inode {
            used: true,
            dev,
            ino,
            size,
            ksize: size,
            ..Inode::EMPTY
        };
        self.high = self.high.max(i + 1);
        Some(i)
    }

    /// Stops tracking an inode (its mapping must already be gone).
    pub fn free(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            *s = Inode::EMPTY;
        }
    }

    /// Inode `i`.
    pub fn get(&mut self, i: usize) -> &mut Inode {
        &mut self.slots[i]
    }

    /// Indices of inodes in memory with open fds.
    pub fn open_in_memory(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.high).filter(|&i| {
            let s = &self.slots[i];
            s.used && s.place == Place::Memory && s.ofds > 0 && !s.handover_pending
        })
    }

    /// Indices of inodes in memory with open fds, pending hand-over or not.
    pub fn mapped_open(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.high).filter(|&i| {
            let s = &self.slots[i];
            s.used && s.place == Place::Memory && s.ofds > 0
        })
    }

    /// Shared-table entries of the files open in this process.
    pub fn open_slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots[..self.high]
            .iter()
            .filter(|s| s.used && s.ofds > 0 && s.slot != 0)
            .map(|s| s.slot)
    }

    /// Indices of retained (closed, still mapped) inodes.
    pub fn retained(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.high).filter(|&i| self.slots[i].retained())
    }

    /// The least recently used inode among `candidates`.
    pub fn lru(&self, candidates: impl Iterator<Item = usize>) -> Option<usize> {
        candidates.min_by_key(|&i| self.slots[i].last_use)
    }

    /// Free slots left.
    pub fn free_slots(&self) -> usize {
        MAX_INODES - self.slots[..self.high].iter().filter(|i| i.used).count()
    }

    /// The logical size of `(dev, ino)` when it is open and in memory (a
    /// retained file's kernel size is already exact).
    pub fn memory_size(&self, dev: u64, ino: u64) -> Option<u64> {
        if MEM_INODES.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let i = self.find(dev, ino)?;
        let s = &self.slots[i];
        // A file another process took away: the kernel's answer is exact.
        (s.place == Place::Memory && s.ofds > 0 && crate::shared::owns(s.slot)).then_some(s.size)
    }
}
