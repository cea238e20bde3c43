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
//! [`Pool`]; the actor then applies the new limits (shrinks first, grows only
//! with memory really freed, so the applied total never exceeds the tenant's)
//! and persists the [`Ledger`].

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ephemera_control_block::{Counters, Mode};
use ephemera_proto::v1::{FunctionSpec, InstanceStatus};
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::config::SharingScope;
use crate::ledger::Ledger;
use crate::pool::{Member, Pool, Profile};
use crate::runtime::{Activation, Instance, InstanceSpec, Limits, RunError, Runtime, RuntimeError};

/// Default per-invocation timeout when the function has none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the actor checks safeguards and idle instances.
const TICK: Duration = Duration::from_millis(100);
/// Cgroup usage above this fraction of the applied limit counts as a safeguard.
const SAFEGUARD_FRACTION: f64 = 0.9;

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
        let actor = TenantActor {
            pool: Pool::new(config.sharing),
            config,
            instances: BTreeMap::new(),
            self_tx: tx.downgrade(),
            shutting_down: None,
        };
        tokio::spawn(actor.run(rx));
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

/// The actor's record of one instance.
#[derive(Debug)]
struct Slot {
    /// Which function version it runs.
    key: String,
    /// The function.
    function: FunctionSpec,
    /// Its materialised code.
    code_dir: std::path::PathBuf,
    /// Its worker's queue.
    jobs: mpsc::UnboundedSender<Job>,
    /// Tells the worker to kill the instance now.
    kill: Option<oneshot::Sender<()>>,
    /// Jobs sent and not finished.
    queued: usize,
    /// Set once the instance is up.
    started: Option<Started>,
    /// Invocations finished.
    invocations: u64,
    /// When it last finished a job (or started).
    last_used: Instant,
    /// The limit it started with.
    initial: u64,
    /// The span of the invocation waiting for it to start (its `reallocate`
    /// on start is traced under it).
    waiting: tracing::Span,
}

/// What the actor knows of a started instance.
#[derive(Debug)]
struct Started {
    /// Launcher pid.
    launcher_pid: u32,
    /// Cgroup + control block.
    limits: Arc<dyn Limits>,
    /// The limit actually applied now.
    applied: u64,
}

struct TenantActor {
    /// Setup.
    config: TenantConfig,
    /// The memory pool (started instances only).
    pool: Pool,
    /// Every instance, starting or running.
    instances: BTreeMap<String, Slot>,
    /// For workers to report back (weak: the actor stops when handles go).
    self_tx: mpsc::WeakUnboundedSender<Msg>,
    /// Set when shutting down: answered once `instances` is empty.
    shutting_down: Option<Vec<oneshot::Sender<()>>>,
}

fn function_key(f: &FunctionSpec) -> String {
    format!(
        "{}\0{}\0{}\0{}",
        f.name, f.code_digest, f.cmd, f.memory_bytes
    )
}

