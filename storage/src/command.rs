//! The commands the Raft log carries and the answers the state machine gives.
//!
//! Every command is deterministic: applying the same sequence on every replica gives the same
//! state and the same responses, which is what lets placement run inside `apply`.

use serde::{Deserialize, Serialize};

use crate::policy::Policy;
use crate::state::{FunctionRecord, Profile, Quota};

/// One replicated change to the cluster state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// An agent (node) joins or re-registers; keeps its tasks if already known, marks it up.
    RegisterNode {
        /// The agent's node id (unique in the cluster).
        node_id: String,
        /// Where the agent serves its gRPC API.
        addr: String,
        /// The node's memory limit `N_lim`, in bytes.
        memory_bytes: u64,
    },
    /// Liveness change; `up: false` releases every task on the node (aggregates updated).
    SetNodeUp {
        /// The node whose liveness changes.
        node_id: String,
        /// The new liveness.
        up: bool,
    },
    /// Create or replace a function (replacing keeps nothing of the old record).
    DeployFunction {
        /// The complete new record.
        function: FunctionRecord,
    },
    /// Record a measured profile for an existing function.
    SetProfile {
        /// The function's tenant.
        tenant: String,
        /// The function's name within the tenant.
        name: String,
        /// The measured profile.
        profile: Profile,
    },
    /// Place one invocation. Idempotent by invocation_id: a retried Schedule of a task that is
    /// still active returns the same placement; of one already completed returns
    /// `Rejected("… already completed")`.
    ///
    /// The command carries the sizes, so the state machine does not look the function up: the
    /// controller resolves it (and the caller's tenant) before proposing, and the scheduler
    /// benchmark places trace tasks that were never deployed.
    Schedule {
        /// Unique id of the invocation (the idempotency key).
        invocation_id: String,
        /// The tenant invoking.
        tenant: String,
        /// The function's name within the tenant.
        function: String,
        /// The task's memory limit `T_lim`, in bytes.
        t_lim: u64,
        /// The task's memory demand `T_mem` (`U_max + F_max`), in bytes.
        t_mem: u64,
        /// The placement policy to use.
        policy: Policy,
    },
    /// Release a placement. Idempotent: completing an unknown/already-completed id is Ok.
    Complete {
        /// The invocation to release.
        invocation_id: String,
    },
    /// Set (or replace) a tenant's API token, given as its hex SHA-256.
    SetTenantToken {
        /// The tenant.
        tenant: String,
        /// Hex SHA-256 of the bearer token.
        token_sha256: String,
    },
    /// Set a tenant's quota (creating the tenant's record if needed).
    SetTenantQuota {
        /// The tenant.
        tenant: String,
        /// What it may hold at once.
        quota: Quota,
    },
    /// Several commands in one log entry, applied in order, answered by [`Response::Batch`].
    ///
    /// Why: openraft 0.9 appends (and fsyncs) each `client_write` on its own, so one command
    /// per entry caps a controller at one fsync per command. A controller that gathers the
    /// commands arriving while a write is in flight into one `Batch` pays one fsync for all.
    /// Not a transaction: each command succeeds or is refused on its own. A nested `Batch` is
    /// refused.
    Batch {
        /// The commands, in order.
        commands: Vec<Command>,
    },
}

/// The state machine's answer to one command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The command was applied (or was an idempotent no-op).
    Ok,
    /// The invocation was placed on this node.
    Placed {
        /// The chosen node.
        node_id: String,
        /// The chosen node's agent address.
        addr: String,
    },
    /// A deterministic refusal; the message names what failed and with which input
    /// (e.g. "no capacity for tenant t function f: needs 300 MiB, largest headroom 200 MiB on
    /// node-2", "unknown node node-9", "function t/f does not exist"). Nothing was changed.
    Rejected {
        /// What failed, with which input.
        reason: String,
    },
    /// A deterministic refusal because the tenant is at its [`Quota`]; the
    /// message names the tenant, the quota and what it holds. Nothing changed.
    OverQuota {
        /// What was refused, with the numbers.
        reason: String,
    },
    /// The answers to a [`Command::Batch`], one per command, in order.
    Batch {
        /// The answers.
        responses: Vec<Response>,
    },
}

impl Response {
    /// Builds a refusal.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Response::Rejected {
            reason: reason.into(),
        }
    }

    /// True unless this is a refusal (a `Batch` is accepted; look at its items).
    pub fn is_accepted(&self) -> bool {
        !matches!(self, Response::Rejected { .. } | Response::OverQuota { .. })
    }
}
