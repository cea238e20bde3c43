//! The whole path in one process: the global subscriber exports over
//! OTLP/gRPC to an in-process collector, and a trace context crosses a gRPC
//! metadata hop (as HTTP/2 headers) between a client and a server span.

use std::time::{Duration, Instant};

use ephemera_telemetry::{
    inject, read_spans, serve_collector, set_parent_from, SpanRecord, TelemetryConfig,
};
use tonic::metadata::MetadataMap;

fn wait_for_spans(path: &std::path::Path, names: &[&str]) -> Vec<SpanRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = read_spans(path).expect("reading the collector's file");
        if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
            return spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans {names:?} did not all arrive; the collector has {spans:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn spans_reach_the_collector_linked_across_a_metadata_hop() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("spans.jsonl");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(serve_collector(listener, out.clone(), async move {
        let _ = stopped.await;
    }));

    let guard = ephemera_telemetry::init_with(TelemetryConfig {
        service_name: "telemetry-test".into(),
        default_filter: "warn".into(),
        otlp_endpoint: Some(format!("http://{addr}")),
    });
    assert!(guard.exporting());
    {
        let client = tracing::info_span!("client_call", node = "node-7", lent = 42u64);
        let _entered = client.enter();
        let mut outgoing = MetadataMap::new();
        inject(&client, &mut outgoing);
        // On the wire the metadata are HTTP/2 headers.
        let incoming = MetadataMap::from_headers(outgoing.into_headers());

        let server_span = tracing::info_span!(parent: None, "server_handle");
        assert!(set_parent_from(&server_span, &incoming));
        let _server = server_span.enter();
        let _inner = tracing::info_span!("inner_work").entered();
    }
    // Dropping the guard flushes the batch; here on a plain thread, as
    // `main` would at exit.
    drop(guard);

    let spans = wait_for_spans(&out, &["client_call", "server_handle", "inner_work"]);
    let by_name = |n: &str| spans.iter().find(|s| s.name == n).expect("span");
    let (client, server_span, inner) = (
        by_name("client_call"),
        by_name("server_handle"),
        by_name("inner_work"),
    );
    assert!(client.is_root());
    assert_eq!(client.trace_id.len(), 32);
    assert_eq!(server_span.trace_id, client.trace_id);
    assert_eq!(inner.trace_id, client.trace_id);
    assert_eq!(server_span.parent_span_id, client.span_id);
    assert_eq!(inner.parent_span_id, server_span.span_id);
    assert!(spans.iter().all(|s| s.service_name == "telemetry-test"));
    assert_eq!(client.attr_str("node"), Some("node-7"));
    assert_eq!(client.attr_u64("lent"), Some(42));
    assert!(client.start_ns > 0 && client.end_ns >= client.start_ns);

    let _ = stop.send(());
    runtime
        .block_on(server)
        .expect("collector task")
        .expect("collector");
}
