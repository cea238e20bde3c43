//! A malformed endpoint disables export but not logging, and never panics,
//! even when `init` runs inside an async context.

use ephemera_telemetry::TelemetryConfig;

#[tokio::test]
async fn a_bad_endpoint_exports_nothing_and_does_not_panic() {
    let guard = ephemera_telemetry::init_with(TelemetryConfig {
        service_name: "bad-endpoint-test".into(),
        default_filter: "warn".into(),
        otlp_endpoint: Some("not a url".into()),
    });
    assert!(!guard.exporting());
    let span = tracing::info_span!("still_fine");
    let mut metadata = tonic::metadata::MetadataMap::new();
    ephemera_telemetry::inject(&span, &mut metadata);
    assert!(metadata.is_empty());
    drop(guard);
}
