//! One invocation is one trace: `ephemera invoke` (CLI) → controller
//! `invoke` → `schedule` (the Raft write) → agent `agent_run` → tenant actor
//! `reallocate` → `instance_run`, exported over OTLP/gRPC by two processes
//! (the CLI and `ephemera dev`) to an in-process collector.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{repo, DevCluster};
use ephemera_telemetry::{read_spans, serve_collector, SpanRecord, INVOCATION_SPANS};

/// Makes every process this test starts (they inherit the environment)
/// export its spans to `endpoint`, in batches every 200 ms. Called before any
/// other thread exists in this test process.
fn export_traces_to(endpoint: &str) {
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
    std::env::set_var("OTEL_BSP_SCHEDULE_DELAY", "200");
    std::env::remove_var("EPHEMERA_TRACE");
}

/// The spans of the trace whose controller `invoke` span ran `invocation_id`,
/// once every span of [`INVOCATION_SPANS`] is in it.
fn wait_for_trace(path: &Path, invocation_id: &str) -> (Vec<SpanRecord>, Vec<SpanRecord>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = read_spans(path).expect("reading the collector's file");
        let trace_id = all
            .iter()
            .find(|s| s.name == "invoke" && s.attr_str("invocation_id") == Some(invocation_id))
            .map(|s| s.trace_id.clone());
        if let Some(trace_id) = trace_id {
            let trace: Vec<SpanRecord> = all
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            if INVOCATION_SPANS
                .iter()
                .all(|n| trace.iter().any(|s| s.name == *n))
            {
                return (trace, all);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no complete trace of invocation {invocation_id} within 30 s; the collector holds {all:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn one<'a>(trace: &'a [SpanRecord], name: &str) -> &'a SpanRecord {
    let found: Vec<&SpanRecord> = trace.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "expected one {name} span in {trace:#?}");
    found[0]
}

#[test]
fn an_invocation_is_one_trace_from_the_cli_to_the_instance() {
    let data = tempfile::tempdir().expect("tempdir");
    let spans_file = data.path().join("spans.jsonl");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the collector");
    let addr = listener.local_addr().expect("collector address");
    listener.set_nonblocking(true).expect("nonblocking");
    export_traces_to(&format!("http://{addr}"));

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener).expect("tokio listener")
    };
    let (stop_collector, stopped) = tokio::sync::oneshot::channel::<()>();
    let collector = runtime.spawn(serve_collector(listener, spans_file.clone(), async move {
        let _ = stopped.await;
    }));

    let cluster = DevCluster::start(&data.path().join("dev"), 1);
    cluster.deploy(
        "demo",
        "cpu",
        &repo().join("examples/functions/cpu_heavy"),
        "ephemera-python handler.py",
        "128MiB",
    );
    let out = cluster.ok(&[
        "invoke",
        "demo/cpu",
        "--input",
        r#"{"n": 300}"#,
        "--details",
    ]);
    let reply: serde_json::Value = serde_json::from_str(&out).expect("invoke --details JSON");
    assert_eq!(reply["result"]["n"], 300, "{reply}");
    let invocation_id = reply["invocation_id"]
        .as_str()
        .expect("invocation id")
        .to_string();
    let node = reply["node_id"].as_str().expect("node id").to_string();
    // SIGTERM: `ephemera dev` flushes its last spans on the way out.
    cluster.stop();

    let (trace, all) = wait_for_trace(&spans_file, &invocation_id);

    // One trace: no span of the chain for this invocation lives elsewhere.
    let traces: BTreeSet<&str> = all
        .iter()
        .filter(|s| INVOCATION_SPANS.contains(&s.name.as_str()))
        .map(|s| s.trace_id.as_str())
        .collect();
    assert_eq!(traces.len(), 1, "one invocation, one trace: {all:#?}");

    let cli = one(&trace, "cli_invoke");
    let invoke = one(&trace, "invoke");
    let schedule = one(&trace, "schedule");
    let agent = one(&trace, "agent_run");
    let reallocate = one(&trace, "reallocate");
    let run = one(&trace, "instance_run");

    // Parent → child, across two processes and two gRPC hops.
    assert!(cli.is_root(), "{cli:?}");
    assert_eq!(cli.service_name, "ephemera-cli");
    assert_eq!(invoke.parent_span_id, cli.span_id, "{invoke:?}");
    assert_eq!(schedule.parent_span_id, invoke.span_id, "{schedule:?}");
    assert_eq!(agent.parent_span_id, invoke.span_id, "{agent:?}");
    assert_eq!(reallocate.parent_span_id, agent.span_id, "{reallocate:?}");
    assert_eq!(run.parent_span_id, agent.span_id, "{run:?}");
    for s in [invoke, schedule, agent, reallocate, run] {
        assert_eq!(s.service_name, "ephemera-dev", "{s:?}");
    }
    assert!(cli.start_ns <= invoke.start_ns && invoke.end_ns <= cli.end_ns);
    assert!(schedule.end_ns <= agent.start_ns);

    // What matters, as attributes.
    assert_eq!(cli.attr_str("tenant"), Some("demo"));
    assert_eq!(cli.attr_str("invocation_id"), Some(invocation_id.as_str()));
    assert_eq!(invoke.attr_str("function"), Some("cpu"));
    assert_eq!(invoke.attr_str("node"), Some(node.as_str()));
    assert_eq!(invoke.attr_str("policy"), Some("feature-aware"));
    assert!(invoke.attr_u64("tier_reads").is_some(), "{invoke:?}");
    assert_eq!(schedule.attr_str("node"), Some(node.as_str()));
    assert_eq!(schedule.attr_str("policy"), Some("feature-aware"));
    assert_eq!(agent.attr_str("node"), Some(node.as_str()));
    assert!(reallocate.attr_u64("lent").is_some(), "{reallocate:?}");
    assert!(reallocate.attr_u64("borrowed").is_some(), "{reallocate:?}");
    for counter in [
        "tier_reads",
        "tier_writes",
        "tier_bytes_read",
        "tier_bytes_written",
        "tier_evictions",
    ] {
        assert!(
            run.attr_u64(counter).is_some(),
            "{counter} missing on {run:?}"
        );
    }

    let _ = stop_collector.send(());
    runtime
        .block_on(collector)
        .expect("collector task")
        .expect("collector");
}
