//! The state machine: [`ClusterState`] in memory, made durable by snapshots in the
//! `snapshot` tree.
//!
//! `apply` never touches the disk, which keeps committed placements fast; a snapshot is the
//! whole state serialized, persisted (and flushed) before openraft may purge the logs it covers.
//! On open, the last snapshot is loaded and openraft re-applies the log after it.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::{blocking, decode, encode, StorageError};
use crate::command::Response;
use crate::kv::{Kv, KvOp, Tree};
use crate::state::ClusterState;
use crate::types::{
    Entry, LogId, RaftStorageError, Snapshot, SnapshotMeta, StoredMembership, TypeConfig,
};

const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// Raft bookkeeping that must change atomically with [`ClusterState`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Applied {
    /// The last log id applied to the state.
    last_applied: Option<LogId>,
    /// The last membership config applied.
    last_membership: StoredMembership,
}

/// What a snapshot's data holds.
#[derive(Serialize)]
struct SnapshotPayloadRef<'a> {
    /// Raft bookkeeping at the snapshot (also in the snapshot's meta).
    applied: &'a Applied,
    /// The cluster state at the snapshot.
    state: &'a ClusterState,
}

/// Owned form of [`SnapshotPayloadRef`], for decoding.
#[derive(Deserialize)]
struct SnapshotPayload {
    /// Raft bookkeeping; openraft's meta is authoritative, this copy is checked against it.
    applied: Applied,
    /// The cluster state.
    state: ClusterState,
}

/// The state machine; clones share the same state (a clone is the snapshot builder).
///
/// Lock order: `state` before `applied`. `apply` holds both for a whole batch, so a snapshot
/// (which takes both for reading) always sees a state that matches its `last_applied`.
#[derive(Clone, Debug)]
pub struct StateMachineStore {
    /// The engine holding the `snapshot` tree.
    kv: Arc<dyn Kv>,
    /// The cluster state; the controller reads it through [`StateMachineStore::state`].
    state: Arc<RwLock<ClusterState>>,
    /// Last applied log id and membership.
    applied: Arc<Mutex<Applied>>,
    /// Makes snapshot ids unique within this process.
    snapshot_seq: Arc<AtomicU64>,
    /// Serializes snapshot writes. openraft builds snapshots on a spawned task, so a build that
    /// started before an `install_snapshot` can finish after it; the write must then not
    /// replace the newer installed snapshot (its logs may be purged already).
    persist_lock: Arc<Mutex<()>>,
}

