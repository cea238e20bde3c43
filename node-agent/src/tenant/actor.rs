//! The actor's state and its loop: each invocation goes to an idle warm
//! instance of its function or to a new one, and the workers' reports
//! (started, finished a job, gone) update what the actor knows and feed the
//! memory events of [`reconcile`](super::reconcile).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ephemera_control_block::Mode;
use ephemera_proto::v1::{FunctionSpec, InstanceStatus};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::reconcile::Event;
use super::spans::reallocate_span;
use super::{watchdog, worker, Job, Msg, TenantConfig, TenantError};
use crate::pool::{Member, Pool, Profile};
use crate::runtime::{InstanceSpec, Limits};

/// The actor's record of one instance.
#[derive(Debug)]
pub(super) struct Slot {
    /// Which function version it runs.
    key: String,
    /// The function.
    function: FunctionSpec,
    /// Its materialised code.
    code_dir: PathBuf,
    /// Its worker's queue.
    jobs: mpsc::UnboundedSender<Job>,
    /// Tells the worker to kill the instance now.
    pub(super) kill: Option<oneshot::Sender<()>>,
    /// Jobs sent and not finished.
    pub(super) queued: usize,
    /// Set once the instance is up.
    pub(super) started: Option<Started>,
    /// Invocations finished.
    invocations: u64,
    /// When it last finished a job (or started).
    pub(super) last_used: Instant,
    /// The limit it started with.
    initial: u64,
    /// The span of the invocation waiting for it to start (its `reallocate`
    /// on start is traced under it).
    waiting: tracing::Span,
}

/// What the actor knows of a started instance.
#[derive(Debug)]
pub(super) struct Started {
    /// Launcher pid.
    launcher_pid: u32,
    /// Cgroup + control block.
    pub(super) limits: Arc<dyn Limits>,
    /// The limit actually applied now.
    pub(super) applied: u64,
}

/// One tenant's actor: the only owner of its instances and its pool, so
/// nothing else can move its memory.
pub(super) struct TenantActor {
    /// Setup.
    pub(super) config: TenantConfig,
    /// The memory pool (started instances only).
    pub(super) pool: Pool,
    /// Every instance, starting or running.
    pub(super) instances: BTreeMap<String, Slot>,
    /// For workers to report back (weak: the actor stops when handles go).
    self_tx: mpsc::WeakUnboundedSender<Msg>,
    /// Set when shutting down: answered once `instances` is empty.
    shutting_down: Option<Vec<oneshot::Sender<()>>>,
}

/// What makes two invocations able to share a warm instance: the same
/// function, code, command and limit.
fn function_key(f: &FunctionSpec) -> String {
    format!(
        "{}\0{}\0{}\0{}",
        f.name, f.code_digest, f.cmd, f.memory_bytes
    )
}

impl TenantActor {
    /// A fresh actor for `config`; `self_tx` lets its workers report back.
    pub(super) fn new(
        config: TenantConfig,
        self_tx: mpsc::WeakUnboundedSender<Msg>,
    ) -> TenantActor {
        TenantActor {
            pool: Pool::new(config.sharing),
            config,
            instances: BTreeMap::new(),
            self_tx,
            shutting_down: None,
        }
    }

