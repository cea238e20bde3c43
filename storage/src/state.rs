//! The replicated cluster state and the one function that changes it, [`ClusterState::apply`].
//!
//! `apply` is pure and deterministic: it reads nothing but the state and the command, and breaks
//! every tie by node id, so all replicas end in the same state with the same responses. The
//! node aggregates `N_alloc` and `N_req` are updated incrementally, O(1) per task; placement
//! itself is one pass over the nodes.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use ephemera_domain::format_size;
use serde::{Deserialize, Serialize};

use crate::command::{Command, Response};
use crate::policy::{Policy, Slot};

/// The largest memory size any command may carry (1 PiB). Anything larger is a unit mistake,
/// and the bound keeps every sum of aggregates far from `u64` overflow.
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;

/// How many completed invocation ids are remembered for idempotency. A retried `Schedule` of an
/// invocation completed longer ago than this would be placed again.
pub const COMPLETED_IDS_KEPT: usize = 100_000;

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

/// A bounded FIFO set of completed invocation ids: O(1) membership, oldest forgotten first.
/// Serialized as the queue alone (deterministic bytes); the index is rebuilt on load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "VecDeque<String>", into = "VecDeque<String>")]
struct CompletedIds {
    /// Ids in completion order, oldest first.
    order: VecDeque<String>,
    /// The same ids, for O(1) lookup.
    index: HashSet<String>,
}

impl CompletedIds {
    fn contains(&self, id: &str) -> bool {
        self.index.contains(id)
    }

    fn insert(&mut self, id: &str) {
        if self.index.insert(id.to_string()) {
            self.order.push_back(id.to_string());
            while self.order.len() > COMPLETED_IDS_KEPT {
                if let Some(old) = self.order.pop_front() {
                    self.index.remove(&old);
                }
            }
        }
    }
}

impl PartialEq for CompletedIds {
    fn eq(&self, other: &Self) -> bool {
        self.order == other.order
    }
}

impl Eq for CompletedIds {}

impl From<VecDeque<String>> for CompletedIds {
    fn from(order: VecDeque<String>) -> Self {
        let index = order.iter().cloned().collect();
        CompletedIds { order, index }
    }
}

impl From<CompletedIds> for VecDeque<String> {
    fn from(c: CompletedIds) -> Self {
        c.order
    }
}

/// The nodes' aggregates packed in node-id order, so that placement scans a small contiguous
/// array instead of the node map (a few ns per node instead of a cache miss per node). Derived
/// from `nodes`: never serialized, rebuilt on load, kept in step by `apply`.
#[derive(Clone, Default, PartialEq, Eq)]
struct NodeIndex {
    /// Node ids, sorted (the order of `ClusterState::nodes`).
    ids: Vec<String>,
    /// `slots[i]` mirrors the aggregates of node `ids[i]`.
    slots: Vec<Slot>,
}

impl NodeIndex {
    fn build(nodes: &BTreeMap<String, NodeState>) -> Self {
        NodeIndex {
            ids: nodes.keys().cloned().collect(),
            slots: nodes.values().map(Slot::from).collect(),
        }
    }

    /// Copies `node`'s aggregates into its slot, adding the slot if the node is new.
    fn sync(&mut self, node: &NodeState) {
        match self.ids.binary_search(&node.node_id) {
            Ok(i) => self.slots[i] = Slot::from(node),
            Err(i) => {
                self.ids.insert(i, node.node_id.clone());
                self.slots.insert(i, Slot::from(node));
            }
        }
    }
}

impl std::fmt::Debug for NodeIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeIndex({} nodes)", self.ids.len())
    }
}

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
        ClusterState {
            functions: d.functions,
            nodes: d.nodes,
            tasks: d.tasks,
            tenants: d.tenants,
            completed: d.completed,
            index,
        }
    }
}

