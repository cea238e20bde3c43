//! Derived structures kept beside the replicated data: the packed placement
//! index over the nodes, and the bounded set of completed invocation ids.

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::records::{NodeState, Task, TenantUsage};
use super::COMPLETED_IDS_KEPT;
use crate::policy::Slot;

/// A bounded FIFO set of completed invocation ids: O(1) membership, oldest forgotten first.
/// Serialized as the queue alone (deterministic bytes); the index is rebuilt on load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(from = "VecDeque<String>", into = "VecDeque<String>")]
pub(super) struct CompletedIds {
    /// Ids in completion order, oldest first.
    pub(super) order: VecDeque<String>,
    /// The same ids, for O(1) lookup.
    pub(super) index: HashSet<String>,
}

impl CompletedIds {
    pub(super) fn contains(&self, id: &str) -> bool {
        self.index.contains(id)
    }

    pub(super) fn insert(&mut self, id: &str) {
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
pub(super) struct NodeIndex {
    /// Node ids, sorted (the order of `ClusterState::nodes`).
    pub(super) ids: Vec<String>,
    /// `slots[i]` mirrors the aggregates of node `ids[i]`.
    pub(super) slots: Vec<Slot>,
}

impl NodeIndex {
    pub(super) fn build(nodes: &BTreeMap<String, NodeState>) -> Self {
        NodeIndex {
            ids: nodes.keys().cloned().collect(),
            slots: nodes.values().map(Slot::from).collect(),
        }
    }

    /// Copies `node`'s aggregates into its slot, adding the slot if the node is new.
    pub(super) fn sync(&mut self, node: &NodeState) {
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

/// What each tenant holds, kept in step with the active tasks by `apply`
/// (derived: rebuilt on load, never serialized).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct UsageIndex(pub(super) BTreeMap<String, TenantUsage>);

impl UsageIndex {
    pub(super) fn build<'a>(tasks: impl Iterator<Item = &'a Task>) -> Self {
        let mut index = UsageIndex::default();
        for t in tasks {
            index.add(t);
        }
        index
    }

    pub(super) fn of(&self, tenant: &str) -> TenantUsage {
        self.0.get(tenant).copied().unwrap_or_default()
    }

    pub(super) fn add(&mut self, task: &Task) {
        let u = self.0.entry(task.tenant.clone()).or_default();
        u.memory_bytes = u.memory_bytes.saturating_add(task.t_lim);
        u.invocations += 1;
    }

    pub(super) fn remove(&mut self, task: &Task) {
        if let Some(u) = self.0.get_mut(&task.tenant) {
            u.memory_bytes = u.memory_bytes.saturating_sub(task.t_lim);
            u.invocations = u.invocations.saturating_sub(1);
            if u.invocations == 0 {
                self.0.remove(&task.tenant);
            }
        }
    }
}
