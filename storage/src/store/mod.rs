//! The durable Raft store: [`open_store`] opens the key-value engine and returns the log store
//! and the state machine that share it.
//!
//! What is durable when: log entries, the vote and `last_purged` are flushed before openraft is
//! told they are saved; the state machine lives in memory and is made durable by snapshots
//! (plus the persisted `committed` log id, so a restarted node re-applies the log from its last
//! snapshot up to the committed index before it serves).

pub mod log_store;
pub mod state_machine;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::{ErrorSubject, ErrorVerb, StorageIOError};

pub use log_store::LogStore;
pub use state_machine::StateMachineStore;

use crate::kv::{Kv, KvError, SledKv};
use crate::types::{NodeId, RaftStorageError};

/// Failure to open or load the store.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The key-value engine could not be opened in this directory.
    #[error("opening the raft store in {path}: {source}")]
    Open {
        /// The data directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: KvError,
    },
    /// A key-value read or write failed.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A stored value could not be decoded.
    #[error("decoding the stored {what}: {source}")]
    Decode {
        /// Which value (e.g. "snapshot data", "log entry 42").
        what: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The blocking I/O task did not finish (runtime shutting down or task panicked).
    #[error("storage I/O task for {what} failed: {source}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl StorageError {
    /// Converts into openraft's storage error, naming the subject and verb that failed.
    pub(crate) fn into_raft(
        self,
        subject: ErrorSubject<NodeId>,
        verb: ErrorVerb,
    ) -> RaftStorageError {
        StorageIOError::new(subject, verb, &self).into()
    }
}

/// Opens (or creates) the sled store in `dir` and returns the log store and the state machine.
///
/// The state machine starts from the last persisted snapshot, if any; openraft then re-applies
/// the log after it up to the persisted committed index.
pub async fn open_store(dir: &Path) -> Result<(LogStore, StateMachineStore), StorageError> {
    let path = dir.to_path_buf();
    let kv = tokio::task::spawn_blocking(move || {
        SledKv::open(&path).map_err(|source| StorageError::Open { path, source })
    })
    .await
    .map_err(|source| StorageError::Task {
        what: "opening sled",
        source,
    })??;
    open_store_with(Arc::new(kv)).await
}

/// Like [`open_store`] on any [`Kv`] (e.g. [`MemKv`](crate::MemKv) for tests and benchmarks).
pub async fn open_store_with(
    kv: Arc<dyn Kv>,
) -> Result<(LogStore, StateMachineStore), StorageError> {
    let sm = StateMachineStore::load(kv.clone()).await?;
    Ok((LogStore::new(kv), sm))
}

/// Runs blocking key-value work (a flush is an fsync) off the async runtime's workers.
pub(crate) async fn blocking<T, F>(what: &'static str, f: F) -> Result<T, StorageError>
where
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| StorageError::Task { what, source })?
}

/// Encodes a value for storage.
pub(crate) fn encode<T: serde::Serialize>(what: &str, v: &T) -> Result<Vec<u8>, StorageError> {
    serde_json::to_vec(v).map_err(|source| StorageError::Decode {
        what: format!("{what} (encoding)"),
        source,
    })
}

/// Decodes a stored value.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    what: impl FnOnce() -> String,
    bytes: &[u8],
) -> Result<T, StorageError> {
    serde_json::from_slice(bytes).map_err(|source| StorageError::Decode {
        what: what(),
        source,
    })
}
