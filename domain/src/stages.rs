//! Where one request's time went, as the server measured it: named stages
//! in microseconds, carried back in the reply's gRPC metadata
//! (`ephemera-stages: auth=12,schedule=640,…`) when the request asked for
//! them with the same key. The controller nests its agent's stages under
//! `agent.`. `ephemera bench invoke` reads them; nothing else depends on them.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

/// The metadata key, in the request (any value: "please time me") and in the reply.
pub const KEY: &str = "ephemera-stages";

/// Most stages one reply carries (bounds what a peer can make us parse).
const MAX_STAGES: usize = 32;

/// Named durations, in the order they were recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stages(Vec<(String, u64)>);

impl Stages {
    /// No stage yet.
    pub fn new() -> Stages {
        Stages::default()
    }

    /// Records `name` as the time since `since`; returns now (the next stage's start).
    pub fn lap(&mut self, name: &str, since: Instant) -> Instant {
        let now = Instant::now();
        self.record(name, now.duration_since(since));
        now
    }

    /// Records `name` as `d`.
    pub fn record(&mut self, name: &str, d: Duration) {
        if self.0.len() < MAX_STAGES {
            self.0
                .push((name.to_string(), d.as_micros().min(u64::MAX as u128) as u64));
        }
    }

    /// Appends `other`'s stages with `prefix` before each name.
    pub fn nest(&mut self, prefix: &str, other: &Stages) {
        for (name, us) in &other.0 {
            if self.0.len() >= MAX_STAGES {
                break;
            }
            self.0.push((format!("{prefix}{name}"), *us));
        }
    }

    /// The stages, microseconds.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.0.iter().map(|(n, us)| (n.as_str(), *us))
    }

    /// One stage's microseconds.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.iter().find(|(n, _)| *n == name).map(|(_, us)| us)
    }

    /// Whether `request` asked for the stages.
    pub fn wanted(request: &MetadataMap) -> bool {
        request.contains_key(KEY)
    }

    /// Asks the server of `request` for its stages.
    pub fn ask(request: &mut MetadataMap) {
        request.insert(KEY, tonic::metadata::MetadataValue::from_static("1"));
    }

    /// Writes the stages into a reply's metadata (nothing if they do not fit a header).
    pub fn put(&self, reply: &mut MetadataMap) {
        let text: Vec<String> = self.iter().map(|(n, us)| format!("{n}={us}")).collect();
        if let Ok(v) = text.join(",").parse() {
            reply.insert(KEY, v);
        }
    }

    /// The stages in a reply's metadata; malformed entries are skipped.
    pub fn from_metadata(reply: &MetadataMap) -> Stages {
        let Some(text) = reply.get(KEY).and_then(|v| v.to_str().ok()) else {
            return Stages::default();
        };
        let mut out = Stages::default();
        for item in text.split(',').take(MAX_STAGES) {
            if let Some((name, us)) = item.split_once('=') {
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_');
                if let (true, Ok(us)) = (valid, us.parse()) {
                    out.0.push((name.to_string(), us));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_metadata_and_nests() {
        let mut agent = Stages::new();
        agent.record("actor", Duration::from_micros(300));
        let mut s = Stages::new();
        s.record("auth", Duration::from_micros(12));
        s.nest("agent.", &agent);
        let mut md = MetadataMap::new();
        s.put(&mut md);
        let back = Stages::from_metadata(&md);
        assert_eq!(back, s);
        assert_eq!(back.get("agent.actor"), Some(300));
        assert!(!Stages::wanted(&MetadataMap::new()));
    }

    #[test]
    fn malformed_entries_are_skipped() {
        let mut md = MetadataMap::new();
        md.insert(KEY, "a=1,b=x,=3,c d=4,e=5".parse().unwrap());
        let s = Stages::from_metadata(&md);
        assert_eq!(s.iter().collect::<Vec<_>>(), [("a", 1), ("e", 5)]);
    }
}
