//! The tenant actor: one tokio task per tenant on this node that owns the
//! tenant's instances and its memory pool (thesis §4.3). Tenants never share
//! memory because they never share an actor.
//!
//! The actor routes each invocation to an idle warm instance of the function
//! or starts a new one. Each instance has a worker task that owns it and runs
//! its queue strictly in order (FIFO, one at a time); the worker reports back
//! to the actor before answering the caller, so the caller's next invocation
//! always finds the instance idle again.
//!
//! Memory events, as in the thesis: `Init` (an instance started), `Invoke`
//! (its queue became non-empty), `Result` (its queue drained), `Safeguard`
//! (its tier raised the flag, or its cgroup usage nears its limit) and
//! `Terminate` (it stopped or died). Each one goes through the pure
//! [`Pool`](crate::pool::Pool); the actor then applies the new limits
//! (shrinks first, grows only with memory really freed, so the applied total
//! never exceeds the tenant's) and persists the [`Ledger`].
//!
//! Layout, in the order an invocation passes through:
//!
//! - this file: the [`TenantHandle`] callers hold, the actor's messages, its
//!   configuration and errors.
//! - `actor`: the actor's state and loop: routing an invocation to an
//!   instance, starting instances, and what happens when one starts,
//!   finishes a job or goes away.
//! - `reconcile`: a memory event through the pool, then the pool's limits
//!   applied to cgroups and control blocks, and the ledger written.
//! - `watchdog`: the periodic tick: safeguards and idle instances.
//! - `worker`: the task that owns one instance and runs its queue.
//! - `spans`: the `reallocate` and `instance_run` trace spans.

mod actor;
mod reconcile;
mod spans;
mod watchdog;
mod worker;

use std::sync::Arc;
use std::time::Duration;

use ephemera_control_block::Counters;
use ephemera_proto::v1::{FunctionSpec, InstanceStatus};
use tokio::sync::{mpsc, oneshot};

use crate::config::SharingScope;
use crate::ledger::Ledger;
use crate::runtime::{Activation, Limits, RunError, Runtime};
use actor::TenantActor;

/// Default per-invocation timeout when the function has none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A successful invocation.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// What the function returned.
    pub result: serde_json::Value,
    /// Time inside the instance.
    pub duration: Duration,
    /// The tier's counters after the run.
    pub counters: Counters,
    /// Which instance ran it.
    pub instance_id: String,
    /// Its launcher's pid.
    pub launcher_pid: u32,
}

/// Why an invocation failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The instance could not start.
    #[error("instance {instance} could not start: {reason}")]
    Start {
        /// Instance id.
        instance: String,
        /// Why.
        reason: String,
    },
    /// The activation failed in the instance.
    #[error("instance {instance} (launcher pid {launcher_pid}): {error}")]
    Run {
        /// Instance id.
        instance: String,
        /// Its launcher.
        launcher_pid: u32,
        /// What happened.
        error: RunError,
    },
    /// The agent is shutting down.
    #[error("the node agent is shutting down")]
    ShuttingDown,
}

/// One queued invocation.
#[derive(Debug)]
struct Job {
    /// What to run.
    activation: Activation,
    /// Where the answer goes.
    reply: oneshot::Sender<Result<RunOutcome, TenantError>>,
    /// The caller's span: the instance run is traced under it.
    span: tracing::Span,
}

/// What the actor handles.
#[derive(Debug)]
enum Msg {
    /// Run a function.
    Invoke {
        /// The function.
        function: Box<FunctionSpec>,
        /// Its materialised code.
        code_dir: std::path::PathBuf,
        /// The activation.
        activation: Activation,
        /// The caller.
        reply: oneshot::Sender<Result<RunOutcome, TenantError>>,
        /// The caller's span.
        span: tracing::Span,
    },
    /// List instances.
    Status {
        /// The caller.
        reply: oneshot::Sender<Vec<InstanceStatus>>,
    },
    /// Stop everything.
    Shutdown {
        /// Answered once every instance stopped.
        reply: oneshot::Sender<()>,
    },
    /// A worker's instance is up.
    Started {
        /// Instance id.
        id: String,
        /// Launcher pid.
        launcher_pid: u32,
        /// Its limits.
        limits: Arc<dyn Limits>,
    },
    /// A worker finished one job.
    Finished {
        /// Instance id.
        id: String,
        /// The instance cannot run more.
        dead: bool,
    },
    /// A worker is gone (its instance stopped); jobs it did not run.
    Gone {
        /// Instance id.
        id: String,
        /// Jobs to place elsewhere.
        leftover: Vec<Job>,
    },
}

/// Cheap handle to a tenant actor.
#[derive(Debug, Clone)]
pub struct TenantHandle {
    /// The mailbox.
    tx: mpsc::UnboundedSender<Msg>,
}

/// How a tenant actor is set up.
#[derive(Clone)]
pub struct TenantConfig {
    /// This node.
    pub node_id: String,
    /// The tenant.
    pub tenant: String,
    /// Starts instances.
    pub runtime: Arc<dyn Runtime>,
    /// Idle instances stop after this.
    pub idle_timeout: Duration,
    /// Which instances may share memory.
    pub sharing: SharingScope,
    /// Where the pool is persisted (`None`: not persisted).
    pub ledger: Option<Ledger>,
}

