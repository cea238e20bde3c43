//! What the state stores: functions with their code and profile, nodes
//! with their aggregates, active tasks, and tenants' credentials.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// One file of a function's code, carried in the log so every controller can serve it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeFileRecord {
    /// Path relative to the function's code root.
    pub path: String,
    /// Unix permission bits.
    pub mode: u32,
    /// File contents (base64 in JSON: this travels in log entries and snapshots).
    #[serde(with = "crate::b64")]
    pub data: Vec<u8>,
}

/// A function's measured memory profile (thesis §3.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Peak native (non-file) memory over the profiling runs, bytes.
    pub u_max: u64,
    /// Largest file touched over the profiling runs, bytes.
    pub f_max: u64,
    /// False until a profile has been measured; then `T_mem = U_max + F_max`.
    pub measured: bool,
}

/// A deployed function of one tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// Owning tenant (may not contain '/', so that `key()` is unambiguous).
    pub tenant: String,
    /// Name within the tenant.
    pub name: String,
    /// Command line the launcher runs.
    pub cmd: String,
    /// The memory limit `T_lim`, bytes.
    pub memory_bytes: u64,
    /// Per-invocation timeout.
    pub timeout_ms: u64,
    /// Digest of `code`, so agents can cache it.
    pub code_digest: String,
    /// The function's files.
    pub code: Vec<CodeFileRecord>,
    /// The measured profile, if any.
    pub profile: Profile,
    /// Representative inputs (JSON) the profiler runs.
    pub profile_inputs: Vec<String>,
    /// Workflow the function belongs to (free-form; empty if none).
    pub workflow: String,
}

impl FunctionRecord {
    /// The map key: `tenant/name`.
    pub fn key(&self) -> String {
        function_key(&self.tenant, &self.name)
    }

    /// The memory demand `T_mem`: `U_max + F_max` once measured, else the limit (an unprofiled
    /// function is assumed to use all it was given).
    pub fn t_mem(&self) -> u64 {
        if self.profile.measured {
            self.profile.u_max.saturating_add(self.profile.f_max)
        } else {
            self.memory_bytes
        }
    }

    /// Total bytes of code.
    pub fn code_size(&self) -> u64 {
        self.code.iter().map(|f| f.data.len() as u64).sum()
    }
}

/// The key of function `name` of `tenant` in [`ClusterState::functions`].
pub fn function_key(tenant: &str, name: &str) -> String {
    format!("{tenant}/{name}")
}

/// One node (agent) and its memory aggregates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The agent's node id.
    pub node_id: String,
    /// The agent's gRPC address.
    pub addr: String,
    /// `N_lim`: memory the node offers, bytes.
    pub n_lim: u64,
    /// `N_alloc`: Σ `T_lim` of its active tasks.
    pub n_alloc: u64,
    /// `N_req`: Σ `T_mem` of its active tasks.
    pub n_req: u64,
    /// Whether the node takes placements. A down node holds no tasks.
    pub up: bool,
    /// Invocation ids of its active tasks.
    pub tasks: BTreeSet<String>,
}

impl NodeState {
    /// A fresh, up node with no tasks.
    pub fn new(node_id: impl Into<String>, addr: impl Into<String>, n_lim: u64) -> Self {
        NodeState {
            node_id: node_id.into(),
            addr: addr.into(),
            n_lim,
            n_alloc: 0,
            n_req: 0,
            up: true,
            tasks: BTreeSet::new(),
        }
    }

    /// `N_lim - N_alloc` (zero if over-allocated, which the invariants forbid).
    pub fn headroom(&self) -> u64 {
        self.n_lim.saturating_sub(self.n_alloc)
    }
}

/// One active placement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The idempotency key.
    pub invocation_id: String,
    /// The invoking tenant.
    pub tenant: String,
    /// The function's name within the tenant.
    pub function: String,
    /// Where it runs.
    pub node_id: String,
    /// Its `T_lim`, bytes (kept so a redeploy does not skew the aggregates).
    pub t_lim: u64,
    /// Its `T_mem`, bytes.
    pub t_mem: u64,
}

/// A tenant's API credential and quota. Only the token's SHA-256 is
/// replicated: the token itself is shown once, to whoever created it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Hex SHA-256 of the tenant's bearer token (empty: no token issued).
    pub token_sha256: String,
    /// What the admin allows this tenant; [`Quota::DEFAULT`] when unset.
    #[serde(default)]
    pub quota: Option<Quota>,
}

/// How much of the cluster one tenant may hold at once, so no tenant can
/// fill every node: the sum of its active invocations' `T_lim`, and their
/// number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Most memory (Σ `T_lim` of active invocations), bytes.
    pub memory_bytes: u64,
    /// Most concurrent invocations.
    pub invocations: u64,
}

impl Quota {
    /// A tenant's quota until the admin sets one: 64 GiB and 512 concurrent
    /// invocations.
    pub const DEFAULT: Quota = Quota {
        memory_bytes: 64 << 30,
        invocations: 512,
    };
}

/// What a tenant holds now (derived from the active tasks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantUsage {
    /// Σ `T_lim` of its active invocations, bytes.
    pub memory_bytes: u64,
    /// Its active invocations.
    pub invocations: u64,
}
