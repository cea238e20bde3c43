//! The control block: one small file per function instance, mapped shared by
//! every process of the instance (through the intercept), by the proxy and by
//! the node agent.
//!
//! It is the thesis's "limit pointer" and more: the agent writes the current
//! memory limit here when it resizes the instance, the tier reads it to decide
//! what fits in memory and writes its counters and the safeguard flag back.
//!
//! The file is an array of [`SLOTS`] little-endian `u64` words, each accessed
//! atomically; [`Slot`] names the word at each index. The layout is the whole
//! protocol: no locks, no allocation, so the intercept can use it from inside a
//! libc hook. This crate has no dependency that could export a libc symbol, so
//! the `cdylib` can link it safely.
//!
//! - [`Slot`]: the index of each word and what it holds.
//! - [`ControlBlock`]: a safe, owned mapping of a block, for the processes
//!   inside an instance (the proxy) and `ephemera run`.
//! - [`Counters`]: a snapshot of the tier's counters.
//! - [`ControlFile`]: the agent's view, read and written without a mapping.
//! - [`table`]: the tier's per-file table after the header (logical sizes
//!   and openers of tier files, shared by the instance's processes), and
//!   [`table::repair_dir`], which trims files back after a crash.

mod file;
pub mod table;

pub use file::ControlFile;

use std::fs::OpenOptions;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Size of the control block file in bytes.
pub const SIZE: usize = 4096;
/// Number of `u64` words in the block.
pub const SLOTS: usize = SIZE / 8;
/// First word of a valid block: `EPHCTL01`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"EPHCTL01");
/// Layout version in [`Slot::Version`].
pub const VERSION: u64 = 1;

/// Tier mode stored in [`Slot::Mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Mode {
    /// Small, hot files in memory, large ones on disk (the default).
    Adaptive = 0,
    /// Always map.
    Memory = 1,
    /// Never map: the profiler's trial runs.
    Disk = 2,
}

impl Mode {
    /// Decodes a stored mode; unknown values read as adaptive.
    pub fn from_u64(v: u64) -> Mode {
        match v {
            1 => Mode::Memory,
            2 => Mode::Disk,
            _ => Mode::Adaptive,
        }
    }

    /// Parses `memory`, `disk` or `adaptive`.
    pub fn parse(s: &str) -> Option<Mode> {
        match s.trim().to_ascii_lowercase().as_str() {
            "adaptive" | "" => Some(Mode::Adaptive),
            "memory" => Some(Mode::Memory),
            "disk" => Some(Mode::Disk),
            _ => None,
        }
    }

    /// The name used on the command line and in the environment.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Adaptive => "adaptive",
            Mode::Memory => "memory",
            Mode::Disk => "disk",
        }
    }
}

/// The words of the block. Counters only grow; `Peak*`/`Largest*` hold maxima.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Slot {
    /// [`MAGIC`] once the block is initialised.
    Magic = 0,
    /// [`VERSION`].
    Version = 1,
    /// Current memory limit of the instance in bytes (0 = none known).
    MemLimit = 2,
    /// [`Mode`] as a number.
    Mode = 3,
    /// 1 while the instance is near its limit: the agent must roll back loans.
    Safeguard = 4,
    /// Bumped by the agent every time it writes [`Slot::MemLimit`].
    LimitSeq = 5,
    /// Read-like calls served from memory.
    Reads = 8,
    /// Write-like calls served from memory.
    Writes = 9,
    /// Bytes copied out of the tier.
    BytesRead = 10,
    /// Bytes copied into the tier.
    BytesWritten = 11,
    /// Files placed in memory (mapped).
    FilesMapped = 12,
    /// Files evicted from memory by the memory adapter.
    Evictions = 13,
    /// Fds handed back to the kernel (mmap, sendfile, stdio, ...).
    Fallbacks = 14,
    /// Largest resident set seen by any process of the instance, in bytes.
    PeakNative = 15,
    /// Largest file the instance touched in the tier, in bytes.
    LargestFile = 16,
    /// Bytes currently mapped by the tier.
    MappedBytes = 17,
    /// Opens of tier paths.
    Opens = 18,
    /// Times the safeguard flag was raised.
    SafeguardRaised = 19,
}

/// A snapshot of the tier's counters, as the agent reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// See [`Slot::Reads`].
    pub reads: u64,
    /// See [`Slot::Writes`].
    pub writes: u64,
    /// See [`Slot::BytesRead`].
    pub bytes_read: u64,
    /// See [`Slot::BytesWritten`].
    pub bytes_written: u64,
    /// See [`Slot::FilesMapped`].
    pub files_mapped: u64,
    /// See [`Slot::Evictions`].
    pub evictions: u64,
    /// See [`Slot::Fallbacks`].
    pub fallbacks: u64,
    /// See [`Slot::PeakNative`].
    pub peak_native: u64,
    /// See [`Slot::LargestFile`].
    pub largest_file: u64,
    /// See [`Slot::MappedBytes`].
    pub mapped_bytes: u64,
    /// See [`Slot::Opens`].
    pub opens: u64,
    /// See [`Slot::MemLimit`].
    pub mem_limit: u64,
    /// See [`Slot::Safeguard`].
    pub safeguard: bool,
}

