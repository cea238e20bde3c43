//! The agent's life: [`run`] prepares the data directory, chooses and
//! builds the runtime, restores the ledgers of a previous run, serves the
//! [`AgentService`] with the registry's heartbeats beside it, and at
//! shutdown stops every instance before the server drains.
//!
//! Data directory (absolute: its paths are handed to proxies and mounted
//! in containers): `instances/` (one directory per instance; a previous
//! run's are removed), `bin/` (the Python launcher), `code/` (the code
//! cache) and `ledger/` (one pool per tenant).

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
use crate::runtime::docker::{self, DockerOptions, DockerRuntime};
use crate::runtime::process::{ProcessOptions, ProcessRuntime};
use crate::runtime::Runtime;
use crate::service::{AgentService, ServiceParts};

/// The Python action-loop launcher, written to `<data_dir>/bin/`.
pub const EPHEMERA_PYTHON: &str = include_str!("launcher/ephemera-python");

/// Largest gRPC message the agent accepts (code travels in `Run`).
pub const MAX_MESSAGE: usize = 96 << 20;

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
    install_launcher(&bin_dir)
        .with_context(|| format!("installing the Python launcher in {}", bin_dir.display()))?;
    let paths = ProcessOptions {
        instances_dir,
        proxy_bin: config.proxy_bin.clone(),
        intercept_lib: None,
        bin_dir: Some(bin_dir),
    };
    let (runtime, driver) = build_runtime(&config, paths).await?;

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

/// The configured runtime, with what a previous run of this agent left
/// behind removed (stale cgroups or containers); for the process runtime,
/// also the cgroup driver whose subtree is removed at shutdown. `paths`
/// comes without the intercept library: it is chosen here.
async fn build_runtime(
    config: &AgentConfig,
    mut paths: ProcessOptions,
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
    Ok(match config.runtime {
        RuntimeKind::Process => {
            let driver = Arc::new(Driver::detect(&config.cgroup_name()));
            driver.cleanup_stale();
            let rt = ProcessRuntime::new(paths, driver.clone());
            (Arc::new(rt), Some(driver))
        }
        RuntimeKind::Docker => {
            let rt = DockerRuntime::connect(DockerOptions {
                paths,
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
