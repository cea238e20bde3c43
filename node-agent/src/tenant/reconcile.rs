//! Memory events through the pool, and the pool's limits onto the
//! instances: each event is a pure [`Pool`](crate::pool::Pool) decision,
//! written to the ledger; applying it shrinks lenders first (the tier hears
//! first, so it can evict) and grows borrowers only with memory really
//! freed, so the applied total never exceeds the tenant's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::actor::TenantActor;
use crate::runtime::Limits;

/// A memory event (thesis §4.3), naming its instance; `Init` is
/// [`Pool::init`](crate::pool::Pool::init), when the instance starts.
#[derive(Debug)]
pub(super) enum Event {
    /// The instance's queue became non-empty.
    Invoke(String),
    /// The instance's queue drained.
    Result(String),
    /// The instance nears its limit.
    Safeguard(String),
    /// The instance is gone.
    Terminate(String),
}

impl Event {
    /// The instance the event is about.
    fn instance(&self) -> &str {
        match self {
            Event::Invoke(id) | Event::Result(id) | Event::Safeguard(id) | Event::Terminate(id) => {
                id
            }
        }
    }
}

impl TenantActor {
    /// What `id`'s cgroup says it uses now, if it started and that is known.
    fn usage_of(&self, id: &str) -> Option<u64> {
        self.instances.get(id)?.started.as_ref()?.limits.usage()
    }

    /// Feeds one event to the pool and applies what changed.
    pub(super) async fn memory_event(&mut self, ev: Event) {
        if self.pool_event(ev) {
            self.reconcile().await;
        }
    }

    /// Records on a `reallocate` span what `id` lends and borrows after it.
    pub(super) fn record_loans(&self, span: &tracing::Span, id: &str) {
        span.record("lent", self.pool.lent(id));
        span.record("borrowed", self.pool.borrowed(id));
        span.record("tenant_loaned", self.pool.loaned());
        if let Some(limit) = self.pool.limit(id) {
            span.record("limit", limit);
        }
    }

    /// Feeds one event to the pool (pure decision + ledger write); true when
    /// some limit changed.
    fn pool_event(&mut self, ev: Event) -> bool {
        // Only a possible lender's usage matters (it bounds its surplus):
        // read just those cgroups, not every instance's.
        let usage: BTreeMap<String, u64> = self
            .pool
            .usage_wanted(ev.instance())
            .filter_map(|id| self.usage_of(id).map(|u| (id.to_string(), u)))
            .collect();
        let usage = |id: &str| usage.get(id).copied();
        let t0 = Instant::now();
        let changes = match &ev {
            Event::Invoke(id) => self.pool.invoke(id, &usage),
            Event::Result(id) => self.pool.result(id, &usage),
            Event::Safeguard(id) => self.pool.safeguard(id, &usage),
            Event::Terminate(id) => self.pool.terminate(id, &usage),
        };
        debug_assert_eq!(self.pool.total_current(), self.pool.total_initial());
        if !changes.is_empty() {
            tracing::info!(
                tenant = %self.config.tenant,
                event = ?ev,
                decision_ns = t0.elapsed().as_nanos() as u64,
                changes = ?changes,
                "memory reallocated"
            );
            self.persist();
            true
        } else {
            if matches!(ev, Event::Terminate(_)) {
                self.persist();
            }
            false
        }
    }

    /// Applies the pool's limits until they hold or cannot: a lender whose
    /// shrink is refused (it uses more than it may lend) gets its loans back.
    pub(super) async fn reconcile(&mut self) {
        for _ in 0..4 {
            let refused = self.apply_limits().await;
            if refused.is_empty() {
                return;
            }
            for id in refused {
                self.pool_event(Event::Safeguard(id));
            }
        }
    }

    /// One pass: shrinks first (the tier hears first so it can evict), then
    /// grows, never beyond what the shrinks freed, so the applied total never
    /// exceeds the tenant's. Returns lenders whose shrink was refused.
    async fn apply_limits(&mut self) -> Vec<String> {
        let plan: Vec<(String, Arc<dyn Limits>, u64, u64)> = self
            .instances
            .iter()
            .filter_map(|(id, slot)| {
                let st = slot.started.as_ref()?;
                let target = self.pool.limit(id)?;
                (target != st.applied).then(|| (id.clone(), st.limits.clone(), st.applied, target))
            })
            .collect();
        let mut refused = Vec::new();
        for (id, limits, _, target) in plan.iter().filter(|(_, _, from, to)| to < from) {
            limits.announce_limit(*target);
            match limits.set_limit(*target).await {
                Ok(()) => self.set_applied(id, *target),
                Err(err) => {
                    tracing::warn!(tenant = %self.config.tenant, instance = %id, "cannot shrink yet: {err}");
                    if self.pool.lent(id) > 0 {
                        refused.push(id.clone());
                    }
                }
            }
        }
        let applied: u64 = self
            .instances
            .iter()
            .filter(|(id, _)| self.pool.contains(id))
            .filter_map(|(_, s)| s.started.as_ref().map(|st| st.applied))
            .sum();
        let mut budget = self.pool.total_initial().saturating_sub(applied);
        for (id, limits, from, target) in plan.iter().filter(|(_, _, from, to)| to > from) {
            if budget == 0 {
                break;
            }
            let to = from + (target - from).min(budget);
            match limits.set_limit(to).await {
                Ok(()) => {
                    budget -= to - from;
                    self.set_applied(id, to);
                }
                Err(err) => {
                    tracing::warn!(tenant = %self.config.tenant, instance = %id, "cannot grow: {err}")
                }
            }
        }
        refused
    }

    fn set_applied(&mut self, id: &str, bytes: u64) {
        if let Some(st) = self.instances.get_mut(id).and_then(|s| s.started.as_mut()) {
            st.applied = bytes;
        }
    }

    pub(super) fn persist(&self) {
        if let Some(l) = &self.config.ledger {
            if let Err(e) = l.save(&self.pool) {
                tracing::warn!(tenant = %self.config.tenant, "{e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use serde_json::json;

    #[tokio::test]
    async fn io_instance_borrows_from_running_cpu_instance_and_returns_it() {
        let (rt, h) = actor();
        let (cpu, io) = cpu_and_io();
        // Start both instances once so they are warm.
        run(&h, &cpu, json!({})).await.unwrap();
        run(&h, &io, json!({})).await.unwrap();

        let cpu_run = spawn_run(&h, &cpu, json!({"sleep_ms": 400}));
        wait_busy(&h, "cpu").await;
        let io_run = spawn_run(&h, &io, json!({"sleep_ms": 200}));
        let need = crate::pool::pad(10 * MIB) + crate::pool::pad(240 * MIB);
        let lent = need - 150 * MIB;
        wait_status(&h, "io borrowed", |st| limit_of(st, "io") == Some(need)).await;
        {
            let s = rt.state.lock().unwrap();
            let applied: Vec<u64> = s.limits.values().copied().collect();
            assert!(
                applied.contains(&need),
                "io cgroup limit applied: {applied:?}"
            );
            assert!(
                applied.contains(&(300 * MIB - lent)),
                "cpu gave it: {applied:?}"
            );
            assert_eq!(applied.iter().sum::<u64>(), 450 * MIB);
        }
        io_run.await.unwrap().expect("io run");
        cpu_run.await.unwrap().expect("cpu run");
        wait_status(&h, "limits back", limits_back).await;
        let s = rt.state.lock().unwrap();
        let mut applied: Vec<u64> = s.limits.values().copied().collect();
        applied.sort();
        assert_eq!(applied, vec![150 * MIB, 300 * MIB]);
    }
}
