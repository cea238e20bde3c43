//! The Raft type configuration, declared once, and the aliases the rest of the workspace
//! imports so that nobody spells `openraft::X<NodeId, Node>` by hand.

use std::io::Cursor;

use crate::command::{Command, Response};

openraft::declare_raft_types!(
    /// Ephemera's Raft types: commands are [`Command`]s, answers are [`Response`]s, and a
    /// snapshot is one in-memory buffer of serialized cluster state (it is small: profiles and
    /// one aggregate record per node).
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A controller's Raft id.
pub type NodeId = u64;
/// A controller's address record in the membership config.
pub type Node = openraft::BasicNode;
/// The Raft handle of one controller.
pub type Raft = openraft::Raft<TypeConfig>;
/// One log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// Position of a log entry (term, leader, index).
pub type LogId = openraft::LogId<NodeId>;
/// A persisted vote.
pub type Vote = openraft::Vote<NodeId>;
/// A membership config.
pub type Membership = openraft::Membership<NodeId, Node>;
/// A membership config with the log id it was committed at.
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
/// Metadata of a snapshot.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
/// A snapshot with its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The error type openraft's storage traits return (distinct from this crate's
/// [`StorageError`](crate::StorageError), which `open_store` returns).
pub type RaftStorageError = openraft::StorageError<NodeId>;
