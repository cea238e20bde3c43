//! Per-fd state: which open file description (if any) a kernel fd of a tier
//! file belongs to, and the descriptions themselves.
//!
//! The fd → description table is an array of atomics indexed by fd, so a
//! hook on an fd we do not track (a socket, a pipe, a file outside the tier)
//! costs one relaxed load and no lock. Descriptions hold what the kernel's
//! `struct file` would: the offset (kept in user space for mapped files), the
//! open flags and how many fds share it (`dup`).

use std::sync::atomic::{AtomicU32, Ordering};

/// Fds at or above this are never tracked; they go straight to the kernel.
pub const MAX_FDS: usize = 1 << 16;
/// Open file descriptions we can track at once.
pub const MAX_OFDS: usize = 4096;

/// fd → description id (index + 1); 0 = not tracked.
static FD_OFD: [AtomicU32; MAX_FDS] = [const { AtomicU32::new(0) }; MAX_FDS];

/// The description id of `fd` (0 = untracked). Lock-free: callers re-check
/// under the tier lock before trusting it.
pub fn ofd_of(fd: libc::c_int) -> u32 {
    usize::try_from(fd)
        .ok()
        .and_then(|i| FD_OFD.get(i))
        .map_or(0, |w| w.load(Ordering::Acquire))
}

/// Points `fd` at description id `id` (0 clears). Call with the tier lock held.
pub fn set_ofd(fd: libc::c_int, id: u32) {
    if let Some(w) = usize::try_from(fd).ok().and_then(|i| FD_OFD.get(i)) {
        w.store(id, Ordering::Release);
    }
}

/// True when `fd` can be tracked at all.
pub fn trackable(fd: libc::c_int) -> bool {
    usize::try_from(fd).is_ok_and(|i| i < MAX_FDS)
}

/// One open file description of a tier file.
#[derive(Clone, Copy)]
pub struct Ofd {
    /// In use.
    pub used: bool,
    /// Fds pointing at it.
    pub refs: u32,
    /// Index of its inode.
    pub inode: usize,
    /// File offset (authoritative while the inode is in memory).
    pub offset: u64,
    /// `open` flags (access mode, `O_APPEND`, ...).
    pub flags: libc::c_int,
}

impl Ofd {
    const EMPTY: Ofd = Ofd {
        used: false,
        refs: 0,
        inode: 0,
        offset: 0,
        flags: 0,
    };

    /// Opened for reading.
    pub fn readable(&self) -> bool {
        self.flags & libc::O_ACCMODE != libc::O_WRONLY
    }

    /// Opened for writing.
    pub fn writable(&self) -> bool {
        self.flags & libc::O_ACCMODE != libc::O_RDONLY
    }
}

/// The fixed table of descriptions.
pub struct OfdTable {
    slots: [Ofd; MAX_OFDS],
}

impl OfdTable {
    /// An empty table.
    pub const fn new() -> Self {
        OfdTable {
            slots: [Ofd::EMPTY; MAX_OFDS],
        }
    }

    /// Allocates a description; returns its id (index + 1).
    pub fn alloc(&mut self, inode: usize, flags: libc::c_int) -> Option<u32> {
        let i = self.slots.iter().position(|o| !o.used)?;
        self.slots[i] = Ofd {
            used: true,
            refs: 1,
            inode,
            offset: 0,
            flags,
        };
        u32::try_from(i + 1).ok()
    }

    /// The description with id `id`, if live.
    pub fn get(&mut self, id: u32) -> Option<&mut Ofd> {
        let i = (id as usize).checked_sub(1)?;
        self.slots.get_mut(i).filter(|o| o.used)
    }

    /// Frees a description.
    pub fn free(&mut self, id: u32) {
        if let Some(o) = self.get(id) {
            *o = Ofd::EMPTY;
        }
    }
}
