//! The task that owns one instance: it starts it, runs its queue strictly
//! in order, reports each step to the actor, and stops it.

use std::collections::VecDeque;
use std::sync::Arc;

use ephemera_control_block::Counters;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::spans::instance_run_span;
use super::{Job, Msg, RunOutcome, TenantError};
use crate::runtime::{Instance, InstanceSpec, RunError, Runtime, RuntimeError};

/// Records the tier's counters on `span`; returns them.
fn record_tier(span: &tracing::Span, c: Counters) -> Counters {
    ephemera_domain::tier::record(span, &ephemera_domain::tier::to_wire(&c));
    c
}

/// Owns one instance: starts it, runs its queue in order, stops it.
pub(super) async fn worker(
    runtime: Arc<dyn Runtime>,
    spec: InstanceSpec,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    mut kill: oneshot::Receiver<()>,
    actor: mpsc::WeakUnboundedSender<Msg>,
) {
    let id = spec.instance_id.clone();
    let report = |msg: Msg| {
        if let Some(tx) = actor.upgrade() {
            let _ = tx.send(msg);
        }
    };
    let started = tokio::select! {
        r = runtime.start(spec) => r,
        _ = &mut kill => Err(RuntimeError::Unsupported("start cancelled")),
    };
    let mut instance: Box<dyn Instance> = match started {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(instance = %id, "{e}");
            jobs.close();
            let reason = e.to_string();
            while let Ok(job) = jobs.try_recv() {
                let _ = job.reply.send(Err(TenantError::Start {
                    instance: id.clone(),
                    reason: reason.clone(),
                }));
            }
            report(Msg::Gone {
                id,
                leftover: Vec::new(),
            });
            return;
        }
    };
    let limits = instance.limits();
    let launcher_pid = instance.launcher_pid();
    report(Msg::Started {
        id: id.clone(),
        launcher_pid,
        limits: limits.clone(),
    });
    let mut leftover = VecDeque::new();
    let mut served = 0u64;
    loop {
        let job = tokio::select! {
            biased;
            _ = &mut kill => break,
            j = jobs.recv() => match j {
                Some(j) => j,
                None => break,
            },
        };
        let run_span = instance_run_span(&job.span, &id, launcher_pid);
        let res = tokio::select! {
            r = instance
                .run(job.activation.clone())
                .instrument(run_span.clone()) => r,
            _ = &mut kill => Err(RunError::Stopped),
        };
        let dead = res.as_ref().err().is_some_and(RunError::instance_dead);
        if served > 0 && matches!(res, Err(RunError::Exited { idle: true, .. })) {
            // A warm launcher died while idle: this job never reached it.
            // Hand it back to run on a fresh instance (an instance that
            // never served anything is a start-up failure, not retried).
            tracing::warn!(instance = %id, "launcher exited while idle; rerouting its next invocation");
            leftover.push_back(job);
            report(Msg::Finished {
                id: id.clone(),
                dead: true,
            });
            break;
        }
        served += 1;
        // Report before answering: the caller's next invocation must find
        // this instance idle.
        report(Msg::Finished {
            id: id.clone(),
            dead,
        });
        let answer = match res {
            Ok(out) => Ok(RunOutcome {
                result: out.result,
                duration: out.duration,
                counters: record_tier(&run_span, limits.counters()),
                instance_id: id.clone(),
                launcher_pid,
            }),
            Err(RunError::Stopped) => Err(TenantError::ShuttingDown),
            Err(error) => Err(TenantError::Run {
                instance: id.clone(),
                launcher_pid,
                error,
            }),
        };
        let _ = job.reply.send(answer);
        if dead {
            break;
        }
    }
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        leftover.push_back(job);
    }
    instance.stop().await;
    report(Msg::Gone {
        id,
        leftover: leftover.into(),
    });
}
