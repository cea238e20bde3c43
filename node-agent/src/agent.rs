//! The agent's life: [`run`] prepares the data directory, chooses and
//! builds the runtime, restores the ledgers of a previous run, serves the
//! [`AgentService`] with the registry's heartbeats beside it, and at
//! shutdown stops every instance before the server drains.
//!
//! Data directory (absolute: its paths are handed to proxies and mounted
//! in containers; 0711, so instances can reach their own files below it
//! and list nothing): `instances/` (one directory per instance, owned by
//! its tenant's uid; a previous run's are removed), `bin/` (the Python
//! launcher, and copies of the proxy and intercept that instances run),
//! `code/` (the code cache, read-only to instances), and, private to the
//! agent, `ledger/` (one pool per tenant) and `uids` (tenant → uid).
//!
//! When the data directory cannot be reached by other users (a parent is
//! 0700, e.g. under `/root`), the process runtime keeps `instances/`,
//! `code/` and `bin/` under `/var/tmp/ephemera/<node>` instead.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use ephemera_proto::v1::agent_server::AgentServer;
use ephemera_sys::Driver;
use tokio::sync::{oneshot, watch};

use crate::config::{AgentConfig, RuntimeKind, SharingScope};
use crate::ledger::Ledger;
use crate::registry::{self, Registration};
use crate::running::Running;
use crate::runtime::confine::Confinement;
use crate::runtime::docker::{self, DockerOptions, DockerRuntime};
use crate::runtime::process::{ProcessOptions, ProcessRuntime};
use crate::runtime::Runtime;
use crate::service::{AgentService, ServiceParts};
use ephemera_sys::process::ensure_dir_mode;
use ephemera_trust::Role;

/// The Python action-loop launcher, written to `<data_dir>/bin/`.
pub const EPHEMERA_PYTHON: &str = include_str!("launcher/ephemera-python");

/// Largest gRPC message the agent accepts (code travels in `Run`).
pub const MAX_MESSAGE: usize = ephemera_trust::limits::AGENT_MAX_MESSAGE;

