//! One controller's Raft member: the openraft instance over the sled store,
//! its gRPC transport, and [`RaftNode::write`], which commits a command here
//! when this controller leads and forwards it to the leader otherwise.
//!
//! - `network`: outgoing RPCs (openraft's network traits over gRPC).
//! - `service`: incoming RPCs (the `RaftService` server).

mod batch;
mod network;
mod service;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ephemera_proto::raft::raft_service_client::RaftServiceClient;
use ephemera_proto::raft::RaftPayload;
use ephemera_storage::{ClusterState, Command, Node, NodeId, Raft, Response};
use ephemera_trust::limits::RAFT_MAX_MESSAGE;
use openraft::error::{ClientWriteError, RaftError};

pub use network::GrpcNetwork;

use crate::channels::ChannelPool;

/// How long a write or read-index forwarded to the leader may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
pub use service::RaftRpc;

/// Why a command was not committed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// No leader is known yet (an election is under way).
    #[error("no Raft leader is known yet; retry shortly")]
    NoLeader,
    /// The leader could not be reached to forward the write.
    #[error("cannot forward the write to leader {leader} at {addr}: {reason}")]
    Forward {
        /// Leader's node id.
        leader: NodeId,
        /// Leader's address.
        addr: String,
        /// What failed.
        reason: String,
    },
    /// Raft itself failed (shut down, storage error).
    #[error("raft: {0}")]
    Raft(String),
}

/// Tunables for one member.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Election timeout range: [min, 2·min). A follower of a live leader
    /// also waits out the leader lease (2·min) first.
    pub election_timeout_min: Duration,
    /// Build a snapshot after this many applied logs.
    pub snapshot_logs: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            // openraft 0.9 lets a follower of a live leader campaign only
            // after the leader lease (= the maximum timeout, 300 ms) plus a
            // random timeout in [150, 300) ms: a dead leader is replaced
            // 450-600 ms after its last heartbeat (plus a vote), and a live
            // one would have to miss 9 heartbeats in a row to be challenged.
            heartbeat: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            snapshot_logs: 10_000,
        }
    }
}

/// A running Raft member and a read handle on its state machine.
#[derive(Clone)]
pub struct RaftNode {
    /// This member's id.
    pub id: NodeId,
    /// The openraft handle.
    pub raft: Raft,
    /// The applied cluster state (read-only for everyone but the state machine).
    pub state: Arc<RwLock<ClusterState>>,
    pool: ChannelPool,
    /// Queue of the group-commit writer (see `batch`).
    writes: tokio::sync::mpsc::Sender<batch::Pending>,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl RaftNode {
    /// Opens the store under `dir` and starts the member.
    pub async fn start(
        id: NodeId,
        dir: &Path,
        settings: &RaftSettings,
        pool: ChannelPool,
    ) -> anyhow::Result<RaftNode> {
        use anyhow::Context;
        let (log_store, sm_store) = ephemera_storage::open_store(dir)
            .await
            .with_context(|| format!("opening the Raft store in {}", dir.display()))?;
        let state = sm_store.state();
        let min = settings.election_timeout_min.as_millis() as u64;
        let config = openraft::Config {
            cluster_name: "ephemera".into(),
            heartbeat_interval: settings.heartbeat.as_millis() as u64,
            election_timeout_min: min,
            election_timeout_max: min * 2,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_logs),
            max_in_snapshot_log_to_keep: settings.snapshot_logs.min(1000),
            ..Default::default()
        };
        let config = Arc::new(config.validate().context("invalid Raft config")?);
        let raft = Raft::new(
            id,
            config,
            GrpcNetwork::new(pool.clone()),
            log_store,
            sm_store,
        )
        .await
        .context("starting Raft")?;
        let (writes, queue) = tokio::sync::mpsc::channel(4096);
        let proposer = Proposer {
            id,
            raft: raft.clone(),
            pool: pool.clone(),
        };
        // The writer ends when the last RaftNode (the last sender) is dropped.
        tokio::spawn(batch::run(queue, move |cmd| {
            let proposer = proposer.clone();
            async move { proposer.propose(cmd).await }
        }));
        Ok(RaftNode {
            id,
            raft,
            state,
            pool,
            writes,
        })
    }

    /// Makes this member the single voter of a new cluster, unless the store
    /// already holds a cluster (a restart).
    pub async fn initialize_single(&self, addr: &str) -> anyhow::Result<()> {
        self.initialize(BTreeMap::from([(self.id, addr.to_string())]))
            .await
    }

