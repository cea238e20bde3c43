//! The tier's counters as they travel: from the control block
//! ([`Counters`]) to the wire ([`TierCounters`]), to JSON for people and
//! onto tracing spans. One conversion each, used by the agent, the
//! controller, the CLI and `ephemera run`.

use ephemera_control_block::Counters;
use ephemera_proto::v1::TierCounters;
use serde_json::json;

/// The wire form of a control block's counters.
pub fn to_wire(c: &Counters) -> TierCounters {
    TierCounters {
        reads: c.reads,
        writes: c.writes,
        bytes_read: c.bytes_read,
        bytes_written: c.bytes_written,
        files_mapped: c.files_mapped,
        evictions: c.evictions,
        fallbacks: c.fallbacks,
        peak_native_bytes: c.peak_native,
        largest_file_bytes: c.largest_file,
        mem_limit_bytes: c.mem_limit,
        safeguard: c.safeguard,
        opens: c.opens,
        mapped_bytes: c.mapped_bytes,
    }
}

/// The counters as a JSON object with the wire's field names.
pub fn to_json(t: &TierCounters) -> serde_json::Value {
    json!({
        "reads": t.reads, "writes": t.writes,
        "bytes_read": t.bytes_read, "bytes_written": t.bytes_written,
        "files_mapped": t.files_mapped, "evictions": t.evictions, "fallbacks": t.fallbacks,
        "opens": t.opens, "mapped_bytes": t.mapped_bytes,
        "peak_native_bytes": t.peak_native_bytes, "largest_file_bytes": t.largest_file_bytes,
        "mem_limit_bytes": t.mem_limit_bytes, "safeguard": t.safeguard,
    })
}

/// Records the counters on `span`, on whichever of the fields `tier_reads`,
/// `tier_writes`, `tier_bytes_read`, `tier_bytes_written`,
/// `tier_evictions`, `tier_fallbacks` and `mem_limit` it declares.
pub fn record(span: &tracing::Span, t: &TierCounters) {
    span.record("tier_reads", t.reads);
    span.record("tier_writes", t.writes);
    span.record("tier_bytes_read", t.bytes_read);
    span.record("tier_bytes_written", t.bytes_written);
    span.record("tier_evictions", t.evictions);
    span.record("tier_fallbacks", t.fallbacks);
    span.record("mem_limit", t.mem_limit_bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_reaches_the_wire_and_json() {
        let c = Counters {
            reads: 1,
            writes: 2,
            bytes_read: 3,
            bytes_written: 4,
            files_mapped: 5,
            evictions: 6,
            fallbacks: 7,
            peak_native: 8,
            largest_file: 9,
            mapped_bytes: 10,
            opens: 11,
            mem_limit: 12,
            safeguard: true,
        };
        let j = to_json(&to_wire(&c));
        let values: Vec<u64> = [
            "reads",
            "writes",
            "bytes_read",
            "bytes_written",
            "files_mapped",
            "evictions",
            "fallbacks",
            "peak_native_bytes",
            "largest_file_bytes",
            "mapped_bytes",
            "opens",
            "mem_limit_bytes",
        ]
        .iter()
        .map(|k| {
            j[k].as_u64()
                .unwrap_or_else(|| panic!("{k} missing in {j}"))
        })
        .collect();
        assert_eq!(values, (1..=12).collect::<Vec<u64>>());
        assert_eq!(j["safeguard"], true);
    }
}
