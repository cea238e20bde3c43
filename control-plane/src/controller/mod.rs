//! The controller's behaviour behind the gRPC API; `api.rs` only
//! authenticates and translates. One file per job:
//!
//! - [`deploy`](Controller::deploy): validating and registering a function.
//! - `profiler`: trial runs on an agent; their maxima become the profile.
//! - `invoke`: place through Raft, run on the chosen agent, release.
//! - `nodes`: agents registering and heartbeating.
//! - `status`: nodes, functions and every agent's instances.
//! - `error`: [`ApiError`], one variant per failure a caller acts on.

mod background;
mod deploy;
mod error;
mod invoke;
mod nodes;
mod profiler;
mod status;

use std::sync::Arc;
use std::time::Duration;

use ephemera_proto::v1 as pb;
use ephemera_storage::{Command, FunctionRecord, Policy, Quota, Response};

pub use background::Background;
pub use deploy::{
    DEFAULT_TIMEOUT_MS, MAX_CODE_BYTES, MAX_FUNCTION_MEMORY, MAX_PROFILE_INPUTS, MAX_TIMEOUT_MS,
    MIN_FUNCTION_MEMORY,
};
pub use error::ApiError;

use crate::channels::ChannelPool;
use crate::convert;
use crate::leases::Leases;
use crate::liveness::Liveness;
use crate::raft::{RaftNode, WriteError};

/// How long a write waits for a leader before giving up.
const WRITE_RETRY_FOR: Duration = Duration::from_secs(15);

/// The controller: a Raft member plus the logic of each API call.
#[derive(Debug)]
pub struct Controller {
    /// This controller's Raft member.
    pub node: RaftNode,
    /// Placement policy written into every `Schedule` command.
    pub policy: Policy,
    /// Channels to agents (and peers).
    agents: ChannelPool,
    /// Agents' heartbeats, tracked by the leader.
    pub liveness: Arc<Liveness>,
    /// Placement leases, renewed by agents' heartbeats.
    pub leases: Arc<Leases>,
    /// Releases and profiles committing after their reply (`background`).
    pub background: Arc<Background>,
    /// Commit the release before the reply, as before `background` existed:
    /// only for interleaved A/B runs of `ephemera bench invoke`
    /// (environment [`INLINE_RELEASE_ENV`] set to `1`).
    inline_release: bool,
}

/// Set to `1` in a controller's environment: releases commit before the
/// reply (the A side of `ephemera bench invoke --inline-release`).
pub const INLINE_RELEASE_ENV: &str = "EPHEMERA_BENCH_INLINE_RELEASE";

impl Controller {
    /// A controller over `node`, placing with `policy`.
    pub fn new(
        node: RaftNode,
        policy: Policy,
        agents: ChannelPool,
        liveness: Arc<Liveness>,
        leases: Arc<Leases>,
    ) -> Self {
        Controller {
            node,
            policy,
            agents,
            liveness,
            leases,
            background: Arc::default(),
            inline_release: std::env::var(INLINE_RELEASE_ENV).is_ok_and(|v| v == "1"),
        }
    }

    /// How this controller's listener and connections are protected.
    pub fn security(&self) -> &ephemera_trust::Security {
        self.agents.security()
    }

    /// Commits a command, retrying while a leader is being elected.
    pub async fn write(&self, cmd: Command) -> Result<Response, ApiError> {
        write_retrying(&self.node, cmd).await
    }

    /// Waits (bounded) for this controller's background writes issued so
    /// far, so that a read that follows shows the caller's own effects.
    /// A follower then also catches up with the leader's commit (a read
    /// index), since a write answered by the leader may not be applied here yet.
    pub async fn settle(&self) {
        if !self.background.settled(background::SETTLE_FOR).await {
            tracing::debug!("background writes still pending; reading anyway");
            return;
        }
        if let Err(e) = self.node.ensure_fresh(background::SETTLE_FOR).await {
            tracing::debug!(error = %e, "could not catch up with the leader; reading anyway");
        }
    }

    /// Issues a new API token for `tenant` (creating the tenant if needed);
    /// the tenant's previous token stops working.
    pub async fn issue_token(&self, tenant: &str) -> Result<String, ApiError> {
        ephemera_domain::name::check("tenant", tenant)?;
        let token = crate::auth::new_token();
        let cmd = Command::SetTenantToken {
            tenant: tenant.to_string(),
            token_sha256: crate::auth::token_digest(&token),
        };
        match self.write(cmd).await? {
            Response::Rejected { reason } => Err(ApiError::InvalidArgument(reason)),
            _ => Ok(token),
        }
    }

    /// Sets `tenant`'s quota (creating the tenant if needed).
    pub async fn set_quota(&self, tenant: &str, quota: Quota) -> Result<(), ApiError> {
        ephemera_domain::name::check("tenant", tenant)?;
        let cmd = Command::SetTenantQuota {
            tenant: tenant.to_string(),
            quota,
        };
        match self.write(cmd).await? {
            Response::Rejected { reason } => Err(ApiError::InvalidArgument(reason)),
            _ => Ok(()),
        }
    }

    /// The stored record of a function, or a not-found error naming it.
    /// A miss is confirmed by a linearizable read, so a function deployed
    /// through another controller a moment ago is found here too.
    pub async fn function(&self, tenant: &str, name: &str) -> Result<FunctionRecord, ApiError> {
        if let Some(f) = self.node.read_state().function(tenant, name).cloned() {
            return Ok(f);
        }
        self.node.ensure_fresh(Duration::from_secs(5)).await?;
        let state = self.node.read_state();
        if let Some(f) = state.function(tenant, name) {
            return Ok(f.clone());
        }
        Err(ApiError::FunctionNotFound {
            tenant: tenant.to_string(),
            name: name.to_string(),
            known: state
                .functions
                .values()
                .filter(|f| f.tenant == tenant)
                .map(|f| f.name.clone())
                .collect(),
        })
    }

    /// Every function of `tenant` (all tenants when empty).
    pub fn functions(&self, tenant: &str) -> Vec<pb::FunctionSpec> {
        self.node
            .read_state()
            .functions
            .values()
            .filter(|f| tenant.is_empty() || f.tenant == tenant)
            .map(convert::spec_of)
            .collect()
    }

    /// This controller's applied state as JSON, with its applied index.
    pub fn dump(&self) -> Result<pb::DumpReply, ApiError> {
        let state_json = serde_json::to_string(&*self.node.read_state())
            .map_err(|e| ApiError::InvalidArgument(format!("cannot encode the state: {e}")))?;
        let metrics = self.node.raft.metrics().borrow().clone();
        Ok(pb::DumpReply {
            state_json,
            last_applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            controller_id: self.node.id,
            leader_id: metrics.current_leader.unwrap_or(0),
            snapshot_index: metrics.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: metrics.purged.map(|l| l.index).unwrap_or(0),
            term: metrics.current_term,
        })
    }
}

/// Commits `cmd` through `node`, retrying while a leader is being elected
/// or the leader cannot be reached, for up to [`WRITE_RETRY_FOR`].
async fn write_retrying(node: &RaftNode, cmd: Command) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + WRITE_RETRY_FOR;
    let mut pause = Duration::from_millis(10);
    loop {
        match node.write(cmd.clone()).await {
            Ok(resp) => return Ok(resp),
            Err(e @ (WriteError::NoLeader | WriteError::Forward { .. }))
                if tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(error = %e, "write not committed yet; retrying");
                // A new leader is usually known within an election timeout;
                // a short first pause finds it sooner than a fixed 100 ms.
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
