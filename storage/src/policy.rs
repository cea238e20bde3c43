//! Placement policies: which up node, with room for the task's limit, gets the task.
//!
//! All three share the capacity filter `up && N_alloc + T_lim <= N_lim` and break ties by the
//! lowest node id, so that every replica applying the same `Schedule` picks the same node.
//! Scores are computed in `i64` on values clamped to [`SCORE_CLAMP`], so no input can overflow
//! (the state machine bounds every size far below it; the clamp only matters for hand-built
//! node states).

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::state::NodeState;

/// A placement policy (ARCHITECTURE.md, "Cluster level").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Policy {
    /// Thesis Algorithm 3.1: minimize `|(N_req + T_mem) - (N_alloc + T_lim)|`, i.e. keep each
    /// node's demand close to its allocation; ties to the most remaining headroom.
    #[default]
    FeatureAware,
    /// The thesis prototype's metric: a task that needs more than its limit goes to the node
    /// with the largest surplus `N_alloc - N_req`, one with spare memory to the node with the
    /// largest deficit `N_req - N_alloc`. Reproduces thesis Table 5.3.
    Pairing,
    /// Baseline: most remaining headroom `N_lim - N_alloc`.
    MostFree,
}

/// Sizes above this (2^60 bytes) score as if they were this; sums of four such values fit in
/// an `i64`.
pub const SCORE_CLAMP: u64 = 1 << 60;

fn score_value(v: u64) -> i64 {
    // Lossless: the value is at most 2^60.
    v.min(SCORE_CLAMP) as i64
}

/// The names `FromStr` accepts and `Display` prints, in declaration order.
pub const POLICY_NAMES: [&str; 3] = ["feature-aware", "pairing", "most-free"];

/// A policy name that is not one of [`POLICY_NAMES`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement policy {input:?}; valid policies: feature-aware, pairing, most-free")]
pub struct ParsePolicyError {
    /// The name that was given.
    pub input: String,
}