impl Counters {
    /// Reads every counter from a block's words.
    pub fn read(words: &[AtomicU64]) -> Counters {
        let get = |s: Slot| words[s as usize].load(Ordering::Relaxed);
        Counters {
            reads: get(Slot::Reads),
            writes: get(Slot::Writes),
            bytes_read: get(Slot::BytesRead),
            bytes_written: get(Slot::BytesWritten),
            files_mapped: get(Slot::FilesMapped),
            evictions: get(Slot::Evictions),
            fallbacks: get(Slot::Fallbacks),
            peak_native: get(Slot::PeakNative),
            largest_file: get(Slot::LargestFile),
            mapped_bytes: get(Slot::MappedBytes),
            opens: get(Slot::Opens),
            mem_limit: get(Slot::MemLimit),
            safeguard: get(Slot::Safeguard) != 0,
        }
    }
}

/// Raises `slot` to at least `value` (for maxima such as [`Slot::PeakNative`]).
pub fn fetch_max(words: &[AtomicU64], slot: Slot, value: u64) {
    words[slot as usize].fetch_max(value, Ordering::Relaxed);
}

/// The agent's (or proxy's) mapping of one instance's control block.
#[derive(Debug)]
pub struct ControlBlock {
    map: memmap2::MmapMut,
}

impl ControlBlock {
    /// Creates (or resets) the block at `path` with a limit and a mode.
    pub fn create(path: &Path, mem_limit: u64, mode: Mode) -> io::Result<ControlBlock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        // The header page, then the tier's per-file table (all zero: empty).
        file.set_len(table::FILE_SIZE)?;
        let block = Self::map(&file)?;
        block.set(Slot::Version, VERSION);
        block.set(Slot::MemLimit, mem_limit);
        block.set(Slot::Mode, mode as u64);
        block.words()[Slot::Magic as usize].store(MAGIC, Ordering::Release);
        Ok(block)
    }

    /// Opens an existing block, checking its magic and size.
    pub fn open(path: &Path) -> io::Result<ControlBlock> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        if file.metadata()?.len() < SIZE as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "control block {} is shorter than {SIZE} bytes",
                    path.display()
                ),
            ));
        }
        let block = Self::map(&file)?;
        if block.get(Slot::Magic) != MAGIC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not an Ephemera control block", path.display()),
            ));
        }
        Ok(block)
    }

    fn map(file: &std::fs::File) -> io::Result<ControlBlock> {
        // SAFETY: the file is at least SIZE bytes and every access to the
        // mapping goes through AtomicU64, so concurrent writers in other
        // processes (the tier) cannot cause a data race on our side.
        let map = unsafe { memmap2::MmapOptions::new().len(SIZE).map_mut(file)? };
        Ok(ControlBlock { map })
    }

    /// The block's words.
    pub fn words(&self) -> &[AtomicU64] {
        let ptr = self.map.as_ptr() as *const AtomicU64;
        // SAFETY: the mapping is SIZE bytes, page aligned (so u64 aligned),
        // lives as long as `self`, and AtomicU64 has the layout of u64.
        unsafe { std::slice::from_raw_parts(ptr, SLOTS) }
    }

    /// Reads one word.
    pub fn get(&self, slot: Slot) -> u64 {
        self.words()[slot as usize].load(Ordering::Acquire)
    }

    /// Writes one word.
    pub fn set(&self, slot: Slot, value: u64) {
        self.words()[slot as usize].store(value, Ordering::Release);
    }

    /// Publishes a new memory limit to the tier (the thesis's limit pointer).
    pub fn set_limit(&self, bytes: u64) {
        self.set(Slot::MemLimit, bytes);
        self.words()[Slot::LimitSeq as usize].fetch_add(1, Ordering::AcqRel);
    }

    /// The tier's counters now.
    pub fn counters(&self) -> Counters {
        Counters::read(self.words())
    }

    /// Clears the safeguard flag once the agent has acted on it.
    pub fn clear_safeguard(&self) {
        self.set(Slot::Safeguard, 0);
    }

    /// Whether the tier raised the safeguard flag since the last call; clears
    /// it in the same atomic step, so a raise is never lost in between.
    pub fn take_safeguard(&self) -> bool {
        self.words()[Slot::Safeguard as usize].swap(0, Ordering::AcqRel) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_open_and_share_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        let a = ControlBlock::create(&path, 64 << 20, Mode::Memory).unwrap();
        let b = ControlBlock::open(&path).unwrap();
        assert_eq!(b.get(Slot::MemLimit), 64 << 20);
        assert_eq!(Mode::from_u64(b.get(Slot::Mode)), Mode::Memory);
        a.set_limit(128 << 20);
        assert_eq!(b.counters().mem_limit, 128 << 20);
        assert_eq!(b.get(Slot::LimitSeq), 1);
        fetch_max(b.words(), Slot::PeakNative, 10);
        fetch_max(b.words(), Slot::PeakNative, 5);
        assert_eq!(a.counters().peak_native, 10);
        assert!(!a.take_safeguard());
        b.set(Slot::Safeguard, 1);
        assert!(a.take_safeguard());
        assert!(!b.take_safeguard(), "taking the flag clears it");
    }

    #[test]
    fn open_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        std::fs::write(&path, vec![0u8; SIZE]).unwrap();
        assert!(ControlBlock::open(&path).is_err());
        std::fs::write(&path, b"short").unwrap();
        assert!(ControlBlock::open(&path).is_err());
    }
}
