//! The process-wide subscriber: logs to stderr, and spans to an OTLP/gRPC
//! collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! The exporter's gRPC channel lives on a small runtime of its own (one
//! worker thread), not on the application's: the batch processor's thread
//! drives exports through that channel, so flushing at exit never waits on a
//! runtime whose threads are busy shutting down, and [`TelemetryGuard`] can
//! be dropped anywhere, inside an async context included.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Where spans go; unset means no export.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The log filter (`tracing_subscriber::EnvFilter` syntax).
pub const LOG_ENV: &str = "EPHEMERA_LOG";
/// The filter of exported spans, when the default below does not suit.
pub const TRACE_FILTER_ENV: &str = "EPHEMERA_TRACE";
/// Exported spans by default: everything at `info` of our crates, nothing of
/// the transport stack (the exporter's own gRPC calls would trace themselves).
pub const DEFAULT_TRACE_FILTER: &str = "info,openraft=warn,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,opentelemetry=off,opentelemetry_sdk=off,opentelemetry_otlp=off";
/// How long dropping the guard waits for the last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the exporter could not be set up (logging works regardless).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The exporter's runtime did not start.
    #[error("starting the OTLP exporter's runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The exporter rejected its configuration (a bad endpoint, say).
    #[error("OTLP exporter for {endpoint}: {source}")]
    Exporter {
        /// The configured endpoint.
        endpoint: String,
        /// What the exporter said.
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// What [`init_with`] sets up.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name` of exported spans (`ephemera-controller`, ...).
    pub service_name: String,
    /// Log filter when `EPHEMERA_LOG` is unset.
    pub default_filter: String,
    /// OTLP/gRPC endpoint (`http://host:4317`; `host:4317` means the same,
    /// TLS is not built in); `None` exports nothing.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// `service_name` and `default_filter`, the endpoint from
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (empty counts as unset).
    pub fn from_env(service_name: &str, default_filter: &str) -> Self {
        TelemetryConfig {
            service_name: service_name.to_string(),
            default_filter: default_filter.to_string(),
            otlp_endpoint: std::env::var(OTLP_ENDPOINT_ENV)
                .ok()
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty()),
        }
    }
}

/// Keeps the exporter alive; dropping it exports what is buffered (waiting at
/// most a few seconds) and stops the exporter. Hold it until the process ends.
#[derive(Debug, Default)]
#[must_use = "dropping the guard stops the span exporter"]
pub struct TelemetryGuard {
    exporter: Option<Exporter>,
}

impl TelemetryGuard {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.exporter.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(exporter) = self.exporter.take() {
            exporter.shutdown();
        }
    }
}

#[derive(Debug)]
struct Exporter {
    provider: SdkTracerProvider,
    /// Drives the exporter's gRPC channel.
    runtime: tokio::runtime::Runtime,
}

impl Exporter {
    fn start(service_name: &str, endpoint: &str) -> Result<Exporter, SetupError> {
        // No TLS here: `host:4317` means plain `http://host:4317`.
        let endpoint = if endpoint.contains("://") {
            endpoint.to_string()
        } else {
            format!("http://{endpoint}")
        };
        let endpoint = endpoint.as_str();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ephemera-otlp")
            .enable_all()
            .build()?;
        // The channel's background tasks are spawned on `runtime`.
        let built = {
            let _entered = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map(|exporter| {
                    SdkTracerProvider::builder()
                        .with_resource(
                            Resource::builder()
                                .with_service_name(service_name.to_string())
                                .build(),
                        )
                        .with_batch_exporter(exporter)
                        .build()
                })
        };
        match built {
            Ok(provider) => Ok(Exporter { provider, runtime }),
            Err(source) => {
                // Dropping a runtime inside an async context panics.
                runtime.shutdown_background();
                Err(SetupError::Exporter {
                    endpoint: endpoint.to_string(),
                    source,
                })
            }
        }
    }

    /// Flushes and stops the provider from a thread of its own: the batch
    /// processor blocks its caller until the export is done, which must not
    /// be a thread the export depends on.
    fn shutdown(self) {
        let Exporter { provider, runtime } = self;
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("ephemera-otlp-shutdown".into())
            .spawn(move || {
                let _ = tx.send(provider.shutdown_with_timeout(FLUSH_TIMEOUT));
            });
        match spawned {
            Ok(_) => match rx.recv_timeout(FLUSH_TIMEOUT + Duration::from_secs(1)) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("exporting the last spans: {e}"),
                Err(_) => tracing::warn!("exporting the last spans timed out"),
            },
            Err(e) => tracing::warn!("cannot start the span flush thread: {e}"),
        }
        runtime.shutdown_background();
    }
}

/// [`init_with`] with the endpoint from the environment.
pub fn init(service_name: &str, default_filter: &str) -> TelemetryGuard {
    init_with(TelemetryConfig::from_env(service_name, default_filter))
}

/// Installs the global subscriber: a stderr log layer filtered by
/// `EPHEMERA_LOG` (else `config.default_filter`), and with an endpoint an
/// OpenTelemetry layer (filter `EPHEMERA_TRACE`, else
/// [`DEFAULT_TRACE_FILTER`]) exporting in batches over OTLP/gRPC. Sets the
/// W3C trace-context propagator globally. A second call in one process
/// leaves the first subscriber in place and exports nothing.
pub fn init_with(config: TelemetryConfig) -> TelemetryGuard {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let log_filter =
        EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new(&config.default_filter));
    // Colour only for a person at a terminal, and never with NO_COLOR set.
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_filter(log_filter);
    let (exporter, setup_error) = match config.otlp_endpoint.as_deref() {
        Some(endpoint) => match Exporter::start(&config.service_name, endpoint) {
            Ok(e) => (Some(e), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, None),
    };
    let otel = exporter.as_ref().map(|e| {
        let trace_filter = EnvFilter::try_from_env(TRACE_FILTER_ENV)
            .unwrap_or_else(|_| EnvFilter::new(DEFAULT_TRACE_FILTER));
        tracing_opentelemetry::layer()
            .with_tracer(e.provider.tracer("ephemera"))
            .with_filter(trace_filter)
    });
    if tracing_subscriber::registry()
        .with(otel)
        .with(fmt)
        .try_init()
        .is_err()
    {
        // Someone else's subscriber is in place: our tracer would be unused.
        if let Some(e) = exporter {
            e.shutdown();
        }
        return TelemetryGuard::default();
    }
    if let Some(e) = setup_error {
        tracing::warn!("traces are not exported: {e}");
    } else if let Some(endpoint) = &config.otlp_endpoint {
        tracing::debug!(%endpoint, service = %config.service_name, "exporting traces over OTLP/gRPC");
    }
    TelemetryGuard { exporter }
}
