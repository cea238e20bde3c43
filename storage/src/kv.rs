//! The crate's own key-value seam in front of sled.
//!
//! sled 0.34 has known space-amplification problems, so the Raft store talks to this small
//! trait and not to sled: replacing the engine means one new `impl Kv`. The trait is
//! object-safe and synchronous (callers move blocking calls off the async runtime), and knows
//! only three fixed trees.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The trees the store uses; each is an ordered byte-key map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tree {
    /// Log entries, key = index as big-endian u64.
    Logs,
    /// Vote, last purged log id, committed log id.
    Meta,
    /// The last snapshot: its meta and its data.
    Snapshot,
}

impl Tree {
    /// All trees.
    pub const ALL: [Tree; 3] = [Tree::Logs, Tree::Meta, Tree::Snapshot];

    /// The tree's on-disk name.
    pub fn name(self) -> &'static str {
        match self {
            Tree::Logs => "logs",
            Tree::Meta => "meta",
            Tree::Snapshot => "snapshot",
        }
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One write of an atomic batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// Set `key` to `value`.
    Insert(Vec<u8>, Vec<u8>),
    /// Delete `key` (no-op if absent).
    Remove(Vec<u8>),
}

/// A key-value engine failure, naming the operation and tree.
#[derive(Debug, thiserror::Error)]
#[error("kv {op} on tree {tree}: {source}")]
pub struct KvError {
    /// What was being done (get, insert, range, batch, flush, open …).
    pub op: &'static str,
    /// Which tree.
    pub tree: Tree,
    /// The engine's error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl KvError {
    fn new(
        op: &'static str,
        tree: Tree,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        KvError {
            op,
            tree,
            source: source.into(),
        }
    }
}

/// An owned key range.
pub type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// A key and its value.
pub type KvPair = (Vec<u8>, Vec<u8>);

/// The in-memory engine's trees, indexed like [`Tree::ALL`].
type MemTrees = [BTreeMap<Vec<u8>, Vec<u8>>; 3];

/// An ordered, durable key-value store with a few named trees.
///
/// Writes become visible to reads at once; they are durable only after [`Kv::flush`].
/// Each batch is atomic, and writes are durable in the order they were made.
pub trait Kv: Send + Sync + fmt::Debug + 'static {
    /// Reads one key.
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// Applies `ops` atomically, in order.
    fn batch(&self, tree: Tree, ops: Vec<KvOp>) -> Result<(), KvError>;
    /// All pairs in `range`, in key order.
    fn range(&self, tree: Tree, range: KeyRange) -> Result<Vec<KvPair>, KvError>;
    /// The keys in `range`, in key order (no values copied).
    fn keys(&self, tree: Tree, range: KeyRange) -> Result<Vec<Vec<u8>>, KvError>;
    /// The pair with the greatest key.
    fn last(&self, tree: Tree) -> Result<Option<KvPair>, KvError>;
    /// Makes every earlier write durable.
    fn flush(&self) -> Result<(), KvError>;

    /// Sets one key.
    fn insert(&self, tree: Tree, key: &[u8], value: Vec<u8>) -> Result<(), KvError> {
        self.batch(tree, vec![KvOp::Insert(key.to_vec(), value)])
    }

    /// Deletes every key in `range` atomically.
    fn remove_range(&self, tree: Tree, range: KeyRange) -> Result<(), KvError> {
        let ops = self
            .keys(tree, range)?
            .into_iter()
            .map(KvOp::Remove)
            .collect::<Vec<_>>();
        if ops.is_empty() {
            return Ok(());
        }
        self.batch(tree, ops)
    }
}

/// [`Kv`] on a sled database directory.
#[derive(Clone)]
pub struct SledKv {
    /// Where the database lives (for messages).
    path: PathBuf,
    /// The database; `flush` on it covers every tree.
    db: sled::Db,
    /// Open tree handles, indexed like [`Tree::ALL`].
    trees: [sled::Tree; 3],
}

impl fmt::Debug for SledKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledKv").field("path", &self.path).finish()
    }
}

impl SledKv {
    /// How long [`SledKv::open`] waits for the directory's lock.
    pub const LOCK_WAIT: Duration = Duration::from_secs(10);