impl TenantActor {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                for slot in self.instances.values_mut() {
                    if let Some(k) = slot.kill.take() {
                        let _ = k.send(());
                    }
                }
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
    async fn dispatch(&mut self, function: FunctionSpec, code_dir: std::path::PathBuf, job: Job) {
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

    fn start_instance(&mut self, function: FunctionSpec, code_dir: std::path::PathBuf) -> String {
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
        tokio::spawn(worker(
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

    async fn on_tick(&mut self) {
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

    fn usage_of(&self, id: &str) -> Option<u64> {
        self.instances.get(id)?.started.as_ref()?.limits.usage()
    }

    /// Feeds one event to the pool and applies what changed.
    async fn memory_event(&mut self, ev: Event) {
        if self.pool_event(ev) {
            self.reconcile().await;
        }
    }

    /// Records on a `reallocate` span what `id` lends and borrows after it.
    fn record_loans(&self, span: &tracing::Span, id: &str) {
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
        let subject = match &ev {
            Event::Invoke(id) | Event::Result(id) | Event::Safeguard(id) | Event::Terminate(id) => {
                id.clone()
            }
        };
        let usage: BTreeMap<String, u64> = self
            .pool
            .usage_wanted(&subject)
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
    async fn reconcile(&mut self) {
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

    fn persist(&self) {
        if let Some(l) = &self.config.ledger {
            if let Err(e) = l.save(&self.pool) {
                tracing::warn!(tenant = %self.config.tenant, "{e}");
            }
        }
    }

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

/// A memory event (thesis §4.3); `Init` is [`Pool::init`] in `on_started`.
#[derive(Debug)]
enum Event {
    /// The instance's queue became non-empty.
    Invoke(String),
    /// The instance's queue drained.
    Result(String),
    /// The instance nears its limit.
    Safeguard(String),
    /// The instance is gone.
    Terminate(String),
}

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

/// The tenant actor's span for an `Invoke` memory event of instance `id`
/// (`cold`: on its start), under the invocation's span.
fn reallocate_span(parent: &tracing::Span, id: &str, cold: bool) -> tracing::Span {
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
fn instance_run_span(parent: &tracing::Span, id: &str, launcher_pid: u32) -> tracing::Span {
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

/// Records the tier's counters on `span`; returns them.
fn record_tier(span: &tracing::Span, c: Counters) -> Counters {
    ephemera_domain::tier::record(span, &ephemera_domain::tier::to_wire(&c));
    c
}

/// Owns one instance: starts it, runs its queue in order, stops it.
async fn worker(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::fake::FakeRuntime;
    use ephemera_proto::v1::Profile as WireProfile;

    const MIB: u64 = 1 << 20;

    fn spec(name: &str, memory: u64, u: u64, f: u64) -> FunctionSpec {
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

    fn activation(input: serde_json::Value) -> Activation {
        Activation {
            id: uuid::Uuid::new_v4().to_string(),
            action_name: "acme/x".into(),
            input,
            timeout: Duration::from_secs(10),
        }
    }

    fn actor(rt: &FakeRuntime) -> TenantHandle {
        TenantHandle::spawn(TenantConfig {
            node_id: "n".into(),
            tenant: "acme".into(),
            runtime: Arc::new(rt.clone()),
            idle_timeout: Duration::from_secs(600),
            sharing: SharingScope::Tenant,
            ledger: None,
        })
    }

    /// Waits until `cond` holds over the instances' (function, limit, state).
    async fn wait_status(h: &TenantHandle, what: &str, cond: impl Fn(&[InstanceStatus]) -> bool) {
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

    fn limit_of(st: &[InstanceStatus], f: &str) -> Option<u64> {
        st.iter().find(|s| s.function == f).map(|s| s.limit_bytes)
    }

    #[tokio::test]
    async fn sequential_invocations_reuse_one_instance() {
        let rt = FakeRuntime::default();
        let h = actor(&rt);
        let f = spec("echo", 64 * MIB, 1, 1);
        let mut pids = Vec::new();
        for n in 0..10 {
            let out = h
                .invoke(
                    f.clone(),
                    "/nowhere".into(),
                    activation(serde_json::json!({ "n": n })),
                )
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

    #[tokio::test]
    async fn io_instance_borrows_from_running_cpu_instance_and_returns_it() {
        let rt = FakeRuntime::default();
        let h = actor(&rt);
        let cpu = spec("cpu", 300 * MIB, 10 * MIB, 0);
        let io = spec("io", 150 * MIB, 10 * MIB, 240 * MIB);
        // Start both instances once so they are warm.
        h.invoke(cpu.clone(), "/x".into(), activation(serde_json::json!({})))
            .await
            .unwrap();
        h.invoke(io.clone(), "/x".into(), activation(serde_json::json!({})))
            .await
            .unwrap();

        let h2 = h.clone();
        let c2 = cpu.clone();
        let cpu_run = tokio::spawn(async move {
            h2.invoke(
                c2,
                "/x".into(),
                activation(serde_json::json!({"sleep_ms": 400})),
            )
            .await
        });
        wait_status(&h, "cpu busy", |st| {
            st.iter().any(|s| s.function == "cpu" && s.state == "busy")
        })
        .await;
        let h3 = h.clone();
        let i2 = io.clone();
        let io_run = tokio::spawn(async move {
            h3.invoke(
                i2,
                "/x".into(),
                activation(serde_json::json!({"sleep_ms": 200})),
            )
            .await
        });
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
        wait_status(&h, "limits back", |st| {
            limit_of(st, "io") == Some(150 * MIB) && limit_of(st, "cpu") == Some(300 * MIB)
        })
        .await;
        let s = rt.state.lock().unwrap();
        let mut applied: Vec<u64> = s.limits.values().copied().collect();
        applied.sort();
        assert_eq!(applied, vec![150 * MIB, 300 * MIB]);
    }

    #[tokio::test]
    async fn safeguard_and_crash_roll_loans_back() {
        let rt = FakeRuntime::default();
        let h = actor(&rt);
        let cpu = spec("cpu", 300 * MIB, 10 * MIB, 0);
        let io = spec("io", 150 * MIB, 10 * MIB, 240 * MIB);
        let out = h
            .invoke(cpu.clone(), "/x".into(), activation(serde_json::json!({})))
            .await
            .unwrap();
        let cpu_id = out.instance_id;
        let (h2, c2) = (h.clone(), cpu.clone());
        let cpu_run = tokio::spawn(async move {
            h2.invoke(
                c2,
                "/x".into(),
                activation(serde_json::json!({"sleep_ms": 2000})),
            )
            .await
        });
        wait_status(&h, "cpu busy", |st| {
            st.iter().any(|s| s.function == "cpu" && s.state == "busy")
        })
        .await;
        let (h3, i2) = (h.clone(), io.clone());
        let io_run = tokio::spawn(async move {
            h3.invoke(
                i2,
                "/x".into(),
                activation(serde_json::json!({"sleep_ms": 1500})),
            )
            .await
        });
        wait_status(&h, "io borrowed", |st| limit_of(st, "io") > Some(150 * MIB)).await;
        // The lender nears its limit: everything goes back at once.
        rt.state
            .lock()
            .unwrap()
            .safeguard
            .insert(cpu_id.clone(), true);
        wait_status(&h, "safeguard rollback", |st| {
            limit_of(st, "io") == Some(150 * MIB) && limit_of(st, "cpu") == Some(300 * MIB)
        })
        .await;
        io_run.await.unwrap().expect("io run");
        cpu_run.await.unwrap().expect("cpu run");

        // A borrower that crashes gives everything back and is replaced.
        let (h4, c4) = (h.clone(), cpu.clone());
        let cpu_run = tokio::spawn(async move {
            h4.invoke(
                c4,
                "/x".into(),
                activation(serde_json::json!({"sleep_ms": 1000})),
            )
            .await
        });
        wait_status(&h, "cpu busy", |st| {
            st.iter().any(|s| s.function == "cpu" && s.state == "busy")
        })
        .await;
        // The old cpu instance is unharvestable now; the io borrows nothing.
        let e = h
            .invoke(
                io.clone(),
                "/x".into(),
                activation(serde_json::json!({"exit": true})),
            )
            .await
            .unwrap_err();
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
        let out = h
            .invoke(io.clone(), "/x".into(), activation(serde_json::json!({})))
            .await;
        assert!(out.is_ok(), "a fresh io instance serves: {out:?}");
        h.shutdown().await;
        assert!(
            rt.state.lock().unwrap().limits.is_empty(),
            "every instance stopped"
        );
    }
}
