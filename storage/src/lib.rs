//! `ephemera-storage` owns the controllers' replicated state: the openraft type config, the
//! commands of the Raft log, the cluster state they change (function profiles, one
//! `NodeState` aggregate per node, active tasks), the placement policies that run inside
//! `apply`, and the durable log store and state machine behind openraft's storage-v2 traits.
//! It does no networking and no serving: the control plane wires [`Raft`] to gRPC and reads
//! [`StateMachineStore::state`].
//!
//! Layout:
//! - `types`: the `TypeConfig` declared once, with aliases (`Raft`, `Entry`, `LogId`, …).
//! - `command`: [`Command`] and [`Response`], what the log carries and what `apply` answers.
//! - `state`: [`ClusterState`] and [`ClusterState::apply`], pure and deterministic.
//! - `policy`: [`Policy`], the three placement policies.
//! - `b64`: base64 serde form for code bytes, so log entries and snapshots stay compact.
//! - `kv`: [`Kv`], the crate's seam in front of sled ([`SledKv`], and [`MemKv`] for tests).
//! - `store`: [`open_store`]; `store::log_store` ([`LogStore`]) and `store::state_machine`
//!   ([`StateMachineStore`]).

mod b64;
mod command;
mod kv;
mod policy;
mod state;
mod store;
mod types;

pub use command::{Command, Response};
pub use kv::{KeyRange, Kv, KvError, KvOp, KvPair, MemKv, SledKv, Tree};
pub use policy::{ParsePolicyError, Policy, POLICY_NAMES};
pub use state::{
    function_key, ClusterState, CodeFileRecord, FunctionRecord, NodeState, Profile, Quota, Task,
    TenantRecord, TenantUsage, COMPLETED_IDS_KEPT, MAX_MEMORY_BYTES,
};
pub use store::{open_store, open_store_with, LogStore, StateMachineStore, StorageError};
pub use types::{
    Entry, LogId, Membership, Node, NodeId, Raft, RaftStorageError, Snapshot, SnapshotMeta,
    StoredMembership, TypeConfig, Vote,
};
