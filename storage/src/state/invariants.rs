//! The structural invariants of the state, checked by the tests after
//! every command (and cheap enough to check in a debugger).

use super::index::{NodeIndex, UsageIndex};
use super::{ClusterState, COMPLETED_IDS_KEPT};

impl ClusterState {
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
        if self.usage != UsageIndex::build(self.tasks.values()) {
            return Err("the per-tenant usage is out of step with the tasks".to_string());
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
