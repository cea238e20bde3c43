//! The replicated cluster state and the one function that changes it, [`ClusterState::apply`].
//!
//! - `records`: what is stored (functions, nodes, tasks, tenants).
//! - `index`: the derived placement index and the completed-ids set.
//! - `commands`: how each command changes the state.
//! - `invariants`: the structural checks every test runs after each command.
//!
//! `apply` is pure and deterministic: it reads nothing but the state and the command, and breaks
//! every tie by node id, so all replicas end in the same state with the same responses. The
//! node aggregates `N_alloc` and `N_req` are updated incrementally, O(1) per task; placement
//! itself is one pass over the nodes.

mod commands;
mod index;
mod invariants;
mod records;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};
use crate::policy::Policy;

use index::{CompletedIds, NodeIndex, UsageIndex};
pub use records::{
    function_key, CodeFileRecord, FunctionRecord, NodeState, Profile, Quota, Task, TenantRecord,
    TenantUsage,
};

/// The largest memory size any command may carry (1 PiB). Anything larger is a unit mistake,
/// and the bound keeps every sum of aggregates far from `u64` overflow.
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;

/// How many completed invocation ids are remembered for idempotency. A retried `Schedule` of an
/// invocation completed longer ago than this would be placed again.
pub const COMPLETED_IDS_KEPT: usize = 100_000;

/// Everything the controllers replicate.
///
/// The fields are public for reading. Change the state only through [`ClusterState::apply`]:
/// a placement index derived from `nodes` is kept in step there (after writing `nodes`
/// directly, e.g. to build a synthetic cluster, call [`ClusterState::reindex`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ClusterStateData")]
pub struct ClusterState {
    /// Deployed functions, keyed `tenant/name`.
    pub functions: BTreeMap<String, FunctionRecord>,
    /// Nodes by node id; BTreeMap order is the tie-break order of every policy.
    pub nodes: BTreeMap<String, NodeState>,
    /// Active tasks by invocation id.
    pub tasks: BTreeMap<String, Task>,
    /// Tenants' API credentials, by tenant name.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantRecord>,
    /// Recently completed invocation ids, so a retried `Schedule` is not placed twice.
    completed: CompletedIds,
    /// Derived placement index (not serialized).
    #[serde(skip)]
    index: NodeIndex,
    /// Derived per-tenant usage (not serialized).
    #[serde(skip)]
    usage: UsageIndex,
}

/// The serialized form of [`ClusterState`]: everything but the derived index.
#[derive(Deserialize)]
struct ClusterStateData {
    functions: BTreeMap<String, FunctionRecord>,
    nodes: BTreeMap<String, NodeState>,
    tasks: BTreeMap<String, Task>,
    #[serde(default)]
    tenants: BTreeMap<String, TenantRecord>,
    completed: CompletedIds,
}

impl From<ClusterStateData> for ClusterState {
    fn from(d: ClusterStateData) -> Self {
        let index = NodeIndex::build(&d.nodes);
        let usage = UsageIndex::build(d.tasks.values());
        ClusterState {
            functions: d.functions,
            nodes: d.nodes,
            tasks: d.tasks,
            tenants: d.tenants,
            completed: d.completed,
            index,
            usage,
        }
    }
}

impl ClusterState {
    /// The tenant whose token hashes to `token_sha256`, if any.
    pub fn tenant_of_token(&self, token_sha256: &str) -> Option<&str> {
        self.tenants
            .iter()
            .find(|(_, t)| t.token_sha256 == token_sha256)
            .map(|(name, _)| name.as_str())
    }

    /// The function `name` of `tenant`, if deployed.
    pub fn function(&self, tenant: &str, name: &str) -> Option<&FunctionRecord> {
        self.functions.get(&function_key(tenant, name))
    }

    /// Whether `invocation_id` is remembered as completed.
    pub fn is_completed(&self, invocation_id: &str) -> bool {
        self.completed.contains(invocation_id)
    }

    /// Number of completed ids remembered (at most [`COMPLETED_IDS_KEPT`]).
    pub fn completed_len(&self) -> usize {
        self.completed.order.len()
    }

    /// Rebuilds the derived indexes from `nodes` and `tasks`; needed only
    /// after writing them directly.
    pub fn reindex(&mut self) {
        self.index = NodeIndex::build(&self.nodes);
        self.usage = UsageIndex::build(self.tasks.values());
    }

    /// What `tenant` holds now.
    pub fn usage(&self, tenant: &str) -> TenantUsage {
        self.usage.of(tenant)
    }

    /// `tenant`'s quota: the admin's, or [`Quota::DEFAULT`].
    pub fn quota(&self, tenant: &str) -> Quota {
        self.tenants
            .get(tenant)
            .and_then(|t| t.quota)
            .unwrap_or(Quota::DEFAULT)
    }

    /// The node `policy` chooses for a task with limit `t_lim` and demand `t_mem` — the same
    /// choice as [`Policy::place`] over `nodes`, computed over the packed index. This is the
    /// decision `Schedule` makes; benchmarks should time this.
    pub fn place(&self, policy: Policy, t_lim: u64, t_mem: u64) -> Option<&NodeState> {
        if self.index.ids.len() != self.nodes.len() {
            // Nodes were inserted directly and not reindexed: take the slow, exact path.
            return policy.place(self.nodes.values(), t_lim, t_mem);
        }
        let i = policy.place_slots(&self.index.slots, t_lim, t_mem)?;
        self.nodes.get(&self.index.ids[i])
    }

    /// Applies one command. A `Rejected` response leaves the state unchanged.
    pub fn apply(&mut self, cmd: &Command) -> Response {
        match cmd {
            Command::RegisterNode {
                node_id,
                addr,
                memory_bytes,
            } => self.register_node(node_id, addr, *memory_bytes),
            Command::SetNodeUp { node_id, up } => self.set_node_up(node_id, *up),
            Command::DeployFunction { function } => self.deploy_function(function),
            Command::SetProfile {
                tenant,
                name,
                profile,
            } => self.set_profile(tenant, name, *profile),
            Command::Schedule {
                invocation_id,
                tenant,
                function,
                t_lim,
                t_mem,
                policy,
            } => self.schedule(invocation_id, tenant, function, *t_lim, *t_mem, *policy),
            Command::Complete { invocation_id } => self.complete(invocation_id),
            Command::SetTenantToken {
                tenant,
                token_sha256,
            } => self.set_tenant_token(tenant, token_sha256),
            Command::SetTenantQuota { tenant, quota } => self.set_tenant_quota(tenant, *quota),
            Command::Batch { commands } => Response::Batch {
                responses: commands
                    .iter()
                    .map(|c| match c {
                        Command::Batch { commands } => Response::rejected(format!(
                            "nested batch of {} commands is not allowed",
                            commands.len()
                        )),
                        c => self.apply(c),
                    })
                    .collect(),
            },
        }
    }
}
