//! The Agent gRPC service: `Run`, `Profile` and `Status`, as the
//! controllers call them. [`run`](crate::run) serves it.
//!
//! `Run`: check the input, find the code in the cache (or materialise the code
//! sent along), hand the invocation to the tenant's actor, and turn its answer
//! into a reply or a `Status` naming the tenant, function and instance.
//!
//! Every `Status` it returns carries an [`ephemera_domain::Reason`] in its
//! metadata, so a caller acts on the reason (send the code, retry elsewhere,
//! report the function's failure) and leaves the message to people; `wire`
//! makes them.

mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ephemera_control_block::Mode;
use ephemera_domain::Reason;
use ephemera_proto::v1::agent_server::Agent;
use ephemera_proto::v1::{
    AgentStatusReply, AgentStatusRequest, CodeFile, FunctionSpec, ProfileReply, ProfileRequest,
    RunReply, RunRequest,
};
use ephemera_trust::Peer;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::code_cache::CodeCache;
use crate::config::SharingScope;
use crate::ledger::Ledger;
use crate::running::Running;
use crate::runtime::{Activation, InstanceSpec, Runtime};
use crate::tenant::{TenantConfig, TenantError, TenantHandle};
use wire::{
    check_function, code_missing, code_status, parse_input, poisoned, reply_of, run_status,
    timeout_of,
};

/// Most profile trial instances one agent runs at once.
pub const MAX_CONCURRENT_TRIALS: usize = 2;

/// Refuses unless a controller is calling (the interceptor in front of the
/// service admits this node's own certificate too, for its health check).
fn require_controller<T>(req: &Request<T>, what: &str) -> Result<(), Status> {
    match ephemera_trust::authorized_peer(req) {
        Some(Peer::Controller(_) | Peer::Insecure) => Ok(()),
        Some(other) => Err(Status::permission_denied(format!(
            "only a controller may {what}; {other} may not"
        ))),
        None => Err(Status::unauthenticated(format!(
            "only a controller may {what}: no member certificate"
        ))),
    }
}

/// The Agent service; cheap to clone.
#[derive(Debug, Clone)]
pub struct AgentService {
    /// Shared state.
    inner: Arc<Inner>,
}

struct Inner {
    /// This node.
    node_id: String,
    /// Starts instances.
    runtime: Arc<dyn Runtime>,
    /// `<data_dir>/code`.
    code: CodeCache,
    /// One actor per tenant.
    tenants: Mutex<HashMap<String, TenantHandle>>,
    /// Idle instances stop after this.
    idle_timeout: Duration,
    /// Sharing scope for new tenant actors.
    sharing: SharingScope,
    /// `<data_dir>/ledger`, `None` for no persistence.
    ledger_dir: Option<PathBuf>,
    /// Set at shutdown: no new work.
    closed: std::sync::atomic::AtomicBool,
    /// Invocations running now (their placements' leases).
    running: Running,
    /// At most this many profile trials run at once.
    trials: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner")
            .field("node_id", &self.node_id)
            .finish()
    }
}

/// How to build an [`AgentService`] without the network parts.
#[derive(Clone)]
pub struct ServiceParts {
    /// This node.
    pub node_id: String,
    /// Starts instances.
    pub runtime: Arc<dyn Runtime>,
    /// The code cache directory.
    pub code_dir: PathBuf,
    /// Idle instances stop after this.
    pub idle_timeout: Duration,
    /// Sharing scope.
    pub sharing: SharingScope,
    /// Ledger directory, `None` for no persistence.
    pub ledger_dir: Option<PathBuf>,
    /// Where running invocations are listed (shared with the registry).
    pub running: Running,
}