/// Writes the Python launcher into `bin_dir` (created if missing), where the
/// runtimes put it on the launcher's `PATH`; returns its path.
pub fn install_launcher(bin_dir: &Path) -> std::io::Result<PathBuf> {
    fs::create_dir_all(bin_dir)?;
    let launcher = bin_dir.join("ephemera-python");
    fs::write(&launcher, EPHEMERA_PYTHON)?;
    fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755))?;
    Ok(launcher)
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
    let ledger_dir = data.join("ledger");
    ensure_dir_mode(data, 0o711).with_context(|| format!("creating {}", data.display()))?;
    ensure_dir_mode(&ledger_dir, 0o700)
        .with_context(|| format!("creating {}", ledger_dir.display()))?;
    let root = instance_root(&config)?;
    let instances_dir = root.join("instances");
    let bin_dir = root.join("bin");
    let code_dir = root.join("code");
    for (d, mode) in [
        (&instances_dir, 0o711),
        (&code_dir, 0o711),
        (&bin_dir, 0o755),
    ] {
        ensure_dir_mode(d, mode).with_context(|| format!("creating {}", d.display()))?;
    }
    // Logs of a previous run's instances.
    if let Ok(entries) = fs::read_dir(&instances_dir) {
        for e in entries.flatten() {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    install_launcher(&bin_dir)
        .with_context(|| format!("installing the Python launcher in {}", bin_dir.display()))?;
    let confinement = if config.confine {
        Some(Arc::new(Confinement::new(data, &config.cgroup_name())?))
    } else {
        tracing::warn!(node = %config.node_id, "instances are NOT confined (--insecure): functions run as the agent's user and see what it sees");
        None
    };
    let paths = ProcessOptions {
        instances_dir,
        proxy_bin: config.proxy_bin.clone(),
        intercept_lib: None,
        bin_dir: Some(bin_dir),
    };
    let (runtime, driver) = build_runtime(&config, paths, confinement.clone()).await?;

    restore_ledgers(&ledger_dir, config.sharing);

    let running = Running::default();
    let service = AgentService::new(ServiceParts {
        node_id: config.node_id.clone(),
        runtime,
        code_dir,
        idle_timeout: config.idle_timeout,
        sharing: config.sharing,
        ledger_dir: Some(ledger_dir),
        running: running.clone(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let registry = tokio::spawn(registry::maintain(
        Registration {
            node_id: config.node_id.clone(),
            advertise_addr: config.advertise_addr.clone(),
            memory_bytes: config.memory_bytes,
            endpoints: config.controller_endpoints.clone(),
            interval: config.heartbeat_interval,
            security: config.security.clone(),
            running,
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
    // Cluster members only: a controller (or this node itself, for its
    // health check) with a certificate of the cluster CA.
    let members = config.security.verifier();
    let agent = tonic::service::interceptor::InterceptedService::new(
        AgentServer::new(service.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        members.require_any(&[Role::Controller, Role::Agent]),
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = config.security.server_tls_mutual() {
        builder = builder
            .tls_config(tls)
            .context("configuring the agent's TLS")?;
    }
    let served = builder
        .add_service(agent)
        .serve_with_incoming_shutdown(ephemera_sys::net::nodelay_incoming(listener), async move {
            let _ = server_stop_rx.await;
        })
        .await;

    let _ = stop_tx.send(true);
    let _ = registry.await;
    service.shutdown().await;
    if let Some(d) = driver {
        d.remove_base();
    }
    if let Some(c) = confinement {
        c.remove_base();
    }
    if root != *data {
        // The /var/tmp root belongs to this run of this agent alone.
        if let Err(e) = fs::remove_dir_all(&root) {
            tracing::warn!(root = %root.display(), "could not remove the instance root: {e}");
        }
    }
    tracing::info!(node = %config.node_id, "node agent stopped");
    served.context("serving the Agent service")
}

/// The configured runtime, with what a previous run of this agent left
/// behind removed (stale cgroups or containers); for the process runtime,
/// also the cgroup driver whose subtree is removed at shutdown. `paths`
/// comes without the intercept library: it is chosen here.
async fn build_runtime(
    config: &AgentConfig,
    mut paths: ProcessOptions,
    confinement: Option<Arc<Confinement>>,
) -> anyhow::Result<(Arc<dyn Runtime>, Option<Arc<Driver>>)> {
    // With an instance image, the proxy, intercept and launcher are the image's.
    let image_mode = config.runtime == RuntimeKind::Docker && config.instance_image.is_some();
    paths.intercept_lib = match &config.intercept_lib {
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
    if !image_mode {
        // Instances run the agent's copies in `bin/`: reachable by their
        // uids wherever the build put the originals, and unchangeable by them.
        if let Some(bin) = paths.bin_dir.clone() {
            paths.proxy_bin = install_copy(&config.proxy_bin, &bin)?;
            paths.intercept_lib = paths
                .intercept_lib
                .map(|so| install_copy(&so, &bin))
                .transpose()?;
        }
    }
    Ok(match config.runtime {
        RuntimeKind::Process => {
            let driver = Arc::new(Driver::detect(&config.cgroup_name()));
            driver.cleanup_stale();
            let rt = ProcessRuntime::new(paths, driver.clone(), confinement);
            (Arc::new(rt), Some(driver))
        }
        RuntimeKind::Docker => {
            let rt = DockerRuntime::connect(DockerOptions {
                paths,
                image: docker::DEFAULT_IMAGE.to_string(),
                instance_image: config.instance_image.clone(),
                network: config.docker_network.clone(),
                owner: config.cgroup_name(),
                confinement,
            })?;
            if !rt.available().await {
                anyhow::bail!(
                    "the docker runtime is configured but the docker engine does not answer"
                );
            }
            rt.remove_stale().await;
            (Arc::new(rt), None)
        }
    })
}

/// Reads every tenant ledger left by a previous run. Its instances died with
/// that run, so each is terminated in the pool (rolling back every loan) and
/// the ledger is cleared.
fn restore_ledgers(dir: &Path, scope: SharingScope) {
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

/// Where instances' files live: the data directory when every user can
/// reach it (what the docker runtime needs: its containers mount these paths
/// as the agent sees them), else `/var/tmp/ephemera/<node>` for the process
/// runtime, whose instances run under tenant uids.
fn instance_root(config: &AgentConfig) -> anyhow::Result<PathBuf> {
    let data = &config.data_dir;
    if !config.confine || config.runtime == RuntimeKind::Docker || searchable_by_all(data) {
        return Ok(data.clone());
    }
    let root = Path::new("/var/tmp/ephemera").join(config.cgroup_name());
    ensure_dir_mode(Path::new("/var/tmp/ephemera"), 0o711)
        .and_then(|()| ensure_dir_mode(&root, 0o711))
        .with_context(|| format!("creating {}", root.display()))?;
    tracing::warn!(
        data = %data.display(),
        instances = %root.display(),
        "the data dir is not reachable by other users; instances live under /var/tmp instead"
    );
    Ok(root)
}

/// Whether every directory from `/` down to `dir` lets others search it.
fn searchable_by_all(dir: &Path) -> bool {
    dir.ancestors()
        .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

/// Puts `file` into `dir` under its own name (a hard link, else a copy),
/// readable and executable by all; returns the new path.
fn install_copy(file: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let name = file
        .file_name()
        .with_context(|| format!("{} has no file name", file.display()))?;
    let dest = dir.join(name);
    let _ = fs::remove_file(&dest);
    if fs::hard_link(file, &dest).is_err() {
        fs::copy(file, &dest)
            .with_context(|| format!("copying {} to {}", file.display(), dest.display()))?;
    }
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", dest.display()))?;
    Ok(dest)
}