    /// Opens (or creates) the database in `dir`, blocking.
    ///
    /// sled holds an exclusive file lock until the last handle of a database is dropped, and a
    /// Raft node that was just shut down may still be dropping its store on another task. So a
    /// locked directory is retried for up to [`SledKv::LOCK_WAIT`] before it is an error.
    pub fn open(dir: &Path) -> Result<Self, KvError> {
        let deadline = Instant::now() + Self::LOCK_WAIT;
        let db = loop {
            // sled's default page cache may grow to 1 GiB; a controller's working set (recent
            // log entries, one snapshot) is far smaller.
            match sled::Config::new()
                .path(dir)
                .cache_capacity(128 << 20)
                .open()
            {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) if is_lock_error(&e) => {
                    return Err(KvError::new(
                        "open",
                        Tree::Meta,
                        format!(
                            "{} is still locked after {:?} (another process, or a store of \
                             this process not yet dropped): {e}",
                            dir.display(),
                            Self::LOCK_WAIT
                        ),
                    ))
                }
                Err(e) => {
                    return Err(KvError::new(
                        "open",
                        Tree::Meta,
                        format!("{}: {e}", dir.display()),
                    ))
                }
            }
        };
        let open = |t: Tree| {
            db.open_tree(t.name())
                .map_err(|e| KvError::new("open", t, e))
        };
        let trees = [open(Tree::Logs)?, open(Tree::Meta)?, open(Tree::Snapshot)?];
        Ok(SledKv {
            path: dir.to_path_buf(),
            db,
            trees,
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[tree as usize]
    }
}

impl Kv for SledKv {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        self.tree(tree)
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| KvError::new("get", tree, e))
    }

    fn batch(&self, tree: Tree, ops: Vec<KvOp>) -> Result<(), KvError> {
        let mut batch = sled::Batch::default();
        for op in ops {
            match op {
                KvOp::Insert(k, v) => batch.insert(k, v),
                KvOp::Remove(k) => batch.remove(k),
            }
        }
        self.tree(tree)
            .apply_batch(batch)
            .map_err(|e| KvError::new("batch", tree, e))
    }

    fn range(&self, tree: Tree, range: KeyRange) -> Result<Vec<KvPair>, KvError> {
        self.tree(tree)
            .range::<Vec<u8>, _>(range)
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| KvError::new("range", tree, e))
            })
            .collect()
    }

    fn keys(&self, tree: Tree, range: KeyRange) -> Result<Vec<Vec<u8>>, KvError> {
        self.tree(tree)
            .range::<Vec<u8>, _>(range)
            .keys()
            .map(|r| {
                r.map(|k| k.to_vec())
                    .map_err(|e| KvError::new("keys", tree, e))
            })
            .collect()
    }

    fn last(&self, tree: Tree) -> Result<Option<KvPair>, KvError> {
        self.tree(tree)
            .last()
            .map(|o| o.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .map_err(|e| KvError::new("last", tree, e))
    }

    fn flush(&self) -> Result<(), KvError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| KvError::new("flush", Tree::Logs, e))
    }
}

/// sled reports a held directory lock only through its message.
fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

/// [`Kv`] in memory: for tests and benchmarks that must not touch a disk. `flush` is a no-op,
/// so nothing survives the process. Clones share the data.
#[derive(Clone, Debug, Default)]
pub struct MemKv {
    /// One ordered map per tree, indexed like [`Tree::ALL`].
    trees: Arc<Mutex<MemTrees>>,
}

impl MemKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut MemTrees) -> R) -> R {
        // A panic while holding the lock cannot leave a map half-updated (every mutation is
        // one std call), so a poisoned lock is safe to reuse.
        let mut guard = self.trees.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }
}

impl Kv for MemKv {
    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.with(|t| t[tree as usize].get(key).cloned()))
    }

    fn batch(&self, tree: Tree, ops: Vec<KvOp>) -> Result<(), KvError> {
        self.with(|t| {
            let map = &mut t[tree as usize];
            for op in ops {
                match op {
                    KvOp::Insert(k, v) => {
                        map.insert(k, v);
                    }
                    KvOp::Remove(k) => {
                        map.remove(&k);
                    }
                }
            }
        });
        Ok(())
    }

    fn range(&self, tree: Tree, range: KeyRange) -> Result<Vec<KvPair>, KvError> {
        if is_empty_range(&range) {
            return Ok(Vec::new());
        }
        Ok(self.with(|t| {
            t[tree as usize]
                .range::<Vec<u8>, _>(range)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }

    fn keys(&self, tree: Tree, range: KeyRange) -> Result<Vec<Vec<u8>>, KvError> {
        if is_empty_range(&range) {
            return Ok(Vec::new());
        }
        Ok(self.with(|t| {
            t[tree as usize]
                .range::<Vec<u8>, _>(range)
                .map(|(k, _)| k.clone())
                .collect()
        }))
    }

    fn last(&self, tree: Tree) -> Result<Option<KvPair>, KvError> {
        Ok(self.with(|t| {
            t[tree as usize]
                .last_key_value()
                .map(|(k, v)| (k.clone(), v.clone()))
        }))
    }

    fn flush(&self) -> Result<(), KvError> {
        Ok(())
    }
}

/// True if `range` can hold no key. `BTreeMap::range` panics on such ranges; sled does not.
fn is_empty_range(range: &KeyRange) -> bool {
    match range {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        _ => false,
    }
}
