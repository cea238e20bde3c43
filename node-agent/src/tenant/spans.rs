//! The actor's trace spans, under the invocation's own: `reallocate` (the
//! memory event an invocation caused, and what it moved) and
//! `instance_run` (the activation in its instance, and the tier's counters).

/// The tenant actor's span for an `Invoke` memory event of instance `id`
/// (`cold`: on its start), under the invocation's span.
pub(super) fn reallocate_span(parent: &tracing::Span, id: &str, cold: bool) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        parent: parent,
        "reallocate",
        instance = %id,
        cold,
        lent = Empty,
        borrowed = Empty,
        tenant_loaned = Empty,
        limit = Empty,
    )
}

/// The span of one activation in instance `id`; the tier's counters are
/// recorded on it when the activation returns.
pub(super) fn instance_run_span(
    parent: &tracing::Span,
    id: &str,
    launcher_pid: u32,
) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        parent: parent,
        "instance_run",
        instance = %id,
        launcher_pid,
        tier_reads = Empty,
        tier_writes = Empty,
        tier_bytes_read = Empty,
        tier_bytes_written = Empty,
        tier_evictions = Empty,
        tier_fallbacks = Empty,
        mem_limit = Empty,
    )
}
