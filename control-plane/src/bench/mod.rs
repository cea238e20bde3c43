//! `ephemera bench …`. `scheduler`: the placement policies on their own,
//! outside Raft. With a trace, replays it on a fresh cluster and prints where each
//! task went and each node's demand and allocation (thesis Table 5.3). Without
//! one, times placement decisions on synthetic clusters of growing size.
//! [`placements`]: committed placements per second through a Raft group.
//! [`invoke`]: a warm no-op invocation end to end, split into stages.
//! [`failover`]: a leader's SIGKILL to the next successful invocation.

pub mod failover;
mod group;
pub mod invoke;
pub mod placements;

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use ephemera_storage::{ClusterState, Command, Policy, Response};
use serde_json::json;

use ephemera_domain::format_size;

const MIB: u64 = 1 << 20;

/// One line of a scheduler trace: `name T_lim U_max F_max`, in MiB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceTask {
    /// Task (function) name.
    pub name: String,
    /// Memory limit, bytes.
    pub t_lim: u64,
    /// Peak native memory, bytes.
    pub u_max: u64,
    /// Largest file, bytes.
    pub f_max: u64,
}

/// Parses a trace; blank lines and `#` comments are skipped.
pub fn parse_trace(text: &str) -> anyhow::Result<Vec<TraceTask>> {
    let mut tasks = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, t_lim, u_max, f_max] = fields[..] else {
            anyhow::bail!(
                "trace line {}: expected `name T_lim U_max F_max` (MiB), got {line:?}",
                n + 1
            );
        };
        let mib = |what: &str, v: &str| -> anyhow::Result<u64> {
            let x: u64 = v.parse().with_context(|| {
                format!(
                    "trace line {}: {what} {v:?} is not a whole number of MiB",
                    n + 1
                )
            })?;
            x.checked_mul(MIB)
                .with_context(|| format!("trace line {}: {what} {v} MiB is too large", n + 1))
        };
        let task = TraceTask {
            name: name.to_string(),
            t_lim: mib("T_lim", t_lim)?,
            u_max: mib("U_max", u_max)?,
            f_max: mib("F_max", f_max)?,
        };
        if task.t_lim == 0 {
            anyhow::bail!("trace line {}: T_lim must be positive", n + 1);
        }
        tasks.push(task);
    }
    if tasks.is_empty() {
        anyhow::bail!("the trace holds no task");
    }
    Ok(tasks)
}

fn cluster(nodes: usize, node_memory: u64) -> ClusterState {
    let mut state = ClusterState::default();
    for i in 1..=nodes {
        let r = state.apply(&Command::RegisterNode {
            node_id: format!("node-{i}"),
            addr: format!("sim://node-{i}"),
            memory_bytes: node_memory,
        });
        debug_assert!(r.is_accepted());
    }
    state
}