impl AgentService {
    /// A service over `parts`.
    pub fn new(parts: ServiceParts) -> AgentService {
        AgentService {
            inner: Arc::new(Inner {
                node_id: parts.node_id,
                runtime: parts.runtime,
                code: CodeCache::new(parts.code_dir),
                tenants: Mutex::new(HashMap::new()),
                idle_timeout: parts.idle_timeout,
                sharing: parts.sharing,
                ledger_dir: parts.ledger_dir,
                closed: std::sync::atomic::AtomicBool::new(false),
                running: parts.running,
                trials: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_TRIALS)),
            }),
        }
    }

    fn tenant(&self, tenant: &str) -> Result<TenantHandle, Status> {
        let mut map = self.inner.tenants.lock().map_err(|_| poisoned())?;
        if self.inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.shutting_down());
        }
        Ok(map
            .entry(tenant.to_string())
            .or_insert_with(|| {
                TenantHandle::spawn(TenantConfig {
                    node_id: self.inner.node_id.clone(),
                    tenant: tenant.to_string(),
                    runtime: self.inner.runtime.clone(),
                    idle_timeout: self.inner.idle_timeout,
                    sharing: self.inner.sharing,
                    ledger: self
                        .inner
                        .ledger_dir
                        .as_ref()
                        .map(|d| Ledger::new(d, tenant)),
                })
            })
            .clone())
    }

    fn shutting_down(&self) -> Status {
        Reason::ShuttingDown.status(format!(
            "node agent {} is shutting down",
            self.inner.node_id
        ))
    }

    /// Stops every tenant's instances; no new invocations are accepted.
    pub async fn shutdown(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let handles: Vec<TenantHandle> = match self.inner.tenants.lock() {
            Ok(mut m) => m.drain().map(|(_, h)| h).collect(),
            Err(_) => Vec::new(),
        };
        futures::future::join_all(handles.iter().map(|h| h.shutdown())).await;
    }

    /// The code directory for `f`, materialising `code` if sent.
    fn code_dir(&self, f: &FunctionSpec, code: &[CodeFile]) -> Result<PathBuf, Status> {
        if code.is_empty() {
            return self
                .inner
                .code
                .lookup(&f.code_digest)
                .ok_or_else(|| code_missing(f));
        }
        self.inner
            .code
            .materialize(&f.code_digest, code)
            .map_err(|e| code_status(f, e))
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn run(&self, request: Request<RunRequest>) -> Result<Response<RunReply>, Status> {
        require_controller(&request, "run an invocation")?;
        let (metadata, _, req) = request.into_parts();
        let timed = ephemera_domain::stages::Stages::wanted(&metadata);
        let mut stages = ephemera_domain::stages::Stages::new();
        let reply = self.run_invocation(metadata, req, &mut stages).await?;
        let mut response = Response::new(reply);
        if timed {
            stages.put(response.metadata_mut());
        }
        Ok(response)
    }

    async fn profile(
        &self,
        request: Request<ProfileRequest>,
    ) -> Result<Response<ProfileReply>, Status> {
        require_controller(&request, "profile a function")?;
        let req = request.into_inner();
        let f = check_function(req.function)?;
        let code_dir = self.code_dir(&f, &req.code)?;
        let inputs = if req.inputs.is_empty() {
            vec![String::new()]
        } else {
            req.inputs
        };
        let inputs = inputs
            .iter()
            .map(|i| parse_input(&f, i))
            .collect::<Result<Vec<_>, _>>()?;
        let trials = inputs.into_iter().enumerate().map(|(n, input)| {
            let f = f.clone();
            let code_dir = code_dir.clone();
            async move { self.trial(&f, code_dir, n, input).await }
        });
        let results = futures::future::join_all(trials).await;
        let mut profile = ephemera_proto::v1::Profile {
            u_max_bytes: 0,
            f_max_bytes: 0,
            measured: true,
        };
        for r in results {
            let (u, fm) = r?;
            profile.u_max_bytes = profile.u_max_bytes.max(u);
            profile.f_max_bytes = profile.f_max_bytes.max(fm);
        }
        tracing::info!(tenant = %f.tenant, function = %f.name, u_max = profile.u_max_bytes, f_max = profile.f_max_bytes, "profiled");
        Ok(Response::new(ProfileReply {
            profile: Some(profile),
        }))
    }

    async fn status(
        &self,
        _request: Request<AgentStatusRequest>,
    ) -> Result<Response<AgentStatusReply>, Status> {
        let handles: Vec<TenantHandle> = match self.inner.tenants.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(_) => return Err(poisoned()),
        };
        let mut instances = Vec::new();
        for h in handles {
            instances.extend(h.status().await);
        }
        instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        Ok(Response::new(AgentStatusReply { instances }))
    }
}

impl AgentService {
    /// Runs one invocation for a caller in this process (the benches),
    /// which holds the service itself and needs no certificate.
    pub async fn run_in_process(&self, req: RunRequest) -> Result<RunReply, Status> {
        let mut stages = ephemera_domain::stages::Stages::new();
        self.run_invocation(tonic::metadata::MetadataMap::new(), req, &mut stages)
            .await
    }

