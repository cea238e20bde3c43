//! The tier's per-file table: what every process of an instance must agree
//! on about a tier file, in memory they all map, and what must survive a
//! crash.
//!
//! A mapped tier file's kernel size is its *reservation* (grown ahead of
//! writes so the mapping can be touched); its real length, the *logical
//! size*, lives in one process's memory. The table publishes that size
//! (updated on every write that changes it, so it is current when the
//! process is killed) and which processes have the file open, so that:
//! - a second process opening the file takes it away from the owner and
//!   gives it to the kernel path, at its logical size, before it looks;
//! - whoever comes after a crash (another process of the instance, the node
//!   agent, `ephemera run`) trims the file back to its logical size
//!   ([`repair_dir`]).
//!
//! Layout: [`TABLE_SIZE`] bytes of little-endian `u64` words, all zero when
//! empty, so a fresh (sparse) file is a valid empty table. Word 0 is the
//! table lock (the pid holding it); entries of [`ENTRY_WORDS`] words follow
//! from index [`ENTRY_WORDS`] on, with the fields at the `E_*` offsets.
//! In the control block file the table starts at [`TABLE_OFFSET`].

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Where the table starts in the control block file (after its 4 KiB header).
pub const TABLE_OFFSET: u64 = crate::SIZE as u64;
/// Words per entry.
pub const ENTRY_WORDS: usize = 16;
/// Entries in a table (entry 0's words hold the table lock).
pub const ENTRIES: usize = 512;
/// Size of the table in bytes.
pub const TABLE_SIZE: usize = ENTRIES * ENTRY_WORDS * 8;
/// Size of a control block file that carries the table.
pub const FILE_SIZE: u64 = TABLE_OFFSET + TABLE_SIZE as u64;

/// Entry word: pid holding the entry's lock (0 = free).
pub const E_LOCK: usize = 0;
/// Entry word: `st_dev` of the file.
pub const E_DEV: usize = 1;
/// Entry word: `st_ino` of the file (0 = free entry).
pub const E_INO: usize = 2;
/// Entry word: the logical size while an owner maps the file.
pub const E_SIZE: usize = 3;
/// Entry word: pid of the process mapping the file (0 = the kernel path).
pub const E_OWNER: usize = 4;
/// Entry word: the file's birth time in ns (`statx` btime; 0 = unknown),
/// so a recycled inode number is not mistaken for the recorded file.
pub const E_BIRTH: usize = 5;
/// Entry word: flags ([`F_CROWDED`]).
pub const E_FLAGS: usize = 6;
/// Entry word: an fd number of the file in the owner, through which
/// another process can reach it (`/proc/<owner>/fd/<n>`, checked by inode).
pub const E_FD: usize = 7;
/// Entry words from here to the end: pids with the file open (0 = none).
pub const E_USERS: usize = 8;
/// More processes had the file open than [`E_USERS`] slots hold: nobody
/// maps it until the entry is freed.
pub const F_CROWDED: u64 = 1;

/// One entry as read back by the agent (untrusted: the function can write it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// `st_dev` the writer recorded.
    pub dev: u64,
    /// `st_ino` the writer recorded.
    pub ino: u64,
    /// Logical size the owner last published.
    pub size: u64,
    /// Pid of the owner (non-zero: the kernel size may hold a reservation).
    pub owner: u64,
    /// Birth time in ns, 0 when unknown.
    pub birth: u64,
}

/// Decodes every entry with an owner from a table's bytes (short input
/// decodes what is there).
pub fn owned_entries(table: &[u8]) -> Vec<Entry> {
    let word = |i: usize| -> u64 {
        let mut b = [0u8; 8];
        if let Some(s) = table.get(i * 8..i * 8 + 8) {
            b.copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    };
    (1..ENTRIES)
        .map(|e| e * ENTRY_WORDS)
        .map(|w| Entry {
            dev: word(w + E_DEV),
            ino: word(w + E_INO),
            size: word(w + E_SIZE),
            owner: word(w + E_OWNER),
            birth: word(w + E_BIRTH),
        })
        .filter(|e| e.ino != 0 && e.owner != 0)
        .collect()
}

/// What [`repair_dir`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Repair {
    /// Files cut back to their logical size.
    pub trimmed: usize,
    /// Bytes of reservation removed.
    pub bytes: u64,
}

/// Most directory entries [`repair_dir`] looks at (a vandal cannot make it
/// walk forever).
const MAX_WALK: usize = 100_000;
/// Deepest directory [`repair_dir`] descends into.
const MAX_DEPTH: usize = 32;