    /// Bootstraps a cluster of `members` (id → address), unless already initialized.
    pub async fn initialize(&self, members: BTreeMap<NodeId, String>) -> anyhow::Result<()> {
        if self.raft.is_initialized().await? {
            return Ok(());
        }
        let nodes: BTreeMap<NodeId, Node> = members
            .into_iter()
            .map(|(id, addr)| (id, Node { addr }))
            .collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            // Another member initialised first: that is fine.
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(anyhow::anyhow!("initializing the Raft cluster: {e}")),
        }
    }

    /// Waits until some member leads, up to `timeout`; returns the leader id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> anyhow::Result<NodeId> {
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader is elected")
            .await
            .map_err(|e| anyhow::anyhow!("no Raft leader within {timeout:?}: {e}"))?;
        metrics
            .current_leader
            .ok_or_else(|| anyhow::anyhow!("no Raft leader within {timeout:?}"))
    }

    /// The applied cluster state, for reading (a poisoned lock still reads:
    /// the state machine never leaves it half-written).
    pub fn read_state(&self) -> std::sync::RwLockReadGuard<'_, ClusterState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The current leader's id and address, if one is known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics().borrow().clone();
        let leader = metrics.current_leader?;
        let addr = metrics
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())?;
        Some((leader, addr))
    }

    /// Whether this member believes it leads (not linearizable; for housekeeping).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Commits `cmd` (forwarding to the leader if needed) and returns its
    /// response. Concurrent writes share Raft entries (group commit).
    pub async fn write(&self, cmd: Command) -> Result<Response, WriteError> {
        self.submit(cmd, false)
            .await?
            .await
            .map_err(|_| WriteError::Raft("the writer has stopped".into()))?
    }

    /// Queues `cmd` for the group-commit writer and returns where its
    /// response will arrive.
    /// A `lazy` command (nobody waits for it) may wait a few milliseconds
    /// for another command to share its Raft entry.
    pub async fn submit(
        &self,
        cmd: Command,
        lazy: bool,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Response, WriteError>>, WriteError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.writes
            .send(batch::Pending { cmd, lazy, reply })
            .await
            .map_err(|_| WriteError::Raft("the writer has stopped".into()))?;
        Ok(rx)
    }

    /// Commits `cmd` only while this member leads: never forwarded, never
    /// retried elsewhere. For decisions made from this member's own view
    /// (an agent it has not heard from), which must not be applied by a
    /// later leader once this one has been deposed; a deposed leader's
    /// pending entry is dropped when it steps down.
    pub async fn write_as_leader(&self, cmd: Command) -> Result<Response, WriteError> {
        match self.raft.client_write(cmd).await {
            Ok(reply) => Ok(reply.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(WriteError::NoLeader)
            }
            Err(e) => Err(WriteError::Raft(e.to_string())),
        }
    }

    /// Waits until this member has applied everything the leader had
    /// committed when the call started, so a read of the local state that
    /// follows is linearizable. On the leader this is openraft's
    /// `ensure_linearizable`; a follower asks the leader for that read index
    /// and waits for its own state machine to reach it.
    pub async fn ensure_fresh(&self, timeout: Duration) -> Result<(), WriteError> {
        let index = match self.raft.ensure_linearizable().await {
            Ok(_) => return Ok(()),
            Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(fwd))) => {
                let (leader, node) = match (fwd.leader_id, fwd.leader_node) {
                    (Some(id), Some(node)) => (id, node),
                    _ => return Err(WriteError::NoLeader),
                };
                self.read_index(leader, &node.addr).await?
            }
            Err(e) => return Err(WriteError::Raft(e.to_string())),
        };
        if let Some(index) = index {
            self.raft
                .wait(Some(timeout))
                .applied_index_at_least(Some(index), "a fresh read")
                .await
                .map_err(|e| WriteError::Raft(format!("waiting to apply log {index}: {e}")))?;
        }
        Ok(())
    }

    async fn read_index(&self, leader: NodeId, addr: &str) -> Result<Option<u64>, WriteError> {
        let fail = |reason: String| WriteError::Forward {
            leader,
            addr: addr.to_string(),
            reason,
        };
        let channel = self
            .pool
            .controller(addr, leader)
            .map_err(|e| fail(e.to_string()))?;
        let mut call = tonic::Request::new(RaftPayload { data: Vec::new() });
        call.set_timeout(FORWARD_TIMEOUT);
        let reply = RaftServiceClient::new(channel)
            .read_index(call)
            .await
            .map_err(|s| {
                self.pool.forget_after(addr, &s);
                fail(s.message().to_string())
            })?;
        type ReadResult = Result<
            Option<openraft::LogId<NodeId>>,
            RaftError<NodeId, openraft::error::CheckIsLeaderError<NodeId, Node>>,
        >;
        let result: ReadResult =
            serde_json::from_slice(&reply.into_inner().data).map_err(|e| fail(e.to_string()))?;
        match result {
            Ok(log_id) => Ok(log_id.map(|l| l.index)),
            Err(RaftError::APIError(_)) => Err(WriteError::NoLeader),
            Err(e) => Err(WriteError::Raft(e.to_string())),
        }
    }

    /// Adds controller `id` at `addr` as a voter: first as a learner that
    /// catches up (by snapshot if the log was purged), then promoted. Only the
    /// leader can do this.
    pub async fn add_member(
        &self,
        id: NodeId,
        addr: &str,
    ) -> Result<(Vec<NodeId>, Vec<NodeId>), WriteError> {
        let node = Node {
            addr: addr.to_string(),
        };
        self.raft
            .add_learner(id, node, true)
            .await
            .map_err(|e| self.membership_error(e))?;
        let mut voters = self.voters();
        voters.insert(id);
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(self.membership())
    }

    /// Removes controller `id` from the voters (and the cluster). Only the
    /// leader can do this; removing the leader makes it step down.
    pub async fn remove_member(
        &self,
        id: NodeId,
    ) -> Result<(Vec<NodeId>, Vec<NodeId>), WriteError> {
        let mut voters = self.voters();
        if !voters.remove(&id) {
            return Err(WriteError::Raft(format!("controller {id} is not a voter")));
        }
        if voters.is_empty() {
            return Err(WriteError::Raft("cannot remove the last voter".into()));
        }
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(self.membership())
    }

    fn voters(&self) -> std::collections::BTreeSet<NodeId> {
        let metrics = self.raft.metrics().borrow().clone();
        metrics.membership_config.membership().voter_ids().collect()
    }

    /// Current voters and learners.
    pub fn membership(&self) -> (Vec<NodeId>, Vec<NodeId>) {
        let metrics = self.raft.metrics().borrow().clone();
        let m = metrics.membership_config.membership();
        (m.voter_ids().collect(), m.learner_ids().collect())
    }

    fn membership_error(&self, e: RaftError<NodeId, ClientWriteError<NodeId, Node>>) -> WriteError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(fwd)) => match fwd.leader_node {
                Some(node) => WriteError::Forward {
                    leader: fwd.leader_id.unwrap_or(0),
                    addr: node.addr,
                    reason: "membership changes are made by the leader".into(),
                },
                None => WriteError::NoLeader,
            },
            other => WriteError::Raft(other.to_string()),
        }
    }

    /// Stops the member.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// The half of a member that proposes commands: what the group-commit writer
