//! The docker runtime: each instance is a container on the host's engine
//! (siblings of the agent's own container when it runs in one), created with
//! `memory == memory_swap`, resized with `update_container`, killed and
//! removed at the end.
//!
//! The engine has no registry, so the image is local: an empty image
//! (`docker import` of an empty tar, i.e. `FROM scratch`) plus read-only bind
//! mounts of the host's `/usr`, `/lib*`, `/bin`, `/sbin` and `/etc`; the
//! proxy, the intercept library, the launcher directory, the code directory
//! (read-only) and the instance directory (control block, tier, socket) are
//! mounted at the same paths as on the host, so the agent talks to the proxy
//! through the same unix socket path and maps the same control block. The
//! container shares the host's pid namespace so launcher pids mean the same
//! thing everywhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, ContainerUpdateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use ephemera_control_block::{ControlBlock, Counters, Slot};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::OnceCell;

use super::cgroup::Cgroup;
use super::process::{cleanup, prepare_dir, proxy_args, run_activation, ProcessOptions};
use super::{Activation, Instance, InstanceSpec, Limits, Output, RunError, Runtime, RuntimeError};
use crate::proxy::client::ProxyClient;

/// The local image every instance container starts from.
pub const DEFAULT_IMAGE: &str = "ephemera/host-rootfs:latest";

/// Label naming the agent that owns a container.
const OWNER_LABEL: &str = "ephemera.owner";

/// How long a new container's proxy may take to accept our connection.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the docker runtime finds its pieces.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Paths shared with the process runtime (instances, proxy, intercept, launchers).
    pub paths: ProcessOptions,
    /// Image to run; created (empty) if missing.
    pub image: String,
    /// Container network mode (`none`, `host`, `bridge`, ...).
    pub network: String,
    /// Label value marking this agent's containers (its cgroup name).
    pub owner: String,
}

/// Starts instances as docker containers.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    /// The engine.
    docker: Docker,
    /// Setup.
    opts: DockerOptions,
    /// Created once: the empty image.
    image: Arc<OnceCell<()>>,
}

