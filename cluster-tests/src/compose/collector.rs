//! The spans the cluster's OTLP collector stored (`docker-compose.otel.yml`
//! is in use when the collector image exists).

use std::time::Duration;

use super::docker::docker;
use super::ComposeCluster;

impl ComposeCluster {
    /// Whether the OTLP collector runs (docker-compose.otel.yml is in use).
    pub fn has_collector(&self) -> bool {
        self.files.contains(&"docker-compose.otel.yml")
    }

    /// The spans the collector has stored so far (one JSON object each);
    /// `None` without a collector.
    pub fn collector_spans(&self) -> Option<Result<Vec<serde_json::Value>, String>> {
        if !self.has_collector() {
            return None;
        }
        let dest = self.data_root.join("spans.jsonl");
        let src = format!("{}-otel-collector:/data/spans.jsonl", self.project);
        Some(
            docker(
                &["cp", &src, &dest.to_string_lossy()],
                Duration::from_secs(60),
            )
            .and_then(|_| {
                let text = std::fs::read_to_string(&dest)
                    .map_err(|e| format!("{}: {e}", dest.display()))?;
                Ok(text
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect())
            }),
        )
    }
}
