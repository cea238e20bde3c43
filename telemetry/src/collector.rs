//! A minimal OTLP/gRPC trace receiver: every span it receives becomes one
//! JSON line ([`SpanRecord`]) appended to a file, which tests and users read
//! back with [`read_spans`] (or `jq`). It keeps nothing in memory and does no
//! sampling, batching or forwarding.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Largest export request accepted.
const MAX_REQUEST_BYTES: usize = 64 << 20;

/// Errors of the collector and of reading its file.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The span file could not be opened, written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A line of the span file is not a span record.
    #[error("{path} line {line}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        source: serde_json::Error,
    },
    /// The gRPC server failed.
    #[error("collector server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// One received span, as one line of the collector's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpanRecord {
    /// Trace id, 32 hex digits.
    pub trace_id: String,
    /// Span id, 16 hex digits.
    pub span_id: String,
    /// The parent's span id; empty for a root span.
    pub parent_span_id: String,
    /// Span name (`invoke`, `schedule`, `agent_run`, ...).
    pub name: String,
    /// The resource's `service.name` (`ephemera-controller`, ...).
    pub service_name: String,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
    /// Span attributes (tracing fields), as JSON values.
    pub attributes: BTreeMap<String, serde_json::Value>,
}

impl SpanRecord {
    /// A string attribute.
    pub fn attr_str(&self, key: &str) -> Option<&str> {
        self.attributes.get(key)?.as_str()
    }

    /// An integer attribute (also from a decimal string).
    pub fn attr_u64(&self, key: &str) -> Option<u64> {
        match self.attributes.get(key)? {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// Whether this is a trace's root span.
    pub fn is_root(&self) -> bool {
        self.parent_span_id.is_empty()
    }
}

fn json_of(value: Option<&AnyValue>) -> serde_json::Value {
    use serde_json::Value as J;
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        return J::Null;
    };
    match value {
        any_value::Value::StringValue(s) => J::String(s.clone()),
        any_value::Value::BoolValue(b) => J::Bool(*b),
        any_value::Value::IntValue(i) => J::from(*i),
        any_value::Value::DoubleValue(d) => J::from(*d),
        any_value::Value::ArrayValue(a) => {
            J::Array(a.values.iter().map(|v| json_of(Some(v))).collect())
        }
        any_value::Value::KvlistValue(kv) => {
            J::Object(attributes_of(&kv.values).into_iter().collect())
        }
        any_value::Value::BytesValue(b) => J::String(hex::encode(b)),
        // Profiling-only string-table references mean nothing for traces.
        #[allow(unreachable_patterns)]
        _ => J::Null,
    }
}

fn attributes_of(kvs: &[KeyValue]) -> BTreeMap<String, serde_json::Value> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), json_of(kv.value.as_ref())))
        .collect()
}

/// The records of one export request.
pub fn records_of(request: &ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        let service_name = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .and_then(|kv| json_of(kv.value.as_ref()).as_str().map(str::to_string))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                out.push(SpanRecord {
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    name: span.name.clone(),
                    service_name: service_name.clone(),
                    start_ns: span.start_time_unix_nano,
                    end_ns: span.end_time_unix_nano,
                    attributes: attributes_of(&span.attributes),
                });
            }
        }
    }
    out
}

#[derive(Debug)]
struct Receiver {
    path: PathBuf,
    file: tokio::sync::Mutex<tokio::fs::File>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let records = records_of(request.get_ref());
        let mut lines = Vec::new();
        for r in &records {
            serde_json::to_writer(&mut lines, r)
                .map_err(|e| Status::internal(format!("encoding a span: {e}")))?;
            lines.push(b'\n');
        }
        let mut file = self.file.lock().await;
        let written = async {
            file.write_all(&lines).await?;
            file.flush().await
        };
        written.await.map_err(|e| {
            tracing::warn!(path = %self.path.display(), "cannot append spans: {e}");
            Status::internal(format!("{}: {e}", self.path.display()))
        })?;
        tracing::debug!(spans = records.len(), "received spans");
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Serves OTLP/gRPC trace export on `listener`, appending each received span
/// as a JSON line to `out` (created if missing), until `shutdown` resolves.
pub async fn serve_collector(
    listener: TcpListener,
    out: impl Into<PathBuf>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CollectorError> {
    let path = out.into();
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .await
        .map_err(|source| CollectorError::Io {
            path: path.clone(),
            source,
        })?;
    let service = TraceServiceServer::new(Receiver {
        path,
        file: tokio::sync::Mutex::new(file),
    })
    .max_decoding_message_size(MAX_REQUEST_BYTES);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await?;
    Ok(())
}

/// Every span in a collector's file, in arrival order. A missing file holds
/// no spans; a last line still being written is skipped.
pub fn read_spans(path: &Path) -> Result<Vec<SpanRecord>, CollectorError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CollectorError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            serde_json::from_str(l).map_err(|source| CollectorError::Parse {
                path: path.to_path_buf(),
                line: n + 1,
                source,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    #[test]
    fn records_carry_ids_service_and_attributes() {
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "service.name",
                        any_value::Value::StringValue("svc".into()),
                    )],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![1; 8],
                        parent_span_id: vec![],
                        name: "root".into(),
                        start_time_unix_nano: 10,
                        end_time_unix_nano: 20,
                        attributes: vec![
                            kv("node", any_value::Value::StringValue("node-1".into())),
                            kv("lent", any_value::Value::IntValue(42)),
                            kv("ok", any_value::Value::BoolValue(true)),
                        ],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let records = records_of(&request);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.trace_id, "ab".repeat(16));
        assert_eq!(r.span_id, "0101010101010101");
        assert!(r.is_root());
        assert_eq!(r.service_name, "svc");
        assert_eq!((r.start_ns, r.end_ns), (10, 20));
        assert_eq!(r.attr_str("node"), Some("node-1"));
        assert_eq!(r.attr_u64("lent"), Some(42));
        assert_eq!(r.attributes["ok"], serde_json::Value::Bool(true));
    }

    #[test]
    fn read_spans_skips_a_partial_last_line_and_reports_bad_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spans.jsonl");
        assert!(read_spans(&path).expect("missing file").is_empty());
        let record = SpanRecord {
            trace_id: "t".into(),
            span_id: "s".into(),
            parent_span_id: String::new(),
            name: "n".into(),
            service_name: "svc".into(),
            start_ns: 1,
            end_ns: 2,
            attributes: BTreeMap::new(),
        };
        let line = serde_json::to_string(&record).expect("json");
        std::fs::write(&path, format!("{line}\n{{\"trace_id\":")).expect("write");
        assert_eq!(read_spans(&path).expect("read"), vec![record]);
        std::fs::write(&path, "garbage\n").expect("write");
        assert!(matches!(
            read_spans(&path),
            Err(CollectorError::Parse { line: 1, .. })
        ));
    }
}
