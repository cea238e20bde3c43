//! `ephemera bench scheduler` as a user runs it: the thesis's six-task trace
//! on two 1024 MiB nodes reproduces Table 5.3 under `pairing` and the
//! baseline, and bad traces and sizes are clear errors.

mod common;

use serde_json::Value;

/// The thesis's trace (`../shared/traces/input_tenant_scheduler.txt`).
const TRACE: &str = "io_intense_task1 150 2 256
cpu_intense_task1 300 4 0
io_intense_task2 150 2 256
io_intense_task3 150 2 256
cpu_intense_task2 300 4 0
io_intense_task4 150 2 256
";

fn bench(args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::ephemera())
        .args(["bench", "scheduler"])
        .args(args)
        .output()
        .expect("run ephemera bench scheduler")
}

fn nodes(policy: &str, trace: &std::path::Path) -> Vec<(u64, u64)> {
    let out = bench(&[
        "--policy",
        policy,
        "--nodes",
        "2",
        "--node-memory",
        "1024MiB",
        "--json",
        "--trace",
        trace.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["demand_mib"].as_u64().unwrap(),
                n["allocated_mib"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_thesis_trace_reproduces_table_5_3() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.txt");
    std::fs::write(&trace, TRACE).unwrap();
    // Demand / allocation per node, MiB (thesis Table 5.3).
    assert_eq!(nodes("pairing", &trace), [(778, 750), (262, 450)]);
    assert_eq!(nodes("most-free", &trace), [(1032, 600), (8, 600)]);
    // Feature-aware keeps every node within capacity too.
    for (_, alloc) in nodes("feature-aware", &trace) {
        assert!(alloc <= 1024);
    }
    // The shared copy of the trace, when present, is the same trace.
    let shared = common::repo().join("../shared/traces/input_tenant_scheduler.txt");
    if shared.exists() {
        assert_eq!(nodes("pairing", &shared), [(778, 750), (262, 450)]);
    }
}

#[test]
fn bad_traces_and_sizes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "io 150 2 256\ncpu 300 lots 0\n").unwrap();
    let out = bench(&["--trace", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("lots"), "{err}");

    let out = bench(&["--trace", "/no/such/trace.txt"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/no/such/trace.txt"));

    let out = bench(&[
        "--node-memory",
        "12 parsecs",
        "--trace",
        bad.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("parsecs"));

    let out = bench(&["--policy", "random", "--trace", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("random"));
}