/// Replays `tasks` with `policy` and prints the outcome (as JSON with `json`).
pub fn replay(
    policy: Policy,
    nodes: usize,
    node_memory: u64,
    trace: &Path,
    as_json: bool,
) -> anyhow::Result<()> {
    if nodes == 0 {
        anyhow::bail!("--nodes must be at least 1");
    }
    if node_memory == 0 {
        anyhow::bail!("--node-memory must be positive");
    }
    let text = std::fs::read_to_string(trace)
        .with_context(|| format!("reading the trace {}", trace.display()))?;
    let tasks = parse_trace(&text).with_context(|| format!("in {}", trace.display()))?;
    let mut state = cluster(nodes, node_memory);
    let mut placements = Vec::new();
    for (i, t) in tasks.iter().enumerate() {
        let resp = state.apply(&Command::Schedule {
            invocation_id: format!("task-{i}"),
            tenant: "trace".into(),
            function: t.name.clone(),
            t_lim: t.t_lim,
            t_mem: t.u_max + t.f_max,
            policy,
        });
        placements.push(match resp {
            Response::Placed { node_id, .. } => (t.name.clone(), Some(node_id), None),
            Response::Rejected { reason } => (t.name.clone(), None, Some(reason)),
            other => (
                t.name.clone(),
                None,
                Some(format!("no placement: {other:?}")),
            ),
        });
    }
    state
        .check_invariants()
        .map_err(|e| anyhow::anyhow!("state invariant broken: {e}"))?;
    let node_rows: Vec<serde_json::Value> = state
        .nodes
        .values()
        .map(|n| {
            let names: Vec<&str> = n
                .tasks
                .iter()
                .filter_map(|id| state.tasks.get(id).map(|t| t.function.as_str()))
                .collect();
            json!({
                "node_id": n.node_id,
                "capacity_mib": n.n_lim / MIB,
                "demand_mib": n.n_req / MIB,
                "allocated_mib": n.n_alloc / MIB,
                // Memory the node's tasks can use: their demand, capped by what
                // the node allocated to them (lending moves memory only inside
                // the allocation).
                "served_mib": n.n_req.min(n.n_alloc) / MIB,
                "tasks": names,
            })
        })
        .collect();
    if as_json {
        let out = json!({
            "policy": policy.to_string(),
            "nodes": node_rows,
            "placements": placements.iter().map(|(name, node, err)| json!({
                "task": name, "node_id": node, "error": err,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "policy {policy}, {nodes} nodes of {}, {} tasks from {}",
        format_size(node_memory),
        tasks.len(),
        trace.display()
    );
    for (name, node, err) in &placements {
        match (node, err) {
            (Some(node), _) => println!("  {name:<24} -> {node}"),
            (None, Some(err)) => println!("  {name:<24} -> rejected: {err}"),
            (None, None) => println!("  {name:<24} -> ?"),
        }
    }
    println!(
        "{:<10} {:>12} {:>12} {:>12}  TASKS",
        "NODE", "DEMAND MiB", "ALLOC MiB", "SERVED MiB"
    );
    for row in &node_rows {
        println!(
            "{:<10} {:>12} {:>12} {:>12}  {}",
            row["node_id"].as_str().unwrap_or(""),
            row["demand_mib"].as_u64().unwrap_or(0),
            row["allocated_mib"].as_u64().unwrap_or(0),
            row["served_mib"].as_u64().unwrap_or(0),
            row["tasks"].as_array().map(|a| a.len()).unwrap_or(0)
        );
    }
    Ok(())
}

/// Times `Schedule` + `Complete` on synthetic clusters of 10 to 10,000 nodes.
pub fn time_decisions(policy: Policy, sizes: &[usize], as_json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &n in sizes {
        let mut state = cluster(n, 64 << 30);
        // Load the cluster unevenly so the policies have real choices to make.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..n * 4 {
            let t_lim = (64 + next() % 960) * MIB;
            let t_mem = (next() % 1500) * MIB;
            state.apply(&Command::Schedule {
                invocation_id: format!("bg-{i}"),
                tenant: "bench".into(),
                function: "bg".into(),
                t_lim,
                t_mem,
                policy,
            });
        }
        let rounds = (200_000 / n).clamp(200, 20_000);
        let tasks: Vec<(u64, u64)> = (0..rounds)
            .map(|_| ((128 + next() % 512) * MIB, (next() % 800) * MIB))
            .collect();
        // The decision alone: what `Schedule` computes before it records the task.
        let start = Instant::now();
        let mut placeable = 0usize;
        for &(t_lim, t_mem) in &tasks {
            if std::hint::black_box(state.place(policy, t_lim, t_mem)).is_some() {
                placeable += 1;
            }
        }
        let decide = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        // The whole state-machine cost: Schedule (decide and record), then Complete.
        let mut placed = 0u64;
        let start = Instant::now();
        for (i, &(t_lim, t_mem)) in tasks.iter().enumerate() {
            let id = format!("t-{i}");
            if let Response::Placed { .. } = state.apply(&Command::Schedule {
                invocation_id: id.clone(),
                tenant: "bench".into(),
                function: "f".into(),
                t_lim,
                t_mem,
                policy,
            }) {
                placed += 1;
            }
            state.apply(&Command::Complete { invocation_id: id });
        }
        let apply = start.elapsed().as_secs_f64() * 1e6 / rounds as f64;
        state
            .check_invariants()
            .map_err(|e| anyhow::anyhow!("state invariant broken: {e}"))?;
        rows.push(json!({
            "nodes": n, "rounds": rounds, "placeable": placeable, "placed": placed,
            "us_per_decision": decide, "us_per_schedule_complete": apply,
        }));
    }
    if as_json {
        let out = json!({"policy": policy.to_string(), "results": rows});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("policy {policy}: µs per placement decision, and per Schedule + Complete applied");
        println!(
            "{:>8} {:>8} {:>12} {:>20}",
            "NODES", "ROUNDS", "µs/DECISION", "µs/SCHEDULE+COMPLETE"
        );
        for r in &rows {
            println!(
                "{:>8} {:>8} {:>12.3} {:>20.3}",
                r["nodes"].as_u64().unwrap_or(0),
                r["rounds"].as_u64().unwrap_or(0),
                r["us_per_decision"].as_f64().unwrap_or(0.0),
                r["us_per_schedule_complete"].as_f64().unwrap_or(0.0)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_thesis_trace_format() {
        let t = parse_trace("io 150 2 256\n# comment\n\ncpu 300 4 0\n").unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            t[0],
            TraceTask {
                name: "io".into(),
                t_lim: 150 * MIB,
                u_max: 2 * MIB,
                f_max: 256 * MIB
            }
        );
    }

    #[test]
    fn malformed_traces_name_the_line() {
        let e = parse_trace("io 150 2 256\ncpu 300 four 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("four"), "{e}");
        let e = parse_trace("io 150 2\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = parse_trace("io 0 2 3\n").unwrap_err().to_string();
        assert!(e.contains("T_lim"), "{e}");
        assert!(parse_trace("\n# nothing\n").is_err());
    }
}
