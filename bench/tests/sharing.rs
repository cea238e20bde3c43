//! The issue-5 bench with tiny sizes, so it cannot rot: every scenario runs
//! through the real process runtime, proxy, launcher and intercept.
//!
//! The proxy and the intercept are other crates' artifacts: this test finds
//! them where the workspace build puts them (`target/<profile>/`), and skips,
//! loudly, when either is missing. `cargo test -p ephemera-node-agent -p
//! ephemera-bench` builds the proxy; `cargo build -p ephemera-intercept`
//! the intercept.

use std::path::PathBuf;

use ephemera_bench::{sharing_mix, MixOptions};

/// `name` in `target/<profile>/`, beside this test binary's `deps/`.
fn artifact(name: &str, built_by: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().expect("the test binary's path");
    let found = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join(name))
        .filter(|p| p.exists());
    if found.is_none() {
        eprintln!(
            "\n!!! {name} is missing next to {}: SKIPPING the bench test. \
             Build it first: {built_by}\n",
            exe.display()
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_mix_runs_with_tiny_sizes() {
    let (Some(proxy), Some(so)) = (
        artifact("ephemera-proxy", "cargo build -p ephemera-node-agent"),
        artifact(
            "libephemera_intercept.so",
            "cargo build -p ephemera-intercept",
        ),
    ) else {
        return;
    };
    let mut o = MixOptions::new(proxy, so);
    o.io_file_mib = 4;
    o.io_ops = 2000;
    o.cpu_rounds = Some(30);
    o.repetitions = 1;
    o.decision_rounds = 1000;
    o.cpu_ab_rounds = 2;
    o.cpu_ab_ms = 30;
    let report = sharing_mix(o).await.expect("bench");
    let names: Vec<&str> = report.scenarios.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "disk",
            "none",
            "function",
            "workflow",
            "workflow-seq",
            "tenant"
        ]
    );
    for s in &report.scenarios {
        assert!(s.io_mean_ms > 0.0 && s.cpu_mean_ms > 0.0, "{s:?}");
        if s.tier {
            assert!(s.io_tier_bytes > 0, "the tier served {}: {s:?}", s.name);
        }
    }
    let lim = |n: &str| report.scenario(n).unwrap().io_limit_mib;
    // Sharing only where a lender of the same scope runs concurrently.
    assert_eq!(lim("none"), 150.0);
    assert_eq!(lim("function"), 150.0);
    assert_eq!(lim("workflow-seq"), 150.0);
    assert!(lim("tenant") > 150.0, "tenant scope borrows: {report}");
    assert!(lim("workflow") > 150.0, "workflow scope borrows: {report}");
    // Next to an idle borrower, the CPU instance lends only with sharing.
    let cpu_lim = |n: &str| report.scenario(n).unwrap().cpu_limit_idle_partner_mib;
    assert_eq!(cpu_lim("none"), 300.0);
    assert!(cpu_lim("tenant") < 300.0, "lent: {report}");
    for n in ["disk", "none", "tenant"] {
        assert!(report
            .scenario(n)
            .unwrap()
            .cpu_idle_partner_mean_ms
            .is_some());
    }
    // The interleaved CPU rounds: one invocation per condition per round,
    // and the lending condition really lent.
    let ab = report.cpu_ab.as_ref().expect("cpu A/B rounds ran");
    assert_eq!(ab.rounds, 2);
    for v in [&ab.disk_ms, &ab.tier_ms, &ab.lending_ms] {
        assert_eq!(v.len(), 2, "{ab:?}");
        assert!(v.iter().all(|ms| *ms > 0.0), "{ab:?}");
    }
    assert_eq!(ab.preload.change_pct.len(), 2);
    assert!(ab.lending_limit_mib < 300.0, "lent in every round: {ab:?}");
    assert_eq!(report.decision.len(), 2);
    let text = report.to_string();
    assert!(text.contains("decision time"), "{text}");
    assert!(text.contains("lending (lending vs tier)"), "{text}");
    serde_json::to_string(&report).expect("serialize");
    eprintln!("{text}");
}