/// A tenant's API credential. Only the token's SHA-256 is replicated: the
/// token itself is shown once, to whoever created it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Hex SHA-256 of the tenant's bearer token.
    pub token_sha256: String,
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

    /// Rebuilds the placement index from `nodes`; needed only after writing `nodes` directly.
    pub fn reindex(&mut self) {
        self.index = NodeIndex::build(&self.nodes);
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

    fn set_tenant_token(&mut self, tenant: &str, token_sha256: &str) -> Response {
        if tenant.is_empty() {
            return Response::rejected("tenant name is empty");
        }
        let valid = token_sha256.len() == 64 && token_sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Response::rejected(format!(
                "tenant {tenant}: token digest must be 64 hex digits, got {} characters",
                token_sha256.len()
            ));
        }
        if let Some(owner) = self.tenant_of_token(token_sha256) {
            if owner != tenant {
                return Response::rejected(format!(
                    "tenant {tenant}: that token already belongs to another tenant"
                ));
            }
        }
        self.tenants.insert(
            tenant.to_string(),
            TenantRecord {
                token_sha256: token_sha256.to_ascii_lowercase(),
            },
        );
        Response::Ok
    }

    fn register_node(&mut self, node_id: &str, addr: &str, memory_bytes: u64) -> Response {
        if node_id.is_empty() {
            return Response::rejected(format!("node id is empty (address {addr:?})"));
        }
        if addr.is_empty() {
            return Response::rejected(format!("node {node_id} has an empty address"));
        }
        if memory_bytes == 0 || memory_bytes > MAX_MEMORY_BYTES {
            return Response::rejected(format!(
                "node {node_id} memory {memory_bytes} bytes is out of range (1 byte to {})",
                format_size(MAX_MEMORY_BYTES)
            ));
        }
        match self.nodes.get_mut(node_id) {
            Some(node) => {
                if memory_bytes < node.n_alloc {
                    return Response::rejected(format!(
                        "node {node_id} re-registers with {} but its {} active tasks hold {}; \
                         mark it down first to release them",
                        format_size(memory_bytes),
                        node.tasks.len(),
                        format_size(node.n_alloc)
                    ));
                }
                node.addr = addr.to_string();
                node.n_lim = memory_bytes;
                node.up = true;
                self.index.sync(node);
            }
            None => {
                let node = NodeState::new(node_id, addr, memory_bytes);
                self.index.sync(&node);
                self.nodes.insert(node_id.to_string(), node);
            }
        }
        Response::Ok
    }

    fn set_node_up(&mut self, node_id: &str, up: bool) -> Response {
        let Some(node) = self.nodes.get_mut(node_id) else {
            return Response::rejected(format!("unknown node {node_id}"));
        };
        node.up = up;
        if !up {
            // The tasks died with the node. They are not remembered as completed: a client
            // retrying such an invocation gets it placed again, which is what it needs.
            for id in std::mem::take(&mut node.tasks) {
                self.tasks.remove(&id);
            }
            node.n_alloc = 0;
            node.n_req = 0;
        }
        self.index.sync(node);
        Response::Ok
    }

    fn deploy_function(&mut self, f: &FunctionRecord) -> Response {
        if f.tenant.is_empty() || f.tenant.contains('/') {
            return Response::rejected(format!(
                "tenant {:?} of function {:?} must be non-empty and contain no '/'",
                f.tenant, f.name
            ));
        }
        if f.name.is_empty() {
            return Response::rejected(format!("function name is empty (tenant {})", f.tenant));
        }
        if f.memory_bytes == 0 || f.memory_bytes > MAX_MEMORY_BYTES {
            return Response::rejected(format!(
                "function {} memory limit {} bytes is out of range (1 byte to {})",
                f.key(),
                f.memory_bytes,
                format_size(MAX_MEMORY_BYTES)
            ));
        }
        if let Err(reason) = check_profile(&f.key(), &f.profile) {
            return Response::rejected(reason);
        }
        self.functions.insert(f.key(), f.clone());
        Response::Ok
    }

    fn set_profile(&mut self, tenant: &str, name: &str, profile: Profile) -> Response {
        let key = function_key(tenant, name);
        if let Err(reason) = check_profile(&key, &profile) {
            return Response::rejected(reason);
        }
        match self.functions.get_mut(&key) {
            Some(f) => {
                f.profile = profile;
                Response::Ok
            }
            None => Response::rejected(format!("function {key} does not exist")),
        }
    }

    fn schedule(
        &mut self,
        invocation_id: &str,
        tenant: &str,
        function: &str,
        t_lim: u64,
        t_mem: u64,
        policy: Policy,
    ) -> Response {
        // Built only for messages: the hot path allocates no key.
        let key = || function_key(tenant, function);
        if let Some(task) = self.tasks.get(invocation_id) {
            if task.tenant != tenant || task.function != function {
                return Response::rejected(format!(
                    "invocation {invocation_id} is already placed for function {}/{}, not {}",
                    task.tenant,
                    task.function,
                    key()
                ));
            }
            // Invariant: an active task's node exists and is up.
            return match self.nodes.get(&task.node_id) {
                Some(node) => Response::Placed {
                    node_id: node.node_id.clone(),
                    addr: node.addr.clone(),
                },
                None => Response::rejected(format!(
                    "invocation {invocation_id} is placed on unknown node {}",
                    task.node_id
                )),
            };
        }
        if invocation_id.is_empty() {
            return Response::rejected(format!("empty invocation id for function {}", key()));
        }
        if self.completed.contains(invocation_id) {
            return Response::rejected(format!(
                "invocation {invocation_id} of function {} already completed",
                key()
            ));
        }
        if t_lim == 0 || t_lim > MAX_MEMORY_BYTES || t_mem > MAX_MEMORY_BYTES {
            return Response::rejected(format!(
                "invocation {invocation_id} of function {}: memory limit {t_lim} bytes and \
                 demand {t_mem} bytes must be in 1 byte..{} (demand may be 0)",
                key(),
                format_size(MAX_MEMORY_BYTES)
            ));
        }
        let Some(node) = self.place(policy, t_lim, t_mem) else {
            return Response::rejected(self.no_capacity_reason(tenant, function, t_lim));
        };
        let node_id = node.node_id.clone();
        let Some(node) = self.nodes.get_mut(&node_id) else {
            return Response::rejected(format!("placement chose unknown node {node_id}"));
        };
        // No overflow: n_alloc <= n_lim <= MAX, and n_req grows by at most MAX per task while
        // the number of tasks on a node is at most n_lim (each holds at least one byte).
        node.n_alloc += t_lim;
        node.n_req = node.n_req.saturating_add(t_mem);
        node.tasks.insert(invocation_id.to_string());
        self.index.sync(node);
        let placed = Response::Placed {
            node_id: node.node_id.clone(),
            addr: node.addr.clone(),
        };
        self.tasks.insert(
            invocation_id.to_string(),
            Task {
                invocation_id: invocation_id.to_string(),
                tenant: tenant.to_string(),
                function: function.to_string(),
                node_id,
                t_lim,
                t_mem,
            },
        );
        placed
    }

    fn no_capacity_reason(&self, tenant: &str, function: &str, t_lim: u64) -> String {
        let best = self
            .nodes
            .values()
            .filter(|n| n.up)
            .fold(None::<&NodeState>, |best, n| match best {
                Some(b) if b.headroom() >= n.headroom() => Some(b),
                _ => Some(n),
            });
        match best {
            Some(n) => format!(
                "no capacity for tenant {tenant} function {function}: needs {}, largest headroom \
                 {} on {}",
                format_size(t_lim),
                format_size(n.headroom()),
                n.node_id
            ),
            None => format!(
                "no capacity for tenant {tenant} function {function}: needs {}, no node is up \
                 ({} known)",
                format_size(t_lim),
                self.nodes.len()
            ),
        }
    }

    fn complete(&mut self, invocation_id: &str) -> Response {
        if let Some(task) = self.tasks.remove(invocation_id) {
            if let Some(node) = self.nodes.get_mut(&task.node_id) {
                node.n_alloc = node.n_alloc.saturating_sub(task.t_lim);
                node.n_req = node.n_req.saturating_sub(task.t_mem);
                node.tasks.remove(invocation_id);
                self.index.sync(node);
            }
        }
        // Remembered even when unknown: a Complete that overtakes its own (retried) Schedule
        // must not let that Schedule place the finished invocation afterwards.
        if !invocation_id.is_empty() {
            self.completed.insert(invocation_id);
        }
        Response::Ok
    }

    /// Checks every structural invariant; the message names the first violation.
    ///
    /// For each node: `N_alloc` and `N_req` equal the sums over its active tasks, `N_alloc <=
    /// N_lim`, a down node holds no task. Every task is on an existing, up node that lists it.
    /// Functions are keyed by `tenant/name`. No id is both active and completed.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut listed = 0usize;
        for (id, node) in &self.nodes {
            if *id != node.node_id {
                return Err(format!("node keyed {id} has node_id {}", node.node_id));
            }
            let (mut alloc, mut req) = (0u128, 0u128);
            for t in &node.tasks {
                let Some(task) = self.tasks.get(t) else {
                    return Err(format!("node {id} lists unknown task {t}"));
                };
                if task.node_id != *id {
                    return Err(format!(
                        "node {id} lists task {t} placed on {}",
                        task.node_id
                    ));
                }
                alloc += u128::from(task.t_lim);
                req += u128::from(task.t_mem);
            }
            listed += node.tasks.len();
            if alloc != u128::from(node.n_alloc) || req != u128::from(node.n_req) {
                return Err(format!(
                    "node {id}: n_alloc {} / n_req {} but its {} tasks sum to {alloc} / {req}",
                    node.n_alloc,
                    node.n_req,
                    node.tasks.len()
                ));
            }
            if node.n_alloc > node.n_lim {
                return Err(format!(
                    "node {id}: n_alloc {} exceeds n_lim {}",
                    node.n_alloc, node.n_lim
                ));
            }
            if !node.up && !node.tasks.is_empty() {
                return Err(format!(
                    "node {id} is down but holds {} tasks",
                    node.tasks.len()
                ));
            }
        }
        for (id, task) in &self.tasks {
            if *id != task.invocation_id {
                return Err(format!(
                    "task keyed {id} has invocation_id {}",
                    task.invocation_id
                ));
            }
            match self.nodes.get(&task.node_id) {
                None => return Err(format!("task {id} is on unknown node {}", task.node_id)),
                Some(n) if !n.up => return Err(format!("task {id} is on down node {}", n.node_id)),
                Some(n) if !n.tasks.contains(id) => {
                    return Err(format!("task {id} is not listed by its node {}", n.node_id))
                }
                Some(_) => {}
            }
            if self.completed.contains(id) {
                return Err(format!("task {id} is both active and completed"));
            }
        }
        if listed != self.tasks.len() {
            return Err(format!(
                "nodes list {listed} tasks but {} are active",
                self.tasks.len()
            ));
        }
        for (key, f) in &self.functions {
            if *key != f.key() {
                return Err(format!("function keyed {key} is {}", f.key()));
            }
        }
        if self.index != NodeIndex::build(&self.nodes) {
            return Err("the placement index is out of step with the nodes".to_string());
        }
        let c = &self.completed;
        if c.order.len() != c.index.len() || c.order.len() > COMPLETED_IDS_KEPT {
            return Err(format!(
                "completed ids: queue {} / index {} / cap {COMPLETED_IDS_KEPT}",
                c.order.len(),
                c.index.len()
            ));
        }
        Ok(())
    }
}

fn check_profile(key: &str, p: &Profile) -> Result<(), String> {
    match p.u_max.checked_add(p.f_max) {
        Some(t_mem) if t_mem <= MAX_MEMORY_BYTES => Ok(()),
        _ => Err(format!(
            "function {key} profile U_max {} + F_max {} bytes exceeds {}",
            p.u_max,
            p.f_max,
            format_size(MAX_MEMORY_BYTES)
        )),
    }
}
