//! The Agent gRPC service (`Run`, `Profile`, `Status`) and [`run`], which
//! serves it, registers with the controllers and cleans up at shutdown.
//!
//! `Run`: check the input, find the code in the cache (or materialise the code
//! sent along), hand the invocation to the tenant's actor, and turn its answer
//! into a reply or a `Status` naming the tenant, function and instance.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use ephemera_control_block::Mode;
use ephemera_proto::v1::agent_server::{Agent, AgentServer};
use ephemera_proto::v1::{
    AgentStatusReply, AgentStatusRequest, CodeFile, FunctionSpec, ProfileReply, ProfileRequest,
    RunReply, RunRequest,
};
use tokio::sync::{oneshot, watch};
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::code_cache::CodeCache;
use crate::config::{AgentConfig, RuntimeKind, SharingScope};
use crate::ledger::Ledger;
use crate::registry::{self, Registration};
use crate::runtime::docker::{self, DockerOptions, DockerRuntime};
use crate::runtime::process::{ProcessOptions, ProcessRuntime};
use crate::runtime::{Activation, InstanceSpec, RunError, Runtime};
use crate::tenant::{RunOutcome, TenantConfig, TenantError, TenantHandle, DEFAULT_TIMEOUT};
use ephemera_domain::code::CodeError;
use ephemera_sys::Driver;

/// The Python action-loop launcher, written to `<data_dir>/bin/`.
pub const EPHEMERA_PYTHON: &str = include_str!("launcher/ephemera-python");

/// Largest gRPC message the agent accepts (code travels in `Run`).
pub const MAX_MESSAGE: usize = 96 << 20;

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
            }),
        }
    }

    fn tenant(&self, tenant: &str) -> Result<TenantHandle, Status> {
        let mut map = self
            .inner
            .tenants
            .lock()
            .map_err(|_| Status::internal("tenant table poisoned"))?;
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
        Status::unavailable(format!(
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
            return self.inner.code.lookup(&f.code_digest).ok_or_else(|| {
                Status::failed_precondition(format!("code missing: {}", f.code_digest))
            });
        }
        self.inner
            .code
            .materialize(&f.code_digest, code)
            .map_err(|e| match e {
                CodeError::DigestMismatch { .. } | CodeError::UnsafePath { .. } => {
                    Status::invalid_argument(format!("function {}/{}: {e}", f.tenant, f.name))
                }
                other => Status::internal(format!(
                    "function {}/{}: materialising its code: {other}",
                    f.tenant, f.name
                )),
            })
    }
}

fn check_function(f: Option<FunctionSpec>) -> Result<FunctionSpec, Status> {
    let f = f.ok_or_else(|| Status::invalid_argument("request carries no function"))?;
    if f.tenant.is_empty() || f.name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "function needs a tenant and a name (got {:?}/{:?})",
            f.tenant, f.name
        )));
    }
    if f.cmd.trim().is_empty() {
        return Err(Status::invalid_argument(format!(
            "function {}/{} has no launcher command",
            f.tenant, f.name
        )));
    }
    Ok(f)
}

fn parse_input(f: &FunctionSpec, input: &str) -> Result<serde_json::Value, Status> {
    ephemera_domain::input::parse(input).map_err(|e| {
        Status::invalid_argument(format!("input for function {}/{}: {e}", f.tenant, f.name))
    })
}

fn timeout_of(f: &FunctionSpec) -> Duration {
    if f.timeout_ms == 0 {
        DEFAULT_TIMEOUT
    } else {
        Duration::from_millis(f.timeout_ms)
    }
}

