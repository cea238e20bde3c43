//! Agent liveness and placement leases. Agents heartbeat the leader; the
//! leader marks an agent down (a Raft command, which releases its
//! placements) when it has not heard from it for the timeout, and releases
//! each placement no agent has vouched for within its lease (`leases`). A new leader gives every agent a full timeout from
//! the moment it took over, since the old leader's records died with it.
//! The mark is proposed only while this controller leads (never forwarded).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ephemera_storage::Command;

use crate::controller::Controller;
use crate::raft::WriteError;

/// Last heartbeat per node, as seen by this controller.
#[derive(Debug)]
pub struct Liveness {
    last_seen: Mutex<HashMap<String, Instant>>,
    /// Silence after which a node is marked down.
    pub timeout: Duration,
}

impl Liveness {
    /// Tracks nodes with `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Liveness {
            last_seen: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    /// Records a sign of life from `node_id`.
    pub fn seen(&self, node_id: &str) {
        let mut map = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(node_id.to_string(), Instant::now());
    }

    fn silent_since(&self, node_id: &str, leader_since: Instant) -> Instant {
        let map = self.last_seen.lock().unwrap_or_else(|e| e.into_inner());
        map.get(node_id)
            .map_or(leader_since, |t| (*t).max(leader_since))
    }
}

/// Marks silent agents down and releases expired placements while this
/// controller leads, until `shutdown`.
pub async fn run(controller: Arc<Controller>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let liveness = controller.liveness.clone();
    let tick = (liveness.timeout / 4).max(Duration::from_millis(100));
    let mut leader_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        if !controller.node.is_leader() {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert_with(Instant::now);
        let up: Vec<String> = controller
            .node
            .read_state()
            .nodes
            .values()
            .filter(|n| n.up)
            .map(|n| n.node_id.clone())
            .collect();
        for node_id in up {
            if liveness.silent_since(&node_id, since).elapsed() <= liveness.timeout {
                continue;
            }
            tracing::warn!(node = %node_id, timeout = ?liveness.timeout, "agent silent; marking it down");
            // Only as the leader that saw the silence: a deposed leader
            // (cut off, so it heard nobody) must not have this decision
            // forwarded to, and applied by, the leader that did hear them.
            let mark = controller.node.write_as_leader(Command::SetNodeUp {
                node_id: node_id.clone(),
                up: false,
            });
            let outcome = tokio::time::timeout(liveness.timeout, mark)
                .await
                .unwrap_or(Err(WriteError::NoLeader));
            if let Err(e) = outcome {
                tracing::warn!(node = %node_id, error = %e, "could not mark the agent down");
            }
        }
        let expired = controller
            .leases
            .expired(&controller.node.read_state(), since);
        for invocation_id in expired {
            tracing::warn!(%invocation_id, lease = ?controller.leases.duration, "placement not vouched for by any agent; releasing it");
            let release = controller.node.write_as_leader(Command::Complete {
                invocation_id: invocation_id.clone(),
            });
            let outcome = tokio::time::timeout(liveness.timeout, release)
                .await
                .unwrap_or(Err(WriteError::NoLeader));
            if let Err(e) = outcome {
                tracing::warn!(%invocation_id, error = %e, "could not release the expired placement");
            }
        }
    }
}
