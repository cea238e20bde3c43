//! The persisted ledger: each tenant's pool (limits and loans) as JSON under
//! `<data_dir>/ledger/`, rewritten atomically after every change, so a
//! restarted agent knows every limit it had set and which memory belongs to
//! whom.
//!
//! With the process runtime an instance never outlives its agent (the proxy
//! exits when the agent's socket closes), so at start-up every entry of an old
//! ledger is a dead instance: the agent terminates each one in the pool, which
//! rolls every loan back, and logs what it restored.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::pool::Pool;

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// An I/O error on a ledger file.
    #[error("ledger {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file that is not a ledger.
    #[error("ledger {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
}

/// Serialises a pool.
pub fn encode(pool: &Pool) -> String {
    // A pool is maps, strings and numbers: serialising it cannot fail.
    serde_json::to_string_pretty(pool).unwrap_or_default()
}

/// Parses a serialised pool.
pub fn decode(text: &str) -> Result<Pool, serde_json::Error> {
    serde_json::from_str(text)
}

/// One tenant's ledger file.
#[derive(Debug, Clone)]
pub struct Ledger {
    /// `<dir>/<hex(tenant)>.json`.
    path: PathBuf,
}

impl Ledger {
    /// The ledger of `tenant` in `dir`.
    pub fn new(dir: &Path, tenant: &str) -> Ledger {
        Ledger {
            path: dir.join(format!("{}.json", hex::encode(tenant))),
        }
    }

    /// Its file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `pool` atomically (temporary file + rename).
    pub fn save(&self, pool: &Pool) -> Result<(), LedgerError> {
        let io = |source| LedgerError::Io {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        fs::write(&tmp, encode(pool)).map_err(io)?;
        fs::rename(&tmp, &self.path).map_err(io)
    }

    /// Reads the pool, `None` if there is no ledger.
    pub fn load(&self) -> Result<Option<Pool>, LedgerError> {
        match fs::read_to_string(&self.path) {
            Ok(text) => decode(&text)
                .map(Some)
                .map_err(|source| LedgerError::Corrupt {
                    path: self.path.clone(),
                    source,
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LedgerError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Every tenant ledger in `dir`, as (tenant, ledger).
    pub fn all(dir: &Path) -> Vec<(String, Ledger)> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let stem = name.strip_suffix(".json")?;
                let tenant = String::from_utf8(hex::decode(stem).ok()?).ok()?;
                Some((tenant, Ledger { path: e.path() }))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SharingScope;
    use crate::pool::{Member, Profile};

    #[test]
    fn save_load_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let mut pool = Pool::new(SharingScope::Tenant);
        pool.init(
            "a",
            Member {
                function: "f".into(),
                workflow: String::new(),
                initial: 100,
                profile: Some(Profile { u_max: 1, f_max: 2 }),
            },
        );
        let l = Ledger::new(dir.path(), "acme/x");
        assert!(l.load().unwrap().is_none());
        l.save(&pool).unwrap();
        assert_eq!(l.load().unwrap().unwrap(), pool);
        let all = Ledger::all(dir.path());
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, "acme/x");
    }
}
