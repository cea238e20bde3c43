//! W3C trace context (`traceparent`, `tracestate`) in gRPC metadata.
//!
//! The caller puts its span's context into the outgoing request
//! ([`inject`], [`traced`], or the interceptor [`propagate`]); the callee
//! makes the request's context the parent of its span ([`set_parent_from`])
//! before entering it. Without the OpenTelemetry layer (no OTLP endpoint)
//! spans have no context: nothing is injected and nothing is linked.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

/// Writes `span`'s trace context into `metadata` (nothing when the span is
/// not traced).
pub fn inject(span: &tracing::Span, metadata: &mut MetadataMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
    }
}

/// [`inject`] with the current span.
pub fn inject_current(metadata: &mut MetadataMap) {
    inject(&tracing::Span::current(), metadata);
}

/// The trace context a request carries (an empty context when none).
pub fn extract(metadata: &MetadataMap) -> opentelemetry::Context {
    TraceContextPropagator::new().extract(&MetadataExtractor(metadata))
}

/// Makes the caller's span (from the request's `metadata`) the parent of
/// `span`, which must not have been entered yet. True when a remote parent
/// was found and set.
pub fn set_parent_from(span: &tracing::Span, metadata: &MetadataMap) -> bool {
    let cx = extract(metadata);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}

/// A tonic client interceptor carrying the current span's context:
/// `FooClient::with_interceptor(channel, ephemera_telemetry::propagate)`.
#[allow(clippy::result_large_err)]
pub fn propagate(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    inject_current(request.metadata_mut());
    Ok(request)
}

/// A request for `message` carrying the current span's context.
pub fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    inject_current(request.metadata_mut());
    request
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    fn with_tracer(f: impl FnOnce()) -> Vec<opentelemetry_sdk::trace::SpanData> {
        use opentelemetry::trace::TracerProvider as _;
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
        provider.force_flush().expect("flush");
        exporter.get_finished_spans().expect("spans")
    }

    #[test]
    fn context_crosses_metadata_and_links_parent_to_child() {
        let spans = with_tracer(|| {
            let client = tracing::info_span!("client");
            let mut metadata = MetadataMap::new();
            inject(&client, &mut metadata);
            let traceparent = metadata
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .expect("traceparent injected")
                .to_string();
            assert_eq!(traceparent.split('-').count(), 4, "{traceparent}");
            assert!(traceparent.starts_with("00-"), "{traceparent}");

            // The callee: a span with no local parent, linked by metadata.
            let server = tracing::info_span!(parent: None, "server");
            assert!(set_parent_from(&server, &metadata));
            let _entered = server.enter();
            let _inner = tracing::info_span!("inner").entered();
        });
        let by_name = |n: &str| {
            spans
                .iter()
                .find(|s| s.name == n)
                .unwrap_or_else(|| panic!("no span {n} in {spans:?}"))
        };
        let (client, server, inner) = (by_name("client"), by_name("server"), by_name("inner"));
        let trace = client.span_context.trace_id();
        assert_eq!(server.span_context.trace_id(), trace);
        assert_eq!(inner.span_context.trace_id(), trace);
        assert_eq!(server.parent_span_id, client.span_context.span_id());
        assert_eq!(inner.parent_span_id, server.span_context.span_id());
    }

    #[test]
    fn traced_requests_carry_the_current_span() {
        let spans = with_tracer(|| {
            let span = tracing::info_span!("caller");
            let _entered = span.enter();
            let request = traced(());
            let cx = extract(request.metadata());
            assert_eq!(
                cx.span().span_context().span_id(),
                span.context().span().span_context().span_id()
            );
            let intercepted = propagate(tonic::Request::new(())).expect("interceptor");
            assert!(intercepted.metadata().get("traceparent").is_some());
        });
        assert_eq!(spans.len(), 1);
    }

    #[test]
    fn untraced_spans_inject_nothing() {
        // No OpenTelemetry layer: no context, no header, no parent.
        let span = tracing::info_span!("plain");
        let mut metadata = MetadataMap::new();
        inject(&span, &mut metadata);
        assert!(metadata.is_empty());
        assert!(!set_parent_from(&span, &metadata));
        let garbage = {
            let mut m = MetadataMap::new();
            m.insert(
                "traceparent",
                MetadataValue::from_static("not-a-traceparent"),
            );
            m
        };
        assert!(!extract(&garbage).span().span_context().is_valid());
    }
}
