//! The guard may be dropped inside an async context (here the only thread of
//! a current-thread runtime): the flush runs on threads of its own, so it
//! neither panics nor deadlocks, and the spans arrive.

use std::time::{Duration, Instant};

use ephemera_telemetry::{read_spans, serve_collector, TelemetryConfig};

#[test]
fn dropping_the_guard_on_a_runtime_thread_flushes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("spans.jsonl");
    // The collector runs on a runtime of its own, as a remote one would.
    let collector = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("collector runtime");
    let listener = collector
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = collector.spawn(serve_collector(listener, out.clone(), async move {
        let _ = stopped.await;
    }));

    let app = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("app runtime");
    app.block_on(async {
        let guard = ephemera_telemetry::init_with(TelemetryConfig {
            service_name: "guard-test".into(),
            default_filter: "warn".into(),
            otlp_endpoint: Some(format!("http://{addr}")),
        });
        assert!(guard.exporting());
        tokio::task::yield_now().await;
        drop(tracing::info_span!("async_work").entered());
        let started = Instant::now();
        drop(guard);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the flush took {:?}",
            started.elapsed()
        );
    });

    let deadline = Instant::now() + Duration::from_secs(10);
    while !read_spans(&out)
        .expect("read")
        .iter()
        .any(|s| s.name == "async_work" && s.service_name == "guard-test")
    {
        assert!(Instant::now() < deadline, "the span never arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = stop.send(());
    collector
        .block_on(server)
        .expect("collector task")
        .expect("collector");
    collector.shutdown_background();
}
