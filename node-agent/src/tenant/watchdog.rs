//! The actor's periodic tick: a safeguard for every instance that nears
//! its limit (its tier's flag, or cgroup usage close to the limit of one
//! that has lent), idle instances stopped, and limits that could not be
//! applied yet retried.

use std::time::{Duration, Instant};

use super::actor::TenantActor;
use super::reconcile::Event;

/// How often the actor checks safeguards and idle instances.
const TICK: Duration = Duration::from_millis(100);
/// Cgroup usage above this fraction of the applied limit counts as a safeguard.
const SAFEGUARD_FRACTION: f64 = 0.9;

/// The actor's tick; a late tick is delayed, not bunched up.
pub(super) fn ticker() -> tokio::time::Interval {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

impl TenantActor {
    /// One tick: safeguards first (a lender near its limit gets its memory
    /// back before it is OOM-killed), then idle instances, then any limit
    /// still to apply.
    pub(super) async fn on_tick(&mut self) {
        // Safeguards: the tier's flag, or cgroup usage close to the limit of
        // an instance that has lent memory.
        let mut alerts = Vec::new();
        for (id, slot) in &self.instances {
            let Some(st) = &slot.started else { continue };
            let flagged = st.limits.take_safeguard();
            let near = self.pool.lent(id) > 0
                && st
                    .limits
                    .usage()
                    .is_some_and(|u| u as f64 > SAFEGUARD_FRACTION * st.applied as f64);
            if flagged || near {
                alerts.push(id.clone());
            }
        }
        for id in alerts {
            if self.pool.lends_or_may_lend(&id) {
                tracing::warn!(tenant = %self.config.tenant, instance = %id, "safeguard: rolling back its loans");
                self.memory_event(Event::Safeguard(id)).await;
            }
        }
        // Idle eviction.
        let now = Instant::now();
        for (id, slot) in self.instances.iter_mut() {
            if slot.queued == 0
                && slot.started.is_some()
                && now.duration_since(slot.last_used) >= self.config.idle_timeout
            {
                if let Some(k) = slot.kill.take() {
                    tracing::info!(tenant = %self.config.tenant, instance = %id, "stopping idle instance");
                    let _ = k.send(());
                }
            }
        }
        // Retry limits that could not be applied yet.
        self.reconcile().await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::TenantError;
    use crate::runtime::RunError;
    use serde_json::json;

    #[tokio::test]
    async fn safeguard_and_crash_roll_loans_back() {
        let (rt, h) = actor();
        let (cpu, io) = cpu_and_io();
        let cpu_id = run(&h, &cpu, json!({})).await.unwrap().instance_id;
        let cpu_run = spawn_run(&h, &cpu, json!({"sleep_ms": 2000}));
        wait_busy(&h, "cpu").await;
        let io_run = spawn_run(&h, &io, json!({"sleep_ms": 1500}));
        wait_status(&h, "io borrowed", |st| limit_of(st, "io") > Some(150 * MIB)).await;
        // The lender nears its limit: everything goes back at once.
        rt.state
            .lock()
            .unwrap()
            .safeguard
            .insert(cpu_id.clone(), true);
        wait_status(&h, "safeguard rollback", limits_back).await;
        io_run.await.unwrap().expect("io run");
        cpu_run.await.unwrap().expect("cpu run");

        // A borrower that crashes gives everything back and is replaced.
        let cpu_run = spawn_run(&h, &cpu, json!({"sleep_ms": 1000}));
        wait_busy(&h, "cpu").await;
        // The old cpu instance is unharvestable now; the io borrows nothing.
        let e = run(&h, &io, json!({"exit": true})).await.unwrap_err();
        assert!(
            matches!(
                e,
                TenantError::Run {
                    error: RunError::Exited { .. },
                    ..
                }
            ),
            "{e}"
        );
        cpu_run.await.unwrap().expect("cpu run");
        wait_status(&h, "crashed io gone", |st| {
            st.iter().all(|s| s.function != "io")
        })
        .await;
        let out = run(&h, &io, json!({})).await;
        assert!(out.is_ok(), "a fresh io instance serves: {out:?}");
        h.shutdown().await;
        assert!(
            rt.state.lock().unwrap().limits.is_empty(),
            "every instance stopped"
        );
    }
}