/// needs, without holding the writer's own queue open.
#[derive(Clone)]
struct Proposer {
    id: NodeId,
    raft: Raft,
    pool: ChannelPool,
}

impl Proposer {
    /// Proposes one command (possibly a batch) now, forwarding to the leader
    /// when this member does not lead.
    async fn propose(&self, cmd: Command) -> Result<Response, WriteError> {
        // A follower that knows its leader forwards at once, without a
        // refusal from its own Raft core first. If it is wrong (it has just
        // been elected, or the leader moved), the leader's refusal comes back
        // as `NoLeader` and the caller retries.
        if let Some((leader, addr)) = self.known_other_leader() {
            return self.forward(leader, &addr, &cmd).await;
        }
        match self.raft.client_write(cmd.clone()).await {
            Ok(reply) => Ok(reply.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(fwd))) => {
                let (leader, node) = match (fwd.leader_id, fwd.leader_node) {
                    (Some(id), Some(node)) => (id, node),
                    _ => return Err(WriteError::NoLeader),
                };
                self.forward(leader, &node.addr, &cmd).await
            }
            Err(e) => Err(WriteError::Raft(e.to_string())),
        }
    }

    /// The leader this member follows, when it is another member.
    fn known_other_leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let leader = m.current_leader.filter(|l| *l != self.id)?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// Resolves once this member no longer takes `leader` for the leader.
    async fn leader_changes_from(&self, leader: NodeId) {
        let mut metrics = self.raft.metrics();
        while metrics.borrow_and_update().current_leader == Some(leader) {
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        addr: &str,
        cmd: &Command,
    ) -> Result<Response, WriteError> {
        let fail = |reason: String| WriteError::Forward {
            leader,
            addr: addr.to_string(),
            reason,
        };
        let data = serde_json::to_vec(cmd).map_err(|e| fail(e.to_string()))?;
        let channel = self
            .pool
            .controller(addr, leader)
            .map_err(|e| fail(e.to_string()))?;
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(RAFT_MAX_MESSAGE)
            .max_encoding_message_size(RAFT_MAX_MESSAGE);
        // Bounded: a leader that died mid-call must not hold this batch
        // (and the writes queued behind it) until TCP notices, so the call
        // ends when its time is up or as soon as this member stops
        // believing `leader` leads. Commands are idempotent by invocation
        // id, so the caller's retry is safe even if this one did commit.
        let mut call = tonic::Request::new(RaftPayload { data });
        call.set_timeout(FORWARD_TIMEOUT);
        let reply = tokio::select! {
            reply = client.client_write(call) => reply.map_err(|s| {
                self.pool.forget_after(addr, &s);
                fail(s.message().to_string())
            })?,
            () = self.leader_changes_from(leader) => return Err(WriteError::NoLeader),
        };
        let result: Result<Response, RaftError<NodeId, ClientWriteError<NodeId, Node>>> =
            serde_json::from_slice(&reply.into_inner().data).map_err(|e| fail(e.to_string()))?;
        match result {
            Ok(resp) => Ok(resp),
            // Leadership moved again while forwarding: the caller retries.
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                Err(WriteError::NoLeader)
            }
            Err(e) => Err(WriteError::Raft(e.to_string())),
        }
    }
}
