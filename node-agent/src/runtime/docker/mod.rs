//! The docker runtime: each instance is a container on the host's engine
//! (siblings of the agent's own container when it runs in one), created with
//! `memory == memory_swap`, resized with `update_container`, killed and
//! removed at the end.
//!
//! Two ways to give a container its root file system:
//!
//! - **Host rootfs** (no [`DockerOptions::instance_image`]; for an agent that
//!   runs directly on the host). The engine has no registry, so the image is
//!   local: an empty image (`docker import` of an empty tar, i.e. `FROM
//!   scratch`) plus read-only bind mounts of the host's `/usr`, `/lib*`,
//!   `/bin`, `/sbin` and `/etc`; the proxy, the intercept library and the
//!   launcher directory are the agent's own files, mounted at the same paths.
//! - **Instance image** ([`DockerOptions::instance_image`], e.g.
//!   `ephemera/python:dev` from `compose/build-images.sh`; for an agent that
//!   itself runs in a container, whose files do not exist on the host). The
//!   image holds the runtime (`/bin/sh`, python3) and Ephemera's pieces at
//!   fixed paths ([`ephemera_domain::image`]): the proxy, the intercept and
//!   the launchers; those are what the proxy runs and preloads, whatever
//!   the agent's own `proxy_bin`/`intercept_lib` say. The image is never
//!   pulled or created: it must exist locally.
//!
//! In both modes the code directory (read-only) and the instance directory
//! (control block, tier, proxy socket, logs; read-write) are bind-mounted at
//! the same path as the agent sees them. Docker resolves bind sources on the
//! host, so a containerised agent must have its data directory mounted at the
//! **same path** on the host and in its container (compose does); then the
//! agent, the proxy and the function share the very same socket and
//! `MAP_SHARED` control block.
//!
//! Namespaces. Instance containers share the host's pid namespace, so the
//! launcher pid an instance reports is a host pid. Nothing in the agent
//! compares or signals pids: the proxy kills its own launcher, and the
//! container's memory cgroup (read for usage and peak) is found by the
//! container id ([`Cgroup::of_container`]), never by trusting a host pid in
//! the agent's `/proc`, which names another process when the agent has its
//! own pid namespace. A containerised agent therefore needs no `pid: host`;
//! to read its instances' memory usage (safeguard, profiling peak) it needs
//! the host's cgroup tree at `/host/sys/fs/cgroup` (read-only). Without it,
//! usage is unknown: limits are still applied and OOM kills still detected
//! (`docker inspect`), and the tier's own safeguard flag still works.
//!
//! This file starts containers; `container` is one running container (its
//! activations, its OOM kills, its limit changed through the engine).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, ResourcesUlimits};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use bollard::Docker;
use ephemera_domain::image;
use ephemera_sandbox::DockerHardening;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::OnceCell;

use super::confine::Confinement;
use super::process::{cleanup, prepare_dir, proxy_args, ProcessOptions};
use super::{Instance, InstanceSpec, Runtime, RuntimeError};
use crate::proxy::client::ProxyClient;
use container::DockerInstance;
use ephemera_sys::Cgroup;

mod container;

/// The local image every instance container starts from.
pub const DEFAULT_IMAGE: &str = image::HOST_ROOTFS_IMAGE;

/// Label naming the agent that owns a container.
const OWNER_LABEL: &str = "ephemera.owner";

/// How long a new container's proxy may take to accept our connection.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the docker runtime finds its pieces.
#[derive(Debug, Clone)]
pub struct DockerOptions {
    /// Paths shared with the process runtime (instances, proxy, intercept, launchers).
    pub paths: ProcessOptions,
    /// Host-rootfs mode: the empty image; created if missing.
    pub image: String,
    /// Instance-image mode: a local image holding the runtime and
    /// `/opt/ephemera` (see the module doc); `None` for host-rootfs mode.
    pub instance_image: Option<String>,
    /// Container network mode (`none`, `host`, `bridge`, ...).
    pub network: String,
    /// Label value marking this agent's containers (its cgroup name).
    pub owner: String,
    /// Containers run as their tenant's uid, hardened (`None`: `--insecure`).
    pub confinement: Option<Arc<Confinement>>,
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

    /// The image containers are created from.
    fn image_name(&self) -> &str {
        self.opts
            .instance_image
            .as_deref()
            .unwrap_or(&self.opts.image)
    }

    /// The proxy, intercept and launcher paths as seen inside a container.
    fn container_paths(&self) -> ProcessOptions {
        match &self.opts.instance_image {
            None => self.opts.paths.clone(),
            Some(_) => ProcessOptions {
                instances_dir: self.opts.paths.instances_dir.clone(),
                proxy_bin: PathBuf::from(image::PROXY),
                intercept_lib: Some(PathBuf::from(image::INTERCEPT)),
                bin_dir: Some(PathBuf::from(image::BIN_DIR)),
            },
        }
    }

