//! The Raft log and vote on the [`Kv`] trees `logs` and `meta`.
//!
//! Every method that openraft requires to be durable (vote, appended entries, truncation,
//! `last_purged`) flushes before it reports success. Writes are issued in openraft's order and
//! the engine makes them durable in that order, so a crash leaves a prefix, never a hole.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader};

use super::{blocking, decode, encode, StorageError};
use crate::kv::{KeyRange, Kv, KvOp, Tree};
use crate::types::{Entry, LogId, RaftStorageError, TypeConfig, Vote};

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// The log store; clones share the same engine (a clone is the log reader).
#[derive(Clone, Debug)]
pub struct LogStore {
    /// The engine holding the `logs` and `meta` trees.
    kv: Arc<dyn Kv>,
}

/// Big-endian, so that byte order is index order.
fn index_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

/// The key range of log indexes `[start, end)`; `end = None` means unbounded.
fn index_range(start: u64, end: Option<u64>) -> KeyRange {
    (
        Bound::Included(index_key(start)),
        end.map_or(Bound::Unbounded, |e| Bound::Excluded(index_key(e))),
    )
}

impl LogStore {
    pub(crate) fn new(kv: Arc<dyn Kv>) -> Self {
        LogStore { kv }
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &'static [u8],
    ) -> Result<Option<T>, StorageError> {
        match self.kv.get(Tree::Meta, key)? {
            None => Ok(None),
            Some(bytes) => decode(|| String::from_utf8_lossy(key).into_owned(), &bytes).map(Some),
        }
    }

    /// Writes a meta value and, if `durable`, flushes before returning.
    async fn write_meta<T: serde::Serialize>(
        &self,
        key: &'static [u8],
        value: &T,
        durable: bool,
    ) -> Result<(), StorageError> {
        let bytes = encode(&String::from_utf8_lossy(key), value)?;
        self.kv.insert(Tree::Meta, key, bytes)?;
        if durable {
            self.flush("flushing meta").await?;
        }
        Ok(())
    }

    async fn flush(&self, what: &'static str) -> Result<(), StorageError> {
        let kv = self.kv.clone();
        blocking(what, move || kv.flush().map_err(StorageError::from)).await
    }

    fn entries(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        self.kv
            .range(Tree::Logs, index_range(start, end))?
            .into_iter()
            .map(|(k, v)| decode(|| format!("log entry with key {k:02x?}"), &v))
            .collect()
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        match self.kv.last(Tree::Logs)? {
            None => Ok(None),
            Some((k, v)) => decode(|| format!("last log entry (key {k:02x?})"), &v).map(Some),
        }
    }
}

/// `[start, end)` of a `RangeBounds<u64>`, `end = None` for unbounded; `None` if empty.
fn to_half_open<RB: RangeBounds<u64>>(range: &RB) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    Some((start, end))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, RaftStorageError> {
        let Some((start, end)) = to_half_open(&range) else {
            return Ok(Vec::new());
        };
        self.entries(start, end)
            .map_err(|e| e.into_raft(ErrorSubject::Logs, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let err = |e: StorageError| e.into_raft(ErrorSubject::Logs, ErrorVerb::Read);
        let last_purged: Option<LogId> = self.read_meta(KEY_LAST_PURGED).map_err(err)?;
        let last = self.last_entry().map_err(err)?.map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), RaftStorageError> {
        self.write_meta(KEY_VOTE, vote, true)
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, RaftStorageError> {
        self.read_meta(KEY_VOTE)
            .map_err(|e| e.into_raft(ErrorSubject::Vote, ErrorVerb::Read))
    }

    /// Not flushed on its own: it is a hint for restart, and the next append's flush (which
    /// covers every tree) persists it. Losing it only means re-learning the commit index from
    /// the leader.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), RaftStorageError> {
        self.write_meta(KEY_COMMITTED, &committed, false)
            .await
            .map_err(|e| e.into_raft(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, RaftStorageError> {
        self.read_meta::<Option<LogId>>(KEY_COMMITTED)
            .map(Option::flatten)
            .map_err(|e| e.into_raft(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let err = |e: StorageError| e.into_raft(ErrorSubject::Logs, ErrorVerb::Write);
        let mut ops = Vec::new();
        for entry in entries {
            let value = encode(&format!("log entry {}", entry.log_id), &entry).map_err(err)?;
            ops.push(KvOp::Insert(index_key(entry.log_id.index), value));
        }
        self.kv.batch(Tree::Logs, ops).map_err(|e| err(e.into()))?;
        // Readable now; report durability only once flushed, as openraft requires.
        match self.flush("flushing appended log entries").await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(err(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let err = |e: StorageError| e.into_raft(ErrorSubject::Log(log_id), ErrorVerb::Delete);
        self.kv
            .remove_range(Tree::Logs, index_range(log_id.index, None))
            .map_err(|e| err(e.into()))?;
        self.flush("flushing log truncation").await.map_err(err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), RaftStorageError> {
        let err = |e: StorageError| e.into_raft(ErrorSubject::Log(log_id), ErrorVerb::Delete);
        // Record the purge point durably first: entries at or below it must never be read
        // again, even if a crash leaves some of them on disk.
        self.write_meta(KEY_LAST_PURGED, &log_id, true)
            .await
            .map_err(err)?;
        let end = log_id.index.checked_add(1);
        self.kv
            .remove_range(Tree::Logs, index_range(0, end))
            .map_err(|e| err(e.into()))
    }
}