/// The `Status` for a failed invocation.
fn run_status(f: &FunctionSpec, invocation: &str, node: &str, e: TenantError) -> Status {
    let name = format!("{}/{}", f.tenant, f.name);
    let tail = |t: &str| {
        if t.is_empty() {
            String::new()
        } else {
            let keep = 600;
            let start = t.len().saturating_sub(keep);
            let start = (start..t.len())
                .find(|i| t.is_char_boundary(*i))
                .unwrap_or(t.len());
            format!("; its stderr ends with:\n{}", &t[start..])
        }
    };
    match e {
        TenantError::Run {
            instance, error, ..
        } => match error {
            RunError::NonJson { output } => Status::aborted(format!(
                "function {name} returned a non-JSON result: {output} (instance {instance})"
            )),
            RunError::Exited {
                status,
                stderr_tail,
                ..
            } => Status::aborted(format!(
                "function {name}: launcher exited with {status} during invocation {invocation}; instance {instance} replaced{}",
                tail(&stderr_tail)
            )),
            RunError::Timeout {
                timeout_ms,
                stderr_tail,
            } => Status::deadline_exceeded(format!(
                "function {name} timed out after {timeout_ms} ms during invocation {invocation}; instance {instance} killed and replaced{}",
                tail(&stderr_tail)
            )),
            RunError::Proxy(msg) => Status::aborted(format!(
                "function {name}: lost instance {instance} during invocation {invocation} ({msg}); instance replaced"
            )),
            RunError::Stopped => Status::unavailable(format!(
                "node agent {node} is shutting down; invocation {invocation} of {name} was stopped"
            )),
        },
        TenantError::Start { instance, reason } => Status::unavailable(format!(
            "function {name}: instance {instance} could not start: {reason}"
        )),
        TenantError::ShuttingDown => Status::unavailable(format!(
            "node agent {node} is shutting down; invocation {invocation} of {name} was not run"
        )),
    }
}

