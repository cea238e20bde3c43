//! Ephemera's observability: every process logs through `tracing`, and each
//! invocation is one OpenTelemetry trace from the CLI through the controller,
//! the Raft `Schedule` write, the node agent, the tenant actor and the
//! function instance. [`init`] installs a stderr log layer (filtered by
//! `EPHEMERA_LOG`) and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, a
//! `tracing-opentelemetry` layer with an OTLP/gRPC batch exporter. The W3C
//! `traceparent` travels in gRPC metadata: the caller [`inject`]s its span's
//! context, the callee [`set_parent_from`] the request's metadata. A small
//! collector ([`collector`], binary `ephemera-collector`) receives OTLP/gRPC
//! traces and appends each span as one JSON line to a file, for tests and for
//! users without another collector. This crate knows nothing of Ephemera's
//! services; the other crates call it.
//!
//! Environment: `OTEL_EXPORTER_OTLP_ENDPOINT` (`http://host:4317`; unset:
//! no export), the SDK's `OTEL_BSP_*` batch settings (`OTEL_BSP_SCHEDULE_DELAY`
//! in ms), `EPHEMERA_LOG` (log filter), `EPHEMERA_TRACE` (filter of exported
//! spans, default [`setup::DEFAULT_TRACE_FILTER`]). The collector:
//! `ephemera-collector --listen 0.0.0.0:4317 --out spans.jsonl`. Span fields
//! recorded as `u64` arrive as decimal strings (that is how
//! `tracing-opentelemetry` exports them); [`SpanRecord::attr_u64`] reads both.
//!
//! Layout:
//! - [`setup`]: [`init`], the subscriber and exporter, [`TelemetryGuard`].
//! - [`propagation`]: [`inject`], [`extract`], [`set_parent_from`], the
//!   client interceptor [`propagate`].
//! - [`collector`]: the OTLP/gRPC trace receiver, [`SpanRecord`],
//!   [`read_spans`].

pub mod collector;
pub mod propagation;
pub mod setup;

pub use collector::{read_spans, serve_collector, CollectorError, SpanRecord};

/// The spans one invocation leaves, parent before child: the CLI's
/// `cli_invoke`, the controller's `invoke` and its Raft `schedule`, the
/// agent's `agent_run`, and under it the tenant actor's `reallocate` and
/// the `instance_run`. Tests find an invocation's trace by these names.
pub const INVOCATION_SPANS: [&str; 6] = [
    "cli_invoke",
    "invoke",
    "schedule",
    "agent_run",
    "reallocate",
    "instance_run",
];
pub use propagation::{extract, inject, inject_current, propagate, set_parent_from, traced};
pub use setup::{init, init_with, TelemetryConfig, TelemetryGuard, OTLP_ENDPOINT_ENV};