fn docker_err(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> RuntimeError {
    let what = what.into();
    move |e| RuntimeError::Io {
        what,
        source: std::io::Error::other(e.to_string()),
    }
}

impl DockerRuntime {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket).
    pub fn connect(opts: DockerOptions) -> Result<DockerRuntime, RuntimeError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(docker_err("connecting to the docker engine"))?;
        Ok(DockerRuntime {
            docker,
            opts,
            image: Arc::new(OnceCell::new()),
        })
    }

    /// True when the engine answers.
    pub async fn available(&self) -> bool {
        self.docker.ping().await.is_ok()
    }

    async fn ensure_image(&self) -> Result<(), RuntimeError> {
        self.image
            .get_or_try_init(|| async {
                if self.docker.inspect_image(&self.opts.image).await.is_ok() {
                    return Ok(());
                }
                let (repo, tag) = self
                    .opts
                    .image
                    .rsplit_once(':')
                    .unwrap_or((&self.opts.image, "latest"));
                let options = CreateImageOptionsBuilder::default()
                    .from_src("-")
                    .repo(repo)
                    .tag(tag)
                    .build();
                // An empty tar archive: two zero blocks.
                let empty = bytes_of(vec![0u8; 1024]);
                let mut stream =
                    self.docker
                        .create_image(Some(options), Some(bollard::body_full(empty)), None);
                while let Some(item) = stream.next().await {
                    item.map_err(docker_err(format!("importing image {}", self.opts.image)))?;
                }
                tracing::info!(image = %self.opts.image, "created the empty instance image");
                Ok(())
            })
            .await
            .copied()
    }

    async fn start_inner(&self, spec: InstanceSpec) -> Result<Box<dyn Instance>, RuntimeError> {
        self.ensure_image().await?;
        let (dir, tier, control_path, control) =
            prepare_dir(&self.opts.paths.instances_dir, &spec)?;
        let name = format!("ephemera-{}", spec.instance_id);
        let started = self
            .create_and_connect(&spec, &name, &dir, &tier, &control_path)
            .await;
        let (client, cgroup) = match started {
            Ok(v) => v,
            Err(e) => {
                self.remove(&name).await;
                cleanup(&dir, None).await;
                return Err(e);
            }
        };
        let limits = Arc::new(DockerLimits {
            docker: self.docker.clone(),
            container: name.clone(),
            control,
            cgroup,
        });
        Ok(Box::new(DockerInstance {
            id: spec.instance_id.clone(),
            name,
            launcher_pid: client.launcher_pid(),
            client: Some(client),
            runtime: self.clone(),
            dir,
            limits,
        }))
    }

    async fn create_and_connect(
        &self,
        spec: &InstanceSpec,
        name: &str,
        dir: &Path,
        tier: &Path,
        control: &Path,
    ) -> Result<(ProxyClient, Option<Cgroup>), RuntimeError> {
        let start_err = |reason: String| RuntimeError::Start {
            instance: spec.instance_id.clone(),
            function: spec.qualified(),
            reason,
        };
        let p = &self.opts.paths;
        let mut binds = Vec::new();
        for host in [
            "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc",
        ] {
            if Path::new(host).exists() {
                binds.push(format!("{host}:{host}:ro"));
            }
        }
        let mut ro = vec![p.proxy_bin.clone(), spec.code_dir.clone()];
        ro.extend(p.intercept_lib.clone());
        ro.extend(p.bin_dir.clone());
        for path in ro {
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            binds.push(format!("{0}:{0}:ro", path.display()));
        }
        binds.push(format!("{0}:{0}:rw", dir.display()));
        let limit = i64::try_from(spec.memory_bytes).unwrap_or(i64::MAX);
        let cmd: Vec<String> = std::iter::once(p.proxy_bin.display().to_string())
            .chain(
                proxy_args(p, spec, dir, tier, control)
                    .into_iter()
                    .map(|a| a.to_string_lossy().into_owned()),
            )
            .collect();
        let mut labels = HashMap::new();
        labels.insert("ephemera.instance".to_string(), spec.instance_id.clone());
        labels.insert("ephemera.function".to_string(), spec.qualified());
        labels.insert(OWNER_LABEL.to_string(), self.opts.owner.clone());
        let body = ContainerCreateBody {
            image: Some(self.opts.image.clone()),
            cmd: Some(cmd),
            env: Some(vec![
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ]),
            working_dir: Some("/".into()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                memory: Some(limit),
                memory_swap: Some(limit),
                binds: Some(binds),
                network_mode: Some(self.opts.network.clone()),
                pid_mode: Some("host".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| start_err(format!("creating container {name}: {e}")))?;
        self.docker
            .start_container(name, None)
            .await
            .map_err(|e| start_err(format!("starting container {name}: {e}")))?;
        let socket = dir.join("proxy.sock");
        let deadline = Instant::now() + START_TIMEOUT;
        let client = loop {
            match ProxyClient::connect(&socket).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let state = self.docker.inspect_container(name, None).await.ok();
                    let running = state
                        .as_ref()
                        .and_then(|s| s.state.as_ref())
                        .and_then(|s| s.running)
                        .unwrap_or(true);
                    if !running {
                        let log =
                            std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
                        return Err(start_err(format!(
                            "container {name} exited before its proxy accepted ({e}); {}",
                            log.trim()
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => {
                    return Err(start_err(format!(
                        "cannot reach the proxy of {name} at {}: {e}",
                        socket.display()
                    )))
                }
            }
        };
        let pid = self
            .docker
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|s| s.state?.pid)
            .and_then(|p| u32::try_from(p).ok());
        Ok((client, pid.and_then(Cgroup::of_pid)))
    }

    /// Removes containers an earlier run of this agent left behind.
    pub async fn remove_stale(&self) {
        let mut filters = HashMap::new();
        filters.insert("label", vec![format!("{OWNER_LABEL}={}", self.opts.owner)]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let Ok(list) = self.docker.list_containers(Some(options)).await else {
            return;
        };
        for c in list {
            if let Some(id) = c.id {
                tracing::warn!(container = %id, "removing a stale instance container");
                self.remove(&id).await;
            }
        }
    }

    async fn remove(&self, name: &str) {
        let kill = KillContainerOptionsBuilder::default()
            .signal("KILL")
            .build();
        let _ = self.docker.kill_container(name, Some(kill)).await;
        let rm = RemoveContainerOptionsBuilder::default().force(true).build();
        if let Err(e) = self.docker.remove_container(name, Some(rm)).await {
            tracing::warn!(container = name, "removing container: {e}");
        }
    }

    /// True when the container was OOM-killed.
    async fn oom_killed(&self, name: &str) -> bool {
        self.docker
            .inspect_container(name, None)
            .await
            .ok()
            .and_then(|s| s.state?.oom_killed)
            .unwrap_or(false)
    }
}

fn bytes_of(v: Vec<u8>) -> bytes::Bytes {
    bytes::Bytes::from(v)
}

impl Runtime for DockerRuntime {
    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<Box<dyn Instance>, RuntimeError>> {
        self.start_inner(spec).boxed()
    }
}

/// One running container.
#[derive(Debug)]
struct DockerInstance {
    /// Instance id.
    id: String,
    /// Container name.
    name: String,
    /// Launcher pid (host pid namespace).
    launcher_pid: u32,
    /// The socket to the proxy.
    client: Option<ProxyClient>,
    /// For kill/remove/inspect.
    runtime: DockerRuntime,
    /// The instance directory.
    dir: PathBuf,
    /// Limits and control block.
    limits: Arc<DockerLimits>,
}

impl Instance for DockerInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn launcher_pid(&self) -> u32 {
        self.launcher_pid
    }

    fn limits(&self) -> Arc<dyn Limits> {
        self.limits.clone()
    }

    fn run(&mut self, activation: Activation) -> BoxFuture<'_, Result<Output, RunError>> {
        async move {
            match run_activation(&mut self.client, activation).await {
                Err(RunError::Exited {
                    status,
                    stderr_tail,
                    idle,
                }) if self.runtime.oom_killed(&self.name).await
                    || self
                        .limits
                        .cgroup
                        .as_ref()
                        .is_some_and(|c| c.oom_kills() > 0) =>
                {
                    Err(RunError::Exited {
                        status: format!("{status} (OOM-killed: it exceeded its memory limit)"),
                        stderr_tail,
                        idle,
                    })
                }
                other => other,
            }
        }
        .boxed()
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            let DockerInstance {
                id,
                name,
                client,
                runtime,
                dir,
                ..
            } = *self;
            drop(client);
            runtime.remove(&name).await;
            cleanup(&dir, None).await;
            tracing::debug!(instance = %id, container = %name, "container removed");
        }
        .boxed()
    }
}

/// Limits of a container: `update_container` plus the control block.
#[derive(Debug)]
struct DockerLimits {
    /// The engine.
    docker: Docker,
    /// Container name.
    container: String,
    /// The control block.
    control: ControlBlock,
    /// The container's memory cgroup, read for usage.
    cgroup: Option<Cgroup>,
}

impl Limits for DockerLimits {
    fn set_limit(&self, bytes: u64) -> BoxFuture<'_, Result<(), RuntimeError>> {
        async move {
            if let Some(usage) = self.usage() {
                if bytes < usage {
                    return Err(RuntimeError::Cgroup(
                        super::cgroup::CgroupError::BelowUsage {
                            path: PathBuf::from(&self.container),
                            limit: bytes,
                            usage,
                        },
                    ));
                }
            }
            let limit = i64::try_from(bytes).unwrap_or(i64::MAX);
            let body = ContainerUpdateBody {
                memory: Some(limit),
                memory_swap: Some(limit),
                ..Default::default()
            };
            self.docker
                .update_container(&self.container, body)
                .await
                .map_err(docker_err(format!(
                    "updating the memory limit of {} to {bytes}",
                    self.container
                )))?;
            self.control.set_limit(bytes);
            Ok(())
        }
        .boxed()
    }

    fn announce_limit(&self, bytes: u64) {
        self.control.set_limit(bytes);
    }

    fn usage(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(Cgroup::usage)
    }

    fn max_usage(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(Cgroup::max_usage)
    }

    fn counters(&self) -> Counters {
        self.control.counters()
    }

    fn take_safeguard(&self) -> bool {
        if self.control.get(Slot::Safeguard) != 0 {
            self.control.clear_safeguard();
            true
        } else {
            false
        }
    }
}
