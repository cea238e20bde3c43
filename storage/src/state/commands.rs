//! How each command changes the state. Every handler checks first and
//! changes after, so a `Rejected` response leaves the state unchanged.

use ephemera_domain::format_size;

use super::records::{function_key, FunctionRecord, NodeState, Profile, Quota, Task};
use super::{ClusterState, MAX_MEMORY_BYTES};
use crate::command::Response;
use crate::policy::Policy;

impl ClusterState {
    pub(super) fn set_tenant_token(&mut self, tenant: &str, token_sha256: &str) -> Response {
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
        self.tenants
            .entry(tenant.to_string())
            .or_default()
            .token_sha256 = token_sha256.to_ascii_lowercase();
        Response::Ok
    }

    pub(super) fn set_tenant_quota(&mut self, tenant: &str, quota: Quota) -> Response {
        if tenant.is_empty() {
            return Response::rejected("tenant name is empty");
        }
        if quota.memory_bytes > MAX_MEMORY_BYTES {
            return Response::rejected(format!(
                "tenant {tenant}: a memory quota of {} bytes exceeds {}",
                quota.memory_bytes,
                format_size(MAX_MEMORY_BYTES)
            ));
        }
        self.tenants.entry(tenant.to_string()).or_default().quota = Some(quota);
        Response::Ok
    }

    pub(super) fn register_node(
        &mut self,
        node_id: &str,
        addr: &str,
        memory_bytes: u64,
    ) -> Response {
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

    pub(super) fn set_node_up(&mut self, node_id: &str, up: bool) -> Response {
        let Some(node) = self.nodes.get_mut(node_id) else {
            return Response::rejected(format!("unknown node {node_id}"));
        };
        node.up = up;
        if !up {
            // The tasks died with the node. They are not remembered as completed: a client
            // retrying such an invocation gets it placed again, which is what it needs.
            for id in std::mem::take(&mut node.tasks) {
                if let Some(task) = self.tasks.remove(&id) {
                    self.usage.remove(&task);
                }
            }
            node.n_alloc = 0;
            node.n_req = 0;
        }
        self.index.sync(node);
        Response::Ok
    }

    pub(super) fn deploy_function(&mut self, f: &FunctionRecord) -> Response {
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

    pub(super) fn set_profile(&mut self, tenant: &str, name: &str, profile: Profile) -> Response {
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

    pub(super) fn schedule(
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
        let (used, quota) = (self.usage.of(tenant), self.quota(tenant));
        if used.invocations >= quota.invocations
            || used.memory_bytes.saturating_add(t_lim) > quota.memory_bytes
        {
            return Response::OverQuota {
                reason: format!(
                    "tenant {tenant} is at its quota ({} in {} invocations): it holds {} in {} \
                     invocations, and invocation {invocation_id} of {} needs {} more",
                    format_size(quota.memory_bytes),
                    quota.invocations,
                    format_size(used.memory_bytes),
                    used.invocations,
                    key(),
                    format_size(t_lim)
                ),
            };
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
        let task = Task {
            invocation_id: invocation_id.to_string(),
            tenant: tenant.to_string(),
            function: function.to_string(),
            node_id,
            t_lim,
            t_mem,
        };
        self.usage.add(&task);
        self.tasks.insert(invocation_id.to_string(), task);
        placed
    }

    pub(super) fn no_capacity_reason(&self, tenant: &str, function: &str, t_lim: u64) -> String {
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

    pub(super) fn complete(&mut self, invocation_id: &str) -> Response {
        if let Some(task) = self.tasks.remove(invocation_id) {
            self.usage.remove(&task);
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
