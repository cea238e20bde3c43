//! The agent's view of a control block: read and written with `pread` and
//! `pwrite`, never mapped. The file sits in the instance's directory, where
//! the function can write (and, in a container, truncate) it: a mapping of
//! a truncated file would kill the agent with SIGBUS on its next read,
//! while a short `pread` is just an invalid block. Every value read is
//! from an untrusted writer, so a block whose header is wrong reads as
//! empty counters and callers bound what they use.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::table::{Entry, Repair, TABLE_OFFSET};
use crate::{ControlBlock, Counters, Mode, Slot, MAGIC, SIZE, SLOTS, VERSION};

/// One instance's control block, as the agent reads and writes it.
#[derive(Debug)]
pub struct ControlFile {
    file: File,
    /// [`Slot::SafeguardRaised`] when the agent last took the safeguard.
    raises_seen: AtomicU64,
}

impl ControlFile {
    /// Creates (or resets) the block at `path` with a limit and a mode, as
    /// [`ControlBlock::create`] does, and keeps only a file handle.
    pub fn create(path: &Path, mem_limit: u64, mode: Mode) -> io::Result<ControlFile> {
        drop(ControlBlock::create(path, mem_limit, mode)?);
        Self::open(path)
    }

    /// Opens an existing block (made by [`ControlFile::create`] or
    /// [`ControlBlock::create`]) without mapping it.
    pub fn open(path: &Path) -> io::Result<ControlFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(ControlFile {
            file,
            raises_seen: AtomicU64::new(0),
        })
    }

    /// The tier files some process had mapped, as the table records them
    /// (untrusted: see [`crate::table::repair_dir`]).
    pub fn mapped_files(&self) -> Vec<Entry> {
        crate::table::owned_entries(&crate::table::read_table(&self.file, TABLE_OFFSET))
    }

    /// Trims the files of the tier directory `dir` that dead processes had
    /// mapped back to the logical sizes the table records. `alive` says
    /// whether a recorded owner pid still runs (a live owner's file is left
    /// alone: cutting it would fault its mapping). The table is not written:
    /// live processes of the instance may be using it, and a second repair
    /// of the same entries changes nothing (files only ever get shorter).
    pub fn repair(&self, dir: &Path, alive: impl Fn(u64) -> bool) -> io::Result<Repair> {
        let dead: Vec<Entry> = self
            .mapped_files()
            .into_iter()
            .filter(|e| !alive(e.owner))
            .collect();
        crate::table::repair_dir(dir, &dead)
    }

    /// Every word, or `None` when the block is short or its header is not
    /// this layout's (the function truncated or scribbled on it).
    fn words(&self) -> Option<[u64; SLOTS]> {
        let mut bytes = [0u8; SIZE];
        self.file.read_exact_at(&mut bytes, 0).ok()?;
        let mut words = [0u64; SLOTS];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        (words[Slot::Magic as usize] == MAGIC && words[Slot::Version as usize] == VERSION)
            .then_some(words)
    }

    fn write(&self, slot: Slot, value: u64) -> io::Result<()> {
        self.file
            .write_all_at(&value.to_le_bytes(), (slot as usize * 8) as u64)
    }

    /// Publishes a new memory limit to the tier (the thesis's limit pointer).
    /// A block the function has damaged takes the write and is not read back.
    pub fn set_limit(&self, bytes: u64) -> io::Result<()> {
        self.write(Slot::MemLimit, bytes)?;
        let seq = self.words().map_or(0, |w| w[Slot::LimitSeq as usize]);
        self.write(Slot::LimitSeq, seq.wrapping_add(1))
    }

    /// The tier's counters now; all zero for a damaged block.
    pub fn counters(&self) -> Counters {
        let Some(words) = self.words() else {
            return Counters::default();
        };
        let atomics: Vec<AtomicU64> = words.iter().map(|w| AtomicU64::new(*w)).collect();
        Counters::read(&atomics)
    }

    /// Whether the tier raised the safeguard since the last call. The tier
    /// counts its raises and raises again only after the flag is cleared,
    /// so comparing the count loses no raise, and clearing the flag after
    /// seeing a new one re-arms it.
    pub fn take_safeguard(&self) -> bool {
        let Some(words) = self.words() else {
            return false;
        };
        let raised = words[Slot::SafeguardRaised as usize];
        let seen = self.raises_seen.load(Ordering::Acquire);
        if raised == seen {
            return false;
        }
        self.raises_seen.store(raised, Ordering::Release);
        let _ = self.write(Slot::Safeguard, 0);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch_max;

    #[test]
    fn reads_what_the_tier_writes_and_survives_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control");
        let agent = ControlFile::create(&path, 64 << 20, Mode::Adaptive).unwrap();
        let tier = ControlBlock::open(&path).unwrap();
        agent.set_limit(128 << 20).unwrap();
        assert_eq!(tier.get(Slot::MemLimit), 128 << 20);
        assert_eq!(tier.get(Slot::LimitSeq), 1);
        fetch_max(tier.words(), Slot::PeakNative, 10);
        assert_eq!(agent.counters().peak_native, 10);

        assert!(!agent.take_safeguard());
        tier.set(Slot::Safeguard, 1);
        tier.words()[Slot::SafeguardRaised as usize].fetch_add(1, Ordering::AcqRel);
        assert!(agent.take_safeguard());
        assert_eq!(tier.get(Slot::Safeguard), 0, "the flag is re-armed");
        assert!(!agent.take_safeguard(), "one raise is taken once");
        drop(tier);

        // The function truncates its block: the agent reads nothing and lives.
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        assert_eq!(agent.counters(), Counters::default());
        assert!(!agent.take_safeguard());
        agent.set_limit(1 << 20).unwrap();
        // Or scribbles on its header.
        std::fs::write(&path, vec![0xffu8; SIZE]).unwrap();
        assert_eq!(agent.counters(), Counters::default());
    }
}