impl FromStr for Policy {
    type Err = ParsePolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "feature-aware" => Ok(Policy::FeatureAware),
            "pairing" => Ok(Policy::Pairing),
            "most-free" => Ok(Policy::MostFree),
            other => Err(ParsePolicyError {
                input: other.to_string(),
            }),
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Policy {
    /// All policies, in declaration order.
    pub const ALL: [Policy; 3] = [Policy::FeatureAware, Policy::Pairing, Policy::MostFree];

    /// The policy's configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::FeatureAware => POLICY_NAMES[0],
            Policy::Pairing => POLICY_NAMES[1],
            Policy::MostFree => POLICY_NAMES[2],
        }
    }

    /// Chooses the node for a task with limit `t_lim` and demand `t_mem`, or `None` when no up
    /// node has `t_lim` of headroom. One pass over `nodes`, no allocation.
    ///
    /// Ties are broken by the lowest `node_id` whatever order `nodes` come in. The state
    /// machine uses the faster [`ClusterState::place`](crate::ClusterState::place), which scores
    /// identically over a packed copy of the aggregates.
    pub fn place<'a>(
        self,
        nodes: impl Iterator<Item = &'a NodeState>,
        t_lim: u64,
        t_mem: u64,
    ) -> Option<&'a NodeState> {
        let task = TaskSize::new(t_lim, t_mem);
        let mut best: Option<(Score, &'a NodeState)> = None;
        for node in nodes {
            let Some(key) = self.score(&Slot::from(node), task) else {
                continue;
            };
            let better = match &best {
                None => true,
                Some((best_key, best_node)) => match key.cmp(best_key) {
                    Ordering::Greater => true,
                    Ordering::Less => false,
                    Ordering::Equal => node.node_id < best_node.node_id,
                },
            };
            if better {
                best = Some((key, node));
            }
        }
        best.map(|(_, node)| node)
    }

    /// Like [`Policy::place`] over slots already in node-id order: returns the position of the
    /// best slot, ties to the lowest position. No string comparisons, so a scan costs a few
    /// nanoseconds per node.
    pub(crate) fn place_slots(self, slots: &[Slot], t_lim: u64, t_mem: u64) -> Option<usize> {
        let task = TaskSize::new(t_lim, t_mem);
        let mut best: Option<(Score, usize)> = None;
        for (i, slot) in slots.iter().enumerate() {
            if let Some(key) = self.score(slot, task) {
                if best.is_none_or(|(b, _)| key > b) {
                    best = Some((key, i));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    /// The node's score for the task (greater is better), or `None` if the task does not fit.
    #[inline]
    fn score(self, n: &Slot, t: TaskSize) -> Option<Score> {
        if !n.usable || t.t_lim > n.headroom {
            return None;
        }
        Some(match self {
            // -|(N_req + T_mem) - (N_alloc + T_lim)|, then N_lim - N_alloc - T_lim.
            Policy::FeatureAware => (
                -(n.excess + t.t_mem_s - t.t_lim_s).abs(),
                n.headroom_s - t.t_lim_s,
            ),
            // Surplus N_alloc - N_req for a task that needs more than its limit ...
            Policy::Pairing if t.t_mem > t.t_lim => (-n.excess, 0),
            // ... deficit N_req - N_alloc for one with memory to spare.
            Policy::Pairing => (n.excess, 0),
            Policy::MostFree => (n.headroom_s, 0),
        })
    }
}

/// A score: primary, then secondary key; greater is better.
type Score = (i64, i64);

/// A task's sizes, raw for the filter and clamped for scores.
#[derive(Clone, Copy)]
struct TaskSize {
    t_lim: u64,
    t_mem: u64,
    t_lim_s: i64,
    t_mem_s: i64,
}

impl TaskSize {
    fn new(t_lim: u64, t_mem: u64) -> Self {
        TaskSize {
            t_lim,
            t_mem,
            t_lim_s: score_value(t_lim),
            t_mem_s: score_value(t_mem),
        }
    }
}

/// A node's aggregates as placement sees them, precomputed and packed (32 bytes) so that a
/// scan does a compare and a few adds per node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    /// `N_lim - N_alloc`, exact (meaningful when `usable`).
    headroom: u64,
    /// `N_req - N_alloc` on clamped values.
    excess: i64,
    /// `N_lim - N_alloc` on clamped values.
    headroom_s: i64,
    /// Up and not over-allocated: may take tasks.
    usable: bool,
}

impl From<&NodeState> for Slot {
    fn from(n: &NodeState) -> Self {
        let usable = n.up && n.n_alloc <= n.n_lim;
        Slot {
            headroom: if usable { n.n_lim - n.n_alloc } else { 0 },
            excess: score_value(n.n_req) - score_value(n.n_alloc),
            headroom_s: score_value(n.n_lim) - score_value(n.n_alloc),
            usable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(p.to_string().parse::<Policy>(), Ok(p));
        }
        let err = "best-fit".parse::<Policy>().unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("best-fit") && msg.contains("feature-aware") && msg.contains("most-free")
        );
    }

    #[test]
    fn ties_go_to_lowest_node_id_in_any_order() {
        let node = |id: &str| NodeState::new(id, "addr", 1024);
        let nodes = [node("n3"), node("n1"), node("n2")];
        for p in Policy::ALL {
            assert_eq!(
                p.place(nodes.iter(), 10, 5).map(|n| n.node_id.as_str()),
                Some("n1")
            );
            assert_eq!(
                p.place(nodes.iter().rev(), 10, 5)
                    .map(|n| n.node_id.as_str()),
                Some("n1")
            );
        }
    }

    #[test]
    fn capacity_filter_excludes_full_and_down_nodes() {
        let mut a = NodeState::new("a", "addr", 100);
        a.n_alloc = 60;
        let mut b = NodeState::new("b", "addr", 1000);
        b.up = false;
        let c = NodeState::new("c", "addr", 40);
        for p in Policy::ALL {
            assert!(p.place([&a, &b, &c].into_iter(), 41, 0).is_none());
            let chosen = p
                .place([&a, &b, &c].into_iter(), 40, 0)
                .map(|n| n.node_id.as_str());
            assert!(matches!(chosen, Some("a") | Some("c")), "{p}: {chosen:?}");
        }
    }
}
