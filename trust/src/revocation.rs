//! Revocation: an admin-maintained deny list, checked on every member call.
//!
//! The list is a text file (`revoked`, mode 0644) with one entry a line:
//!
//! ```text
//! # serial numbers (hex, colons and case do not matter): one certificate
//! 5c:1e:09:a4:...
//! # identities: every certificate of that member, past and future
//! spiffe://ephemera/agent/node-2
//! ```
//!
//! It is *not* signed: whoever can write a member's credential directory can
//! already replace its key, so the file is trusted exactly as much as that
//! directory. The CA's copy (`<ca-dir>/revoked`) is the master; `ephemera`
//! commands copy it into each member's directory (see the README).
//!
//! A server re-reads its copy when the file changed (size, mtime or inode),
//! looking at most once per [`RELOAD_INTERVAL`], or at once on
//! [`RevocationList::reload`]. A list that does not parse is refused when
//! opened; on a reload, the previous list stays in force and the error is
//! logged. A missing file is an empty list.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::files::{self, PUBLIC_MODE};
use crate::{CertInfo, Identity, TrustError};

/// The revocation list's file name, in the CA directory and in each member's.
pub const REVOKED_FILE: &str = "revoked";

/// How often a server looks whether its revocation file changed.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RevocationEntry {
    /// One certificate, by serial (normalized lowercase hex, see [`crate::serial_hex`]).
    Serial(String),
    /// Every certificate of a member.
    Identity(Identity),
}

impl RevocationEntry {
    /// Parses a line: a `spiffe://` identity or a hex serial.
    pub fn parse(text: &str) -> Result<RevocationEntry, String> {
        let text = text.trim();
        if text.starts_with("spiffe://") {
            return Identity::from_uri(text)
                .map(RevocationEntry::Identity)
                .map_err(|e| e.to_string());
        }
        let hex: String = text
            .chars()
            .filter(|c| *c != ':')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "{text:?} is neither a hex serial nor a spiffe://ephemera/ identity"
            ));
        }
        let hex = if hex.len() % 2 == 1 {
            format!("0{hex}")
        } else {
            hex
        };
        // Same normalization as serial_hex: no leading zero bytes.
        let mut s = hex.as_str();
        while s.len() > 2 && s.starts_with("00") {
            s = &s[2..];
        }
        if s == "00" {
            s = "0";
        }
        Ok(RevocationEntry::Serial(s.to_string()))
    }

    /// The line written to the file.
    pub fn line(&self) -> String {
        match self {
            RevocationEntry::Serial(s) => s.clone(),
            RevocationEntry::Identity(i) => i.uri(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

#[derive(Debug, Default)]
struct Entries {
    serials: BTreeSet<String>,
    identities: BTreeSet<Identity>,
    /// The file as last read; `None` when it did not exist.
    stamp: Option<Stamp>,
}

#[derive(Debug)]
struct Inner {
    path: Option<PathBuf>,
    entries: RwLock<Entries>,
    /// Milliseconds since `epoch` at which to look at the file again.
    next_check: AtomicU64,
    epoch: Instant,
}

/// A reloadable deny list, shared (cheap to clone) by every verifier of a process.
#[derive(Debug, Clone)]
pub struct RevocationList {
    inner: Arc<Inner>,
}

fn parse_text(path: &Path, text: &str) -> Result<Entries, TrustError> {
    let mut entries = Entries::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match RevocationEntry::parse(line).map_err(|detail| TrustError::BadRevocation {
            path: path.to_path_buf(),
            line: n + 1,
            detail,
        })? {
            RevocationEntry::Serial(s) => {
                entries.serials.insert(s);
            }
            RevocationEntry::Identity(i) => {
                entries.identities.insert(i);
            }
        }
    }
    Ok(entries)
}

fn stamp_of(path: &Path) -> Result<Option<Stamp>, TrustError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TrustError::io("reading", path, e)),
    }
}

fn read_entries(path: &Path) -> Result<Entries, TrustError> {
    // Stamp before reading: a change during the read is seen next time.
    let stamp = stamp_of(path)?;
    let mut entries = match std::fs::read_to_string(path) {
        Ok(text) => parse_text(path, &text)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Entries::default(),
        Err(e) => return Err(TrustError::io("reading", path, e)),
    };
    entries.stamp = stamp;
    Ok(entries)
}

impl RevocationList {
    fn with(path: Option<PathBuf>, entries: Entries) -> RevocationList {
        RevocationList {
            inner: Arc::new(Inner {
                path,
                entries: RwLock::new(entries),
                next_check: AtomicU64::new(RELOAD_INTERVAL.as_millis() as u64),
                epoch: Instant::now(),
            }),
        }
    }

