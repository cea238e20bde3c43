//! Placement leases. A placement is held only while something shows it is
//! in use: the agent running the invocation lists it in every heartbeat.
//! The leader releases (`Complete`) a placement nobody has vouched for
//! within the lease, so a placement whose client, controller or agent died
//! comes back: its invocation ended, or its agent is gone, or (a bare
//! `Place`) nobody ran it. Like liveness, the clock is the leader's own: a
//! new leader gives every placement a full lease from the moment it took over.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ephemera_storage::ClusterState;

/// When each placement was last vouched for, as this controller saw it.
#[derive(Debug)]
pub struct Leases {
    /// How long a placement lives without a renewal.
    pub duration: Duration,
    /// Invocation id → last renewal (or first sight).
    seen: Mutex<HashMap<String, Instant>>,
}

impl Leases {
    /// Leases of `duration`.
    pub fn new(duration: Duration) -> Leases {
        Leases {
            duration,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// An agent's heartbeat lists `running` on `node_id`: renews those of
    /// them placed on that node (an agent vouches for its own placements only).
    pub fn renew(&self, state: &ClusterState, node_id: &str, running: &[String]) {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for id in running {
            if state.tasks.get(id).is_some_and(|t| t.node_id == node_id) {
                seen.insert(id.clone(), now);
            }
        }
    }

    /// The placements whose lease ran out: nothing vouched for them since
    /// `duration` ago (counting from `leader_since` at the earliest).
    /// Forgets placements that are no longer active.
    pub fn expired(&self, state: &ClusterState, leader_since: Instant) -> Vec<String> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.retain(|id, _| state.tasks.contains_key(id));
        let mut out = Vec::new();
        for id in state.tasks.keys() {
            let last = *seen.entry(id.clone()).or_insert(now);
            if now.duration_since(last.max(leader_since)) > self.duration {
                out.push(id.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ephemera_storage::{Command, Policy};

    fn state_with(ids: &[&str]) -> ClusterState {
        let mut s = ClusterState::default();
        for (node, mem) in [("n1", 1u64 << 30), ("n2", 1 << 30)] {
            s.apply(&Command::RegisterNode {
                node_id: node.into(),
                addr: format!("{node}:1"),
                memory_bytes: mem,
            });
        }
        for id in ids {
            s.apply(&Command::Schedule {
                invocation_id: (*id).into(),
                tenant: "t".into(),
                function: "f".into(),
                t_lim: 1 << 20,
                t_mem: 0,
                policy: Policy::MostFree,
            });
        }
        s
    }

    #[test]
    fn renewed_placements_live_and_silent_ones_expire() {
        let s = state_with(&["a", "b"]);
        let node_of = |id: &str| s.tasks[id].node_id.clone();
        let leases = Leases::new(Duration::from_millis(50));
        let start = Instant::now();
        assert!(
            leases.expired(&s, start).is_empty(),
            "a full lease at first sight"
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // `a` is vouched for by its node; `b` only by a node it is not on.
            leases.renew(&s, &node_of("a"), &["a".into()]);
            let other = if node_of("b") == "n1" { "n2" } else { "n1" };
            leases.renew(&s, other, &["b".into()]);
            let expired = leases.expired(&s, start);
            if !expired.is_empty() {
                assert_eq!(expired, ["b"], "`a` is renewed; `b`'s node never listed it");
                break;
            }
            assert!(Instant::now() < deadline, "b never expired");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