fn reply_of(f: &FunctionSpec, out: RunOutcome) -> Result<RunReply, Status> {
    if let Some(err) = out.result.as_object().and_then(|o| o.get("error")) {
        let msg = match err {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return Err(Status::aborted(format!(
            "function {}/{} raised an error: {msg}",
            f.tenant, f.name
        )));
    }
    Ok(RunReply {
        result_json: out.result.to_string(),
        duration_us: out.duration.as_micros() as u64,
        tier: Some(ephemera_domain::tier::to_wire(&out.counters)),
        instance_id: out.instance_id,
        launcher_pid: out.launcher_pid,
    })
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn run(&self, request: Request<RunRequest>) -> Result<Response<RunReply>, Status> {
        let (metadata, _, req) = request.into_parts();
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
        match tenant
            .invoke(f.clone(), code_dir, activation)
            .instrument(span)
            .await
        {
            Ok(out) => reply_of(&f, out).map(Response::new),
            Err(e) => {
                let status = run_status(&f, &invocation, &self.inner.node_id, e);
                tracing::info!(tenant = %f.tenant, function = %f.name, "invocation failed: {}", status.message());
                Err(status)
            }
        }
    }

    async fn profile(
        &self,
        request: Request<ProfileRequest>,
    ) -> Result<Response<ProfileReply>, Status> {
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
            Err(_) => return Err(Status::internal("tenant table poisoned")),
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
    /// One trial run in a fresh `disk`-mode instance: (peak native, largest file).
    async fn trial(
        &self,
        f: &FunctionSpec,
        code_dir: PathBuf,
        n: usize,
        input: serde_json::Value,
    ) -> Result<(u64, u64), Status> {
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
            Status::unavailable(format!(
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
            return Err(Status::aborted(format!(
                "profiling {}/{}: trial run {n} raised an error: {err}",
                f.tenant, f.name
            )));
        }
        Ok((peak, counters.largest_file))
    }
}

/// Serves the Agent gRPC service on `listener`, registers with the
/// controller and heartbeats, until `shutdown` resolves; then kills every
/// instance it started and removes their cgroups.
pub async fn run(
    config: AgentConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Absolute paths: they are handed to proxies (and mounted in containers).
    let mut config = config;
    config.data_dir = std::path::absolute(&config.data_dir)
        .with_context(|| format!("resolving {}", config.data_dir.display()))?;
    let data = &config.data_dir;
    let instances_dir = data.join("instances");
    let bin_dir = data.join("bin");
    let ledger_dir = data.join("ledger");
    for d in [&instances_dir, &bin_dir, &ledger_dir, &data.join("code")] {
        fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    // Logs of a previous run's instances.
    if let Ok(entries) = fs::read_dir(&instances_dir) {
        for e in entries.flatten() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    let launcher = bin_dir.join("ephemera-python");
    fs::write(&launcher, EPHEMERA_PYTHON)
        .with_context(|| format!("writing {}", launcher.display()))?;
    fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", launcher.display()))?;

    // With an instance image, the proxy, intercept and launcher are the image's.
    let image_mode = config.runtime == RuntimeKind::Docker && config.instance_image.is_some();
    let intercept_lib = match &config.intercept_lib {
        _ if image_mode => None,
        None => {
            tracing::warn!(node = %config.node_id, "no intercept library configured: functions run WITHOUT the memory tier");
            None
        }
        Some(p) if !p.exists() => {
            tracing::warn!(node = %config.node_id, path = %p.display(), "intercept library not found: functions run WITHOUT the memory tier");
            None
        }
        Some(p) => Some(p.clone()),
    };
    if !image_mode && !config.proxy_bin.exists() {
        anyhow::bail!("proxy binary {} does not exist", config.proxy_bin.display());
    }

    let (runtime, driver): (Arc<dyn Runtime>, Option<Arc<Driver>>) = match config.runtime {
        RuntimeKind::Process => {
            let driver = Arc::new(Driver::detect(&config.cgroup_name()));
            driver.cleanup_stale();
            let rt = ProcessRuntime::new(
                ProcessOptions {
                    instances_dir,
                    proxy_bin: config.proxy_bin.clone(),
                    intercept_lib,
                    bin_dir: Some(bin_dir),
                },
                driver.clone(),
            );
            (Arc::new(rt), Some(driver))
        }
        RuntimeKind::Docker => {
            let rt = DockerRuntime::connect(DockerOptions {
                paths: ProcessOptions {
                    instances_dir,
                    proxy_bin: config.proxy_bin.clone(),
                    intercept_lib,
                    bin_dir: Some(bin_dir),
                },
                image: docker::DEFAULT_IMAGE.to_string(),
                instance_image: config.instance_image.clone(),
                network: config.docker_network.clone(),
                owner: config.cgroup_name(),
            })?;
            if !rt.available().await {
                anyhow::bail!(
                    "the docker runtime is configured but the docker engine does not answer"
                );
            }
            rt.remove_stale().await;
            (Arc::new(rt), None)
        }
    };

    restore_ledgers(&ledger_dir, config.sharing);

    let service = AgentService::new(ServiceParts {
        node_id: config.node_id.clone(),
        runtime,
        code_dir: data.join("code"),
        idle_timeout: config.idle_timeout,
        sharing: config.sharing,
        ledger_dir: Some(ledger_dir),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let registry = tokio::spawn(registry::maintain(
        Registration {
            node_id: config.node_id.clone(),
            advertise_addr: config.advertise_addr.clone(),
            memory_bytes: config.memory_bytes,
            endpoints: config.controller_endpoints.clone(),
            interval: config.heartbeat_interval,
        },
        stop_rx,
    ));

    // On shutdown, stop the instances first (in-flight invocations fail
    // fast with UNAVAILABLE), then let the server drain.
    let (server_stop_tx, server_stop_rx) = oneshot::channel::<()>();
    {
        let service = service.clone();
        tokio::spawn(async move {
            shutdown.await;
            service.shutdown().await;
            let _ = server_stop_tx.send(());
        });
    }
    let addr = listener.local_addr().ok();
    tracing::info!(node = %config.node_id, ?addr, advertise = %config.advertise_addr, "node agent serving");
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let served = tonic::transport::Server::builder()
        .add_service(
            AgentServer::new(service.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = server_stop_rx.await;
        })
        .await;

    let _ = stop_tx.send(true);
    let _ = registry.await;
    service.shutdown().await;
    if let Some(d) = driver {
        d.remove_base();
    }
    tracing::info!(node = %config.node_id, "node agent stopped");
    served.context("serving the Agent service")
}

/// Reads every tenant ledger left by a previous run. Its instances died with
/// that run, so each is terminated in the pool (rolling back every loan) and
/// the ledger is cleared.
fn restore_ledgers(dir: &std::path::Path, scope: SharingScope) {
    for (tenant, ledger) in Ledger::all(dir) {
        match ledger.load() {
            Ok(Some(mut pool)) => {
                let (instances, loans, bytes) =
                    (pool.len(), pool.loan_count(), pool.total_initial());
                pool.restart(scope);
                tracing::info!(
                    tenant = %tenant,
                    instances,
                    loans,
                    bytes,
                    "restored ledger of a previous run: its instances are gone, every loan rolled back"
                );
                if let Err(e) = ledger.save(&pool) {
                    tracing::warn!("{e}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
}