    /// The loop: messages, and the watchdog's tick, until every handle is gone.
    pub(super) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut tick = watchdog::ticker();
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick().await,
            }
            if let Some(waiters) = &mut self.shutting_down {
                if self.instances.is_empty() {
                    for w in waiters.drain(..) {
                        let _ = w.send(());
                    }
                }
            }
        }
        // Every handle is gone: stop what is left.
        self.kill_all();
    }

    /// Tells every worker to stop its instance now; each reports `Gone`.
    fn kill_all(&mut self) {
        for slot in self.instances.values_mut() {
            if let Some(k) = slot.kill.take() {
                let _ = k.send(());
            }
        }
    }

    async fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Invoke {
                function,
                code_dir,
                activation,
                reply,
                span,
            } => {
                if self.shutting_down.is_some() {
                    let _ = reply.send(Err(TenantError::ShuttingDown));
                    return;
                }
                let job = Job {
                    activation,
                    reply,
                    span,
                };
                self.dispatch(*function, code_dir, job).await;
            }
            Msg::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Msg::Shutdown { reply } => {
                self.kill_all();
                self.shutting_down.get_or_insert_with(Vec::new).push(reply);
            }
            Msg::Started {
                id,
                launcher_pid,
                limits,
            } => self.on_started(id, launcher_pid, limits).await,
            Msg::Finished { id, dead } => self.on_finished(&id, dead).await,
            Msg::Gone { id, leftover } => self.on_gone(&id, leftover).await,
        }
    }

    /// Sends `job` to an idle warm instance of the function, or to a new one.
    async fn dispatch(&mut self, function: FunctionSpec, code_dir: PathBuf, job: Job) {
        let key = function_key(&function);
        let idle = self
            .instances
            .iter()
            .filter(|(_, s)| s.key == key && s.queued == 0 && s.kill.is_some())
            .max_by_key(|(_, s)| s.last_used)
            .map(|(id, _)| id.clone());
        let id = match idle {
            Some(id) => id,
            None => self.start_instance(function, code_dir),
        };
        let Some(slot) = self.instances.get_mut(&id) else {
            let _ = job.reply.send(Err(TenantError::ShuttingDown));
            return;
        };
        let mut job = job;
        if !slot.jobs.is_closed() {
            slot.queued += 1;
            let first = slot.queued == 1 && slot.started.is_some();
            if first {
                // Loans are in place before the job can start.
                let span = reallocate_span(&job.span, &id, false);
                self.memory_event(Event::Invoke(id.clone()))
                    .instrument(span.clone())
                    .await;
                self.record_loans(&span, &id);
            } else if slot.queued == 1 {
                slot.waiting = job.span.clone();
            }
            let Some(slot) = self.instances.get_mut(&id) else {
                let _ = job.reply.send(Err(TenantError::ShuttingDown));
                return;
            };
            match slot.jobs.send(job) {
                Ok(()) => return,
                Err(mpsc::error::SendError(j)) => {
                    slot.queued -= 1;
                    if first {
                        self.memory_event(Event::Result(id.clone())).await;
                    }
                    job = j;
                }
            }
        }
        // The worker is winding down (its Gone message will follow): place
        // the job on a fresh instance instead.
        let Some(slot) = self.instances.get(&id) else {
            let _ = job.reply.send(Err(TenantError::ShuttingDown));
            return;
        };
        let (function, code_dir) = (slot.function.clone(), slot.code_dir.clone());
        let new_id = self.start_instance(function, code_dir);
        if let Some(s) = self.instances.get_mut(&new_id) {
            if s.jobs.send(job).is_ok() {
                s.queued += 1;
            }
        }
    }

    /// Spawns a worker that starts a new instance of `function`; returns its
    /// id. The instance joins the pool only once it is up (`on_started`).
    fn start_instance(&mut self, function: FunctionSpec, code_dir: PathBuf) -> String {
        let id = format!(
            "{}-{}",
            sanitize(&function.name),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let spec = InstanceSpec {
            instance_id: id.clone(),
            tenant: self.config.tenant.clone(),
            function: function.name.clone(),
            code_dir: code_dir.clone(),
            cmd: function.cmd.clone(),
            memory_bytes: function.memory_bytes,
            mode: Mode::Adaptive,
        };
        let (jobs_tx, jobs_rx) = mpsc::unbounded_channel();
        let (kill_tx, kill_rx) = oneshot::channel();
        tracing::info!(
            tenant = %self.config.tenant,
            function = %function.name,
            instance = %id,
            limit = function.memory_bytes,
            "starting instance"
        );
        tokio::spawn(worker::worker(
            self.config.runtime.clone(),
            spec,
            jobs_rx,
            kill_rx,
            self.self_tx.clone(),
        ));
        self.instances.insert(
            id.clone(),
            Slot {
                key: function_key(&function),
                code_dir,
                initial: function.memory_bytes,
                function,
                jobs: jobs_tx,
                kill: Some(kill_tx),
                queued: 0,
                started: None,
                invocations: 0,
                last_used: Instant::now(),
                waiting: tracing::Span::none(),
            },
        );
        id
    }

    /// `Init`: the instance joins the pool; if a job already waits for it,
    /// that is its `Invoke` too.
    async fn on_started(&mut self, id: String, launcher_pid: u32, limits: Arc<dyn Limits>) {
        let Some(slot) = self.instances.get_mut(&id) else {
            return;
        };
        slot.started = Some(Started {
            launcher_pid,
            limits,
            applied: slot.initial,
        });
        slot.last_used = Instant::now();
        let f = &slot.function;
        let profile = f.profile.as_ref().filter(|p| p.measured).map(|p| Profile {
            u_max: p.u_max_bytes,
            f_max: p.f_max_bytes,
        });
        let member = Member {
            function: f.name.clone(),
            workflow: f.workflow.clone(),
            initial: slot.initial,
            profile,
        };
        let busy = slot.queued > 0;
        let waiting = std::mem::replace(&mut slot.waiting, tracing::Span::none());
        self.pool.init(&id, member);
        self.persist();
        if busy {
            let span = reallocate_span(&waiting, &id, true);
            self.memory_event(Event::Invoke(id.clone()))
                .instrument(span.clone())
                .await;
            self.record_loans(&span, &id);
        }
    }

    /// A job ended: `Result` when the queue drained, `Terminate` when the
    /// instance cannot run more.
    async fn on_finished(&mut self, id: &str, dead: bool) {
        let Some(slot) = self.instances.get_mut(id) else {
            return;
        };
        slot.queued = slot.queued.saturating_sub(1);
        slot.invocations += 1;
        slot.last_used = Instant::now();
        if dead {
            // The worker stops the instance and sends Gone.
            slot.kill = None;
            self.memory_event(Event::Terminate(id.to_string())).await;
        } else if slot.queued == 0 {
            self.memory_event(Event::Result(id.to_string())).await;
        }
    }

    /// The worker stopped its instance: it leaves the pool, and the jobs it
    /// did not run go to other instances.
    async fn on_gone(&mut self, id: &str, leftover: Vec<Job>) {
        let Some(slot) = self.instances.remove(id) else {
            return;
        };
        if self.pool.contains(id) {
            self.memory_event(Event::Terminate(id.to_string())).await;
        }
        for job in leftover {
            if self.shutting_down.is_some() {
                let _ = job.reply.send(Err(TenantError::ShuttingDown));
            } else {
                self.dispatch(slot.function.clone(), slot.code_dir.clone(), job)
                    .await;
            }
        }
    }

    /// Every instance as the `Status` RPC reports it.
    fn status(&self) -> Vec<InstanceStatus> {
        self.instances
            .iter()
            .map(|(id, s)| InstanceStatus {
                instance_id: id.clone(),
                node_id: self.config.node_id.clone(),
                tenant: self.config.tenant.clone(),
                function: s.function.name.clone(),
                limit_bytes: self.pool.limit(id).unwrap_or(s.initial),
                initial_limit_bytes: s.initial,
                launcher_pid: s.started.as_ref().map(|st| st.launcher_pid).unwrap_or(0),
                invocations: s.invocations,
                state: if s.queued > 0 { "busy" } else { "idle" }.to_string(),
            })
            .collect()
    }
}

/// The function's name as an instance id prefix: safe in a path, a cgroup
/// name and a container name.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if s.is_empty() {
        "fn".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[tokio::test]
    async fn sequential_invocations_reuse_one_instance() {
        let (rt, h) = actor();
        let f = spec("echo", 64 * MIB, 1, 1);
        let mut pids = Vec::new();
        for n in 0..10 {
            let out = run(&h, &f, serde_json::json!({ "n": n }))
                .await
                .expect("run");
            assert_eq!(out.result["echo"]["n"], n);
            pids.push(out.launcher_pid);
        }
        pids.dedup();
        assert_eq!(pids.len(), 1, "one warm instance");
        assert_eq!(rt.state.lock().unwrap().started.len(), 1);
        h.shutdown().await;
        assert_eq!(rt.state.lock().unwrap().stopped.len(), 1);
    }
}
