//! One running container: the instance its worker owns (activations
//! through the proxy, OOM kills noticed, removed at the end) and how its
//! memory limit changes (through the engine, not the cgroup file).

use std::path::PathBuf;
use std::sync::Arc;

use bollard::models::ContainerUpdateBody;
use bollard::Docker;
use ephemera_control_block::ControlFile;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::{docker_err, DockerRuntime};
use crate::proxy::client::ProxyClient;
use crate::runtime::limits::{ApplyLimit, InstanceLimits};
use crate::runtime::process::{cleanup, run_activation};
use crate::runtime::{Activation, Instance, Limits, Output, RunError, RuntimeError};
use ephemera_sys::Cgroup;

/// One running container.
#[derive(Debug)]
pub(super) struct DockerInstance {
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
    limits: Arc<InstanceLimits<EngineUpdate>>,
}

impl DockerInstance {
    /// The instance in container `name`, whose proxy answered on `client`;
    /// its limit starts at `initial_limit` and changes through the engine.
    pub(super) fn new(
        runtime: DockerRuntime,
        (id, name, dir): (String, String, PathBuf),
        client: ProxyClient,
        control: ControlFile,
        initial_limit: u64,
        cgroup: Option<Cgroup>,
    ) -> DockerInstance {
        let engine = EngineUpdate {
            docker: runtime.docker.clone(),
            container: name.clone(),
        };
        DockerInstance {
            id,
            launcher_pid: client.launcher_pid(),
            client: Some(client),
            limits: Arc::new(InstanceLimits::new(control, initial_limit, cgroup, engine)),
            name,
            runtime,
            dir,
        }
    }
}

impl Instance for DockerInstance {
    fn launcher_pid(&self) -> u32 {
        self.launcher_pid
    }

    fn limits(&self) -> Arc<dyn Limits> {
        self.limits.clone()
    }

    fn run(&mut self, activation: Activation) -> BoxFuture<'_, Result<Output, RunError>> {
        async move {
            match run_activation(&mut self.client, activation).await {
                Err(e @ RunError::Exited { .. })
                    if self.runtime.oom_killed(&self.name).await || self.limits.oom_killed() =>
                {
                    Err(e.oom_killed())
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

/// The docker runtime resizes a container through the engine
/// (`update_container`, `memory == memory_swap`).
#[derive(Debug)]
struct EngineUpdate {
    /// The engine.
    docker: Docker,
    /// Container name.
    container: String,
}

impl ApplyLimit for EngineUpdate {
    fn apply<'a>(
        &'a self,
        cgroup: Option<&'a Cgroup>,
        bytes: u64,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async move {
            // The engine would shrink below usage and let the kernel
            // OOM-kill: refuse it here, as the cgroup file (v1) does.
            if let Some(usage) = cgroup.and_then(Cgroup::usage) {
                if bytes < usage {
                    return Err(RuntimeError::Cgroup(
                        ephemera_sys::CgroupError::BelowUsage {
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
                )))
        }
        .boxed()
    }
}