    /// A list that revokes nothing and has no file.
    pub fn empty() -> RevocationList {
        RevocationList::with(None, Entries::default())
    }

    /// Reads the list at `path` (missing: empty) and follows its changes.
    pub fn open(path: &Path) -> Result<RevocationList, TrustError> {
        let entries = read_entries(path)?;
        Ok(RevocationList::with(Some(path.to_path_buf()), entries))
    }

    /// The file followed, if any.
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Re-reads the file now if it changed; `Ok(true)` when the list was
    /// replaced. On error the previous list stays in force.
    pub fn reload(&self) -> Result<bool, TrustError> {
        let Some(path) = &self.inner.path else {
            return Ok(false);
        };
        let stamp = stamp_of(path)?;
        {
            let current = self.inner.entries.read().unwrap_or_else(|e| e.into_inner());
            if current.stamp == stamp {
                return Ok(false);
            }
        }
        let fresh = read_entries(path)?;
        let mut current = self
            .inner
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let count = fresh.serials.len() + fresh.identities.len();
        *current = fresh;
        tracing::info!(path = %path.display(), entries = count, "revocation list reloaded");
        Ok(true)
    }

    /// Reloads if [`RELOAD_INTERVAL`] has passed since the last look.
    fn maybe_reload(&self) {
        if self.inner.path.is_none() {
            return;
        }
        let now = self.inner.epoch.elapsed().as_millis() as u64;
        let due = self.inner.next_check.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let next = now + RELOAD_INTERVAL.as_millis() as u64;
        if self
            .inner
            .next_check
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return; // another call is looking
        }
        if let Err(e) = self.reload() {
            tracing::error!("revocation list not reloaded, the previous one stays in force: {e}");
        }
    }

    /// Why `cert` is revoked, or `None`. Follows file changes (at most one
    /// look per [`RELOAD_INTERVAL`]).
    pub fn check(&self, cert: &CertInfo) -> Option<RevocationEntry> {
        self.maybe_reload();
        let entries = self.inner.entries.read().unwrap_or_else(|e| e.into_inner());
        if entries.serials.contains(&cert.serial) {
            return Some(RevocationEntry::Serial(cert.serial.clone()));
        }
        if entries.identities.contains(&cert.identity) {
            return Some(RevocationEntry::Identity(cert.identity.clone()));
        }
        None
    }

    /// Every entry in force.
    pub fn entries(&self) -> Vec<RevocationEntry> {
        let entries = self.inner.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .serials
            .iter()
            .cloned()
            .map(RevocationEntry::Serial)
            .chain(
                entries
                    .identities
                    .iter()
                    .cloned()
                    .map(RevocationEntry::Identity),
            )
            .collect()
    }
}

/// Adds `entry` to the list file at `path` (created if missing, mode 0644),
/// replacing the file atomically; an entry already there is not repeated.
pub fn append_entry(path: &Path, entry: &RevocationEntry) -> Result<(), TrustError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::from(
            "# Ephemera revoked certificates: a hex serial or a spiffe://ephemera/ identity a line\n",
        ),
        Err(e) => return Err(TrustError::io("reading", path, e)),
    };
    let present = parse_text(path, &text)?;
    let already = match entry {
        RevocationEntry::Serial(s) => present.serials.contains(s),
        RevocationEntry::Identity(i) => present.identities.contains(i),
    };
    if already {
        return Ok(());
    }
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&entry.line());
    text.push('\n');
    files::write_replace(path, text.as_bytes(), PUBLIC_MODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_normalize() {
        assert_eq!(
            RevocationEntry::parse("00:8F:0a").unwrap(),
            RevocationEntry::Serial("8f0a".into())
        );
        assert_eq!(
            RevocationEntry::parse(" a ").unwrap(),
            RevocationEntry::Serial("0a".into())
        );
        assert_eq!(
            RevocationEntry::parse("spiffe://ephemera/agent/n1").unwrap(),
            RevocationEntry::Identity(Identity::agent("n1").unwrap())
        );
        assert!(RevocationEntry::parse("node-1").is_err());
        assert!(RevocationEntry::parse("spiffe://ephemera/agent/").is_err());
    }

    #[test]
    fn a_bad_line_names_the_file_and_line() {
        let err = parse_text(Path::new("/x/revoked"), "# c\nab\nnope\n").unwrap_err();
        assert!(err.to_string().starts_with("/x/revoked:3:"), "{err}");
    }
}