fn read(l: &RwLock<ClusterState>) -> RwLockReadGuard<'_, ClusterState> {
    // `ClusterState::apply` does not panic by design; if it ever did, the state is still a
    // consistent value of the type, and refusing to serve would not make it better.
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write(l: &RwLock<ClusterState>) -> RwLockWriteGuard<'_, ClusterState> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock(l: &Mutex<Applied>) -> MutexGuard<'_, Applied> {
    l.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StateMachineStore {
    /// Builds the state machine from the last persisted snapshot in `kv` (empty if none).
    pub(crate) async fn load(kv: Arc<dyn Kv>) -> Result<Self, StorageError> {
        let sm = StateMachineStore {
            kv,
            state: Arc::default(),
            applied: Arc::default(),
            snapshot_seq: Arc::default(),
            persist_lock: Arc::default(),
        };
        if let Some((meta, data)) = sm.read_snapshot()? {
            let payload: SnapshotPayload = decode(
                || format!("snapshot {} data ({} bytes)", meta.snapshot_id, data.len()),
                &data,
            )?;
            *write(&sm.state) = payload.state;
            *lock(&sm.applied) = Applied {
                last_applied: meta.last_log_id,
                last_membership: meta.last_membership,
            };
            tracing::info!(
                snapshot = %meta.snapshot_id,
                "state machine loaded from the persisted snapshot"
            );
        }
        Ok(sm)
    }

    /// Shared read handle on the cluster state, for status and reads. Hold the read lock only
    /// briefly: `apply` waits for it.
    pub fn state(&self) -> Arc<RwLock<ClusterState>> {
        self.state.clone()
    }

    /// The last log id applied to the state.
    pub fn last_applied(&self) -> Option<LogId> {
        lock(&self.applied).last_applied
    }

    fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        let Some(meta) = self.kv.get(Tree::Snapshot, KEY_SNAPSHOT_META)? else {
            return Ok(None);
        };
        let meta: SnapshotMeta = decode(|| "snapshot meta".to_string(), &meta)?;
        let data = self
            .kv
            .get(Tree::Snapshot, KEY_SNAPSHOT_DATA)?
            .unwrap_or_default();
        Ok(Some((meta, data)))
    }

    /// Persists `meta` and `data` atomically and flushes, unless the persisted snapshot is
    /// already newer (then this one is dropped: see `persist_lock`).
    async fn persist_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        let meta_bytes = encode(&format!("snapshot {} meta", meta.snapshot_id), meta)?;
        let kv = self.kv.clone();
        let persist_lock = self.persist_lock.clone();
        let (id, last_log_id) = (meta.snapshot_id.clone(), meta.last_log_id);
        blocking("persisting a snapshot", move || {
            let _serialized = persist_lock.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(current) = kv.get(Tree::Snapshot, KEY_SNAPSHOT_META)? {
                let current: SnapshotMeta = decode(|| "snapshot meta".to_string(), &current)?;
                if current.last_log_id > last_log_id {
                    tracing::info!(
                        snapshot = %id,
                        newer = %current.snapshot_id,
                        "not persisting a snapshot older than the persisted one"
                    );
                    return Ok(());
                }
            }
            kv.batch(
                Tree::Snapshot,
                vec![
                    KvOp::Insert(KEY_SNAPSHOT_META.to_vec(), meta_bytes),
                    KvOp::Insert(KEY_SNAPSHOT_DATA.to_vec(), data),
                ],
            )?;
            kv.flush()?;
            Ok(())
        })
        .await
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, RaftStorageError> {
        let err = |e: StorageError| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Write);
        let (data, applied) = {
            let state = read(&self.state);
            let applied = lock(&self.applied);
            let data = encode(
                "snapshot data",
                &SnapshotPayloadRef {
                    applied: &applied,
                    state: &state,
                },
            )
            .map_err(err)?;
            (data, applied.clone())
        };
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match &applied.last_applied {
            Some(last) => format!("{}-{}-{seq}", last.leader_id, last.index),
            None => format!("--{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.last_membership,
            snapshot_id,
        };
        self.persist_snapshot(&meta, data.clone())
            .await
            .map_err(err)?;
        tracing::debug!(snapshot = %meta.snapshot_id, bytes = data.len(), "snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), RaftStorageError> {
        let applied = lock(&self.applied);
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, RaftStorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = write(&self.state);
        let mut applied = lock(&self.applied);
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        for entry in entries {
            applied.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::Ok,
                EntryPayload::Normal(cmd) => state.apply(&cmd),
                EntryPayload::Membership(m) => {
                    applied.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    Response::Ok
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, RaftStorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), RaftStorageError> {
        let err = |e: StorageError| {
            e.into_raft(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
            )
        };
        let data = snapshot.into_inner();
        let payload: SnapshotPayload = decode(
            || format!("snapshot {} data ({} bytes)", meta.snapshot_id, data.len()),
            &data,
        )
        .map_err(err)?;
        // Durable first: once the state is replaced, openraft may purge the logs it covers.
        self.persist_snapshot(meta, data).await.map_err(err)?;
        let mut state = write(&self.state);
        let mut applied = lock(&self.applied);
        *state = payload.state;
        // The meta is authoritative; the payload's copy is the same for snapshots we built.
        if payload.applied.last_applied != meta.last_log_id {
            tracing::warn!(
                snapshot = %meta.snapshot_id,
                data_last_applied = ?payload.applied.last_applied,
                "installed snapshot's data and meta disagree on the last applied log id"
            );
        }
        *applied = Applied {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
        };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, RaftStorageError> {
        let snapshot = self
            .read_snapshot()
            .map_err(|e| e.into_raft(ErrorSubject::Snapshot(None), ErrorVerb::Read))?;
        Ok(snapshot.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