impl std::fmt::Debug for TenantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConfig")
            .field("node_id", &self.node_id)
            .field("tenant", &self.tenant)
            .field("idle_timeout", &self.idle_timeout)
            .field("sharing", &self.sharing)
            .finish()
    }
}

impl TenantHandle {
    /// Spawns the actor of one tenant.
    pub fn spawn(config: TenantConfig) -> TenantHandle {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(TenantActor::new(config, tx.downgrade()).run(rx));
        TenantHandle { tx }
    }

    /// Runs one invocation of `function` (code in `code_dir`).
    pub async fn invoke(
        &self,
        function: FunctionSpec,
        code_dir: std::path::PathBuf,
        activation: Activation,
    ) -> Result<RunOutcome, TenantError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Invoke {
                function: Box::new(function),
                code_dir,
                activation,
                reply,
                span: tracing::Span::current(),
            })
            .map_err(|_| TenantError::ShuttingDown)?;
        rx.await.map_err(|_| TenantError::ShuttingDown)?
    }

    /// The tenant's instances on this node.
    pub async fn status(&self) -> Vec<InstanceStatus> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Status { reply }).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Stops every instance; returns when they are gone.
    pub async fn shutdown(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
    }
}

/// What the actor's tests share: a fake runtime's actor, functions with
/// profiles, and a deadline-bound wait on the actor's status.
#[cfg(test)]
mod testing {
    use std::time::Instant;

    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use ephemera_proto::v1::Profile as WireProfile;

    pub(super) const MIB: u64 = 1 << 20;

    pub(super) fn spec(name: &str, memory: u64, u: u64, f: u64) -> FunctionSpec {
        FunctionSpec {
            tenant: "acme".into(),
            name: name.into(),
            cmd: "fake".into(),
            memory_bytes: memory,
            code_digest: "d".into(),
            profile: Some(WireProfile {
                u_max_bytes: u,
                f_max_bytes: f,
                measured: true,
            }),
            ..Default::default()
        }
    }

    pub(super) fn activation(input: serde_json::Value) -> Activation {
        Activation {
            id: uuid::Uuid::new_v4().to_string(),
            action_name: "acme/x".into(),
            input,
            timeout: Duration::from_secs(10),
        }
    }

    /// A fresh actor over a fresh fake runtime (which records what the
    /// actor applied).
    pub(super) fn actor() -> (FakeRuntime, TenantHandle) {
        let rt = FakeRuntime::default();
        let handle = TenantHandle::spawn(TenantConfig {
            node_id: "n".into(),
            tenant: "acme".into(),
            runtime: Arc::new(rt.clone()),
            idle_timeout: Duration::from_secs(600),
            sharing: SharingScope::Tenant,
            ledger: None,
        });
        (rt, handle)
    }

    /// Waits until `cond` holds over the instances' (function, limit, state).
    pub(super) async fn wait_status(
        h: &TenantHandle,
        what: &str,
        cond: impl Fn(&[InstanceStatus]) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = h.status().await;
            if cond(&st) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {st:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(super) fn limit_of(st: &[InstanceStatus], f: &str) -> Option<u64> {
        st.iter().find(|s| s.function == f).map(|s| s.limit_bytes)
    }

    /// The issue-5 pair: `cpu` (300 MiB, needs 10: a lender) and `io`
    /// (150 MiB, needs 10 + 240: a borrower).
    pub(super) fn cpu_and_io() -> (FunctionSpec, FunctionSpec) {
        (
            spec("cpu", 300 * MIB, 10 * MIB, 0),
            spec("io", 150 * MIB, 10 * MIB, 240 * MIB),
        )
    }

    /// Both instances of [`cpu_and_io`] are back at their initial limits.
    pub(super) fn limits_back(st: &[InstanceStatus]) -> bool {
        limit_of(st, "io") == Some(150 * MIB) && limit_of(st, "cpu") == Some(300 * MIB)
    }

    /// Runs `f` with `input` (the fake runtime echoes it) and waits.
    pub(super) async fn run(
        h: &TenantHandle,
        f: &FunctionSpec,
        input: serde_json::Value,
    ) -> Result<RunOutcome, TenantError> {
        h.invoke(f.clone(), "/x".into(), activation(input)).await
    }

    /// Runs `f` with `input` in the background.
    pub(super) fn spawn_run(
        h: &TenantHandle,
        f: &FunctionSpec,
        input: serde_json::Value,
    ) -> tokio::task::JoinHandle<Result<RunOutcome, TenantError>> {
        let (h, f) = (h.clone(), f.clone());
        tokio::spawn(async move { run(&h, &f, input).await })
    }

    /// Waits until an instance of `function` is busy.
    pub(super) async fn wait_busy(h: &TenantHandle, function: &str) {
        wait_status(h, &format!("{function} busy"), |st| {
            st.iter()
                .any(|s| s.function == function && s.state == "busy")
        })
        .await
    }
}