    async fn run_invocation(
        &self,
        metadata: tonic::metadata::MetadataMap,
        req: RunRequest,
        stages: &mut ephemera_domain::stages::Stages,
    ) -> Result<RunReply, Status> {
        let t = std::time::Instant::now();
        let f = check_function(req.function)?;
        let input = parse_input(&f, &req.input_json)?;
        let code_dir = self.code_dir(&f, &req.code)?;
        let invocation = if req.invocation_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.invocation_id
        };
        let span = tracing::info_span!("agent_run", node = %self.inner.node_id, tenant = %f.tenant, function = %f.name, invocation = %invocation);
        // Continue the controller's trace (W3C traceparent in the metadata).
        ephemera_telemetry::set_parent_from(&span, &metadata);
        let activation = Activation {
            id: invocation.clone(),
            action_name: format!("{}/{}", f.tenant, f.name),
            input,
            timeout: timeout_of(&f),
        };
        let tenant = self.tenant(&f.tenant)?;
        // Its own task, listed as running until the instance answers: a
        // controller that stops waiting does not cut it short, and the
        // placement's lease lives exactly as long as the work.
        let running = self.inner.running.start(&invocation);
        // Before: checks, the code cache; after: the tenant actor, its
        // worker and the instance's proxy (the launcher's own time is the
        // reply's `duration_us`).
        let t = stages.lap("prepare", t);
        let work = {
            let f = f.clone();
            tokio::spawn(
                async move {
                    let out = tenant.invoke(f, code_dir, activation).await;
                    drop(running);
                    out
                }
                .instrument(span),
            )
        };
        let outcome = work.await.map_err(|e| {
            Reason::Unavailable.status(format!("invocation {invocation} task failed: {e}"))
        })?;
        stages.lap("tenant", t);
        match outcome {
            Ok(out) => reply_of(&f, out),
            Err(e) => {
                let status = run_status(&f, &invocation, &self.inner.node_id, e);
                tracing::info!(tenant = %f.tenant, function = %f.name, "invocation failed: {}", status.message());
                Err(status)
            }
        }
    }

    /// One trial run in a fresh `disk`-mode instance: (peak native, largest file).
    async fn trial(
        &self,
        f: &FunctionSpec,
        code_dir: PathBuf,
        n: usize,
        input: serde_json::Value,
    ) -> Result<(u64, u64), Status> {
        // Trials are whole instances: a deploy with many inputs waits its turn.
        let _slot = self
            .inner
            .trials
            .acquire()
            .await
            .map_err(|_| self.shutting_down())?;
        let id = format!(
            "profile-{}-{}",
            n,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let spec = InstanceSpec {
            instance_id: id.clone(),
            tenant: f.tenant.clone(),
            function: f.name.clone(),
            code_dir,
            cmd: f.cmd.clone(),
            memory_bytes: f.memory_bytes,
            mode: Mode::Disk,
        };
        let mut inst = self.inner.runtime.start(spec).await.map_err(|e| {
            Reason::Unavailable.status(format!(
                "profiling {}/{}: trial instance could not start: {e}",
                f.tenant, f.name
            ))
        })?;
        let activation = Activation {
            id: format!("{id}-run"),
            action_name: format!("{}/{}", f.tenant, f.name),
            input,
            timeout: timeout_of(f),
        };
        let result = inst.run(activation).await;
        let limits = inst.limits();
        let counters = limits.counters();
        let peak = if counters.peak_native > 0 {
            counters.peak_native
        } else {
            limits.max_usage().unwrap_or(0)
        };
        let launcher_pid = inst.launcher_pid();
        inst.stop().await;
        let out = result.map_err(|error| {
            run_status(
                f,
                &id,
                &self.inner.node_id,
                TenantError::Run {
                    instance: id.clone(),
                    launcher_pid,
                    error,
                },
            )
        })?;
        if let Some(err) = out.result.as_object().and_then(|o| o.get("error")) {
            return Err(Reason::FunctionFailed.status(format!(
                "profiling {}/{}: trial run {n} raised an error: {err}",
                f.tenant, f.name
            )));
        }
        Ok((peak, counters.largest_file))
    }
}