    async fn ensure_image(&self) -> Result<(), RuntimeError> {
        self.image
            .get_or_try_init(|| async {
                if let Some(image) = &self.opts.instance_image {
                    return match self.docker.inspect_image(image).await {
                        Ok(_) => Ok(()),
                        Err(e) => Err(RuntimeError::Io {
                            what: format!(
                                "instance image {image} is not in the local engine \
                                 (build it with compose/build-images.sh; nothing is pulled)"
                            ),
                            source: std::io::Error::other(e.to_string()),
                        }),
                    };
                }
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
        Ok(Box::new(DockerInstance::new(
            self.clone(),
            (spec.instance_id.clone(), name, dir),
            client,
            control,
            spec.memory_bytes,
            cgroup,
        )))
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
        let p = self.container_paths();
        let host_rootfs = self.opts.instance_image.is_none();
        let mut binds = Vec::new();
        let mut ro = vec![spec.code_dir.clone()];
        if host_rootfs {
            for host in [
                "/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc",
            ] {
                if Path::new(host).exists() {
                    binds.push(format!("{host}:{host}:ro"));
                }
            }
            ro.push(p.proxy_bin.clone());
            ro.extend(p.intercept_lib.clone());
            ro.extend(p.bin_dir.clone());
        }
        for path in ro {
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            binds.push(format!("{0}:{0}:ro", path.display()));
        }
        binds.push(format!("{0}:{0}:rw", dir.display()));
        let limit = i64::try_from(spec.memory_bytes).unwrap_or(i64::MAX);
        let args: Vec<String> = proxy_args(&p, spec, dir, tier, control)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        // Host rootfs: no entrypoint, the command is the proxy. Image: the
        // proxy is the entrypoint (whatever the image's own is); its env
        // (PATH to python3, LANG) is kept.
        let (entrypoint, cmd, env) = if host_rootfs {
            let cmd = std::iter::once(p.proxy_bin.display().to_string())
                .chain(args)
                .collect();
            let path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
            (None, cmd, Some(vec![path.to_string()]))
        } else {
            (Some(vec![p.proxy_bin.display().to_string()]), args, None)
        };
        let mut labels = HashMap::new();
        labels.insert("ephemera.instance".to_string(), spec.instance_id.clone());
        labels.insert("ephemera.function".to_string(), spec.qualified());
        labels.insert(OWNER_LABEL.to_string(), self.opts.owner.clone());
        let mut host_config = HostConfig {
            memory: Some(limit),
            memory_swap: Some(limit),
            binds: Some(binds),
            network_mode: Some(self.opts.network.clone()),
            ..Default::default()
        };
        let user = match &self.opts.confinement {
            Some(c) => {
                let ids = c.prepare(spec, dir, tier, control)?;
                harden(&mut host_config, c.docker(ids, dir));
                Some(ids.docker_user())
            }
            None => None,
        };
        let body = ContainerCreateBody {
            image: Some(self.image_name().to_string()),
            entrypoint,
            cmd: Some(cmd),
            env,
            user,
            working_dir: Some("/".into()),
            labels: Some(labels),
            host_config: Some(host_config),
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
        let inspect = self.docker.inspect_container(name, None).await.ok();
        let id = inspect
            .as_ref()
            .and_then(|s| s.id.clone())
            .unwrap_or_default();
        let pid = inspect
            .and_then(|s| s.state?.pid)
            .and_then(|p| u32::try_from(p).ok());
        let cgroup = Cgroup::of_container(&id, pid);
        if cgroup.is_none() {
            tracing::warn!(
                container = name,
                "cannot find the container's memory cgroup (a containerised agent needs the host's \
                 /sys/fs/cgroup at /host/sys/fs/cgroup): its memory usage is unknown"
            );
        }
        Ok((client, cgroup))
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

/// Applies the sandbox's hardening of an instance container: no
/// capabilities, `no-new-privileges`, a pids limit, a read-only root file
/// system (the instance directory is the one writable bind), and the
/// engine's private pid and IPC namespaces.
fn harden(host: &mut HostConfig, h: DockerHardening) {
    host.cap_drop = Some(h.cap_drop);
    host.cap_add = Some(h.cap_add);
    host.security_opt = Some(h.security_opt);
    host.pids_limit = Some(h.pids_limit);
    host.readonly_rootfs = Some(h.readonly_rootfs);
    host.pid_mode = h.pid_mode;
    host.ipc_mode = Some(h.ipc_mode);
    host.privileged = Some(h.privileged);
    host.ulimits = Some(
        h.ulimits
            .into_iter()
            .map(|u| ResourcesUlimits {
                name: Some(u.name),
                soft: Some(u.soft),
                hard: Some(u.hard),
            })
            .collect(),
    );
    if !h.tmpfs.is_empty() {
        host.tmpfs = Some(h.tmpfs.into_iter().collect());
    }
}