/// Trims every file under `dir` that `entries` says was mapped to its
/// logical size. Call it when no process of the instance runs any more
/// (the owners are dead): it does not lock against them.
///
/// The entries come from memory the function can write, so nothing in them
/// is trusted: files are found by walking `dir` itself (never following a
/// symlink, never leaving `dir`, bounded), matched by device and inode,
/// opened with `O_NOFOLLOW` and re-checked by `fstat`; a file is only ever
/// made shorter, never longer. The worst a forged entry can do is shorten
/// a file in the function's own tier directory.
pub fn repair_dir(dir: &Path, entries: &[Entry]) -> io::Result<Repair> {
    let mut report = Repair::default();
    if entries.is_empty() {
        return Ok(report);
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    let mut seen = 0usize;
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            seen += 1;
            if seen > MAX_WALK {
                return Ok(report);
            }
            let Ok(m) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            if m.is_dir() {
                if depth < MAX_DEPTH {
                    stack.push((e.path(), depth + 1));
                }
                continue;
            }
            if !m.is_file() {
                continue;
            }
            let Some(want) = entries
                .iter()
                .filter(|x| x.dev == m.dev() && x.ino == m.ino())
                .filter(|x| x.birth == 0 || birth(&m).is_none_or(|b| b == x.birth))
                .map(|x| x.size)
                .max()
            else {
                continue;
            };
            if m.len() > want {
                if let Ok(cut) = trim(&e.path(), m.dev(), m.ino(), want) {
                    report.trimmed += 1;
                    report.bytes += cut;
                }
            }
        }
    }
    Ok(report)
}

/// A file's birth time in ns, when the filesystem reports one.
pub fn birth(m: &std::fs::Metadata) -> Option<u64> {
    let d = m
        .created()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    u64::try_from(d.as_nanos()).ok()
}

/// Shortens the regular file at `path`, if it is still `(dev, ino)`, to `len`.
fn trim(path: &Path, dev: u64, ino: u64, len: u64) -> io::Result<u64> {
    let f: File = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc_flags())
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() || m.dev() != dev || m.ino() != ino || m.len() <= len {
        return Ok(0);
    }
    f.set_len(len)?;
    Ok(m.len() - len)
}

/// `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` (no libc dependency here).
fn libc_flags() -> i32 {
    // Linux values on every architecture we build for.
    const O_NONBLOCK: i32 = 0o4000;
    const O_NOFOLLOW: i32 = 0o400000;
    O_NONBLOCK | O_NOFOLLOW
}

/// Reads a table at `offset` of `file` (short files read as empty entries).
pub fn read_table(file: &File, offset: u64) -> Vec<u8> {
    let mut buf = vec![0u8; TABLE_SIZE];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf.truncate(got);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn entry(path: &Path, size: u64) -> Entry {
        let m = std::fs::metadata(path).unwrap();
        Entry {
            dev: m.dev(),
            ino: m.ino(),
            size,
            owner: 1,
            birth: birth(&m).unwrap_or(0),
        }
    }

    #[test]
    fn trims_only_recorded_files_inside_the_dir_and_never_grows() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, vec![7u8; 65536]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let b = dir.path().join("sub/b");
        std::fs::write(&b, vec![1u8; 100]).unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, vec![2u8; 4096]).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("link")).unwrap();
        let entries = [entry(&a, 100), entry(&b, 5000), entry(&victim, 0)];
        let r = repair_dir(dir.path(), &entries).unwrap();
        assert_eq!(r.trimmed, 1);
        assert_eq!(std::fs::read(&a).unwrap(), vec![7u8; 100]);
        assert_eq!(std::fs::metadata(&b).unwrap().len(), 100, "never grown");
        assert_eq!(
            std::fs::metadata(&victim).unwrap().len(),
            4096,
            "symlinked file outside the dir untouched"
        );
        // A symlink as the directory itself is refused.
        let l = outside.path().join("dirlink");
        std::os::unix::fs::symlink(dir.path(), &l).unwrap();
        assert!(repair_dir(&l, &entries).is_err());
    }

    #[test]
    fn decodes_garbage_without_panicking() {
        let junk: Vec<u8> = (0..TABLE_SIZE + 5).map(|i| (i * 31) as u8).collect();
        let _ = owned_entries(&junk);
        assert!(owned_entries(&[]).is_empty());
        assert!(owned_entries(&vec![0u8; TABLE_SIZE]).is_empty());
    }
}
