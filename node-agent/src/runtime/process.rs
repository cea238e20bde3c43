//! The process runtime: each instance is an `ephemera-proxy` child of the
//! agent, started inside a fresh memory cgroup (it joins the cgroup between
//! fork and exec, so the launcher it starts is limited from its first
//! instruction).
//!
//! Instance directory `<instances>/<instance_id>/`:
//! `control` (the control block), `tmp/` (the tier directory), `proxy.sock`,
//! `proxy.log`, `stdout.log` and `stderr.log` (the launcher's logs). When an
//! instance stops, everything but the logs is removed.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ephemera_control_block::ControlFile;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::process::{Child, Command};

use super::limits::{ApplyLimit, InstanceLimits};
use super::{Activation, Instance, InstanceSpec, Limits, Output, RunError, Runtime, RuntimeError};
use crate::proxy::client::ProxyClient;
use crate::proxy::{Reply, Request};
use ephemera_sandbox::PidsCgroup;
use ephemera_sys::{Cgroup, Driver};

use super::confine::{remove_pids, Confinement};

/// How long a new proxy may take to accept our connection.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time the proxy gets beyond an activation's timeout to report it.
const PROXY_GRACE: Duration = Duration::from_secs(5);

/// Where the process runtime finds its pieces.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Instance directories go here.
    pub instances_dir: PathBuf,
    /// The `ephemera-proxy` executable.
    pub proxy_bin: PathBuf,
    /// `libephemera_intercept.so`, if any.
    pub intercept_lib: Option<PathBuf>,
    /// Prefixed to the launcher's PATH (holds `ephemera-python`).
    pub bin_dir: Option<PathBuf>,
}

/// Starts instances as child processes in memory cgroups.
#[derive(Debug, Clone)]
pub struct ProcessRuntime {
    /// Paths.
    opts: ProcessOptions,
    /// The cgroup hierarchy.
    driver: Arc<Driver>,
    /// How instances are confined (`None` only with `--insecure`).
    confinement: Option<Arc<Confinement>>,
}

impl ProcessRuntime {
    /// A runtime with `driver` (see [`Driver::detect`]) confining its
    /// instances with `confinement`.
    pub fn new(
        opts: ProcessOptions,
        driver: Arc<Driver>,
        confinement: Option<Arc<Confinement>>,
    ) -> ProcessRuntime {
        ProcessRuntime {
            opts,
            driver,
            confinement,
        }
    }

    async fn start_inner(&self, spec: InstanceSpec) -> Result<Box<dyn Instance>, RuntimeError> {
        let (dir, tier, control_path, control) = prepare_dir(&self.opts.instances_dir, &spec)?;
        let cgroup = self.driver.create(&spec.instance_id, spec.memory_bytes)?;
        let mut pids = None;
        let started = self
            .spawn_and_connect(
                &spec,
                &dir,
                &tier,
                &control_path,
                cgroup.as_ref(),
                &mut pids,
            )
            .await;
        let (child, client) = match started {
            Ok(v) => v,
            Err(e) => {
                cleanup(&dir, cgroup.as_ref()).await;
                remove_pids(pids).await;
                return Err(e);
            }
        };
        let limits = Arc::new(InstanceLimits::new(
            control,
            spec.memory_bytes,
            cgroup,
            CgroupFile,
        ));
        tracing::debug!(
            instance = %spec.instance_id,
            function = %spec.qualified(),
            launcher_pid = client.launcher_pid(),
            "instance started"
        );
        Ok(Box::new(ProcessInstance {
            id: spec.instance_id.clone(),
            launcher_pid: client.launcher_pid(),
            client: Some(client),
            child,
            dir,
            limits,
            pids,
        }))
    }

    async fn spawn_and_connect(
        &self,
        spec: &InstanceSpec,
        dir: &Path,
        tier: &Path,
        control: &Path,
        cgroup: Option<&Cgroup>,
        pids: &mut Option<PidsCgroup>,
    ) -> Result<(Child, ProxyClient), RuntimeError> {
        let start_err = |reason: String| RuntimeError::Start {
            instance: spec.instance_id.clone(),
            function: spec.qualified(),
            reason,
        };
        let socket = dir.join("proxy.sock");
        let log_path = dir.join("proxy.log");
        let log = File::create(&log_path).map_err(|source| RuntimeError::Io {
            what: format!("creating {}", log_path.display()),
            source,
        })?;
        let log2 = log.try_clone().map_err(|source| RuntimeError::Io {
            what: format!("cloning {}", log_path.display()),
            source,
        })?;
        let mut cmd = Command::new(&self.opts.proxy_bin);
        cmd.args(proxy_args(&self.opts, spec, dir, tier, control))
            .env_remove("LD_PRELOAD")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        // The memory cgroup is joined first, as root, before the sandbox
        // (if any) drops privileges: pre_exec hooks run in order.
        if let Some(cg) = cgroup {
            ephemera_sys::process::join_cgroup_on_exec(cmd.as_std_mut(), &cg.procs_file())
                .map_err(|e| start_err(format!("joining {}: {e}", cg.path().display())))?;
        }
        let applied = match &self.confinement {
            Some(c) => {
                let ids = c.prepare(spec, dir, tier, control)?;
                c.check_reachable(ids, &[dir, &spec.code_dir])?;
                let read_exec: Vec<PathBuf> = std::iter::once(self.opts.proxy_bin.clone())
                    .chain(self.opts.intercept_lib.clone())
                    .chain(self.opts.bin_dir.clone())
                    .collect();
                let (policy, cg) = c.policy(ids, spec, dir, tier, control, &read_exec)?;
                *pids = cg;
                let applied = policy
                    .apply_to(cmd.as_std_mut())
                    .map_err(|e| start_err(format!("confining the instance: {e}")))?;
                tracing::debug!(instance = %spec.instance_id, "sandbox: {applied}");
                Some(applied)
            }
            None => None,
        };
        let mut child = cmd.spawn().map_err(|e| match &applied {
            Some(a) => start_err(a.explain(e).to_string()),
            None => start_err(format!(
                "cannot run proxy {}: {e}",
                self.opts.proxy_bin.display()
            )),
        })?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(start_err(format!(
                    "proxy exited with {status} before accepting: {}",
                    log.trim()
                )));
            }
            match ProxyClient::connect(&socket).await {
                Ok(client) => return Ok((child, client)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) && Instant::now() < deadline =>
                {
                    // The proxy has not bound its socket yet.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Err(start_err(format!(
                        "cannot reach the proxy at {}: {e}",
                        socket.display()
                    )));
                }
            }
        }
    }
}

/// The `ephemera-proxy` command line for one instance (also used inside
/// containers, where every path is mounted at the same place).
pub(super) fn proxy_args(
    opts: &ProcessOptions,
    spec: &InstanceSpec,
    dir: &Path,
    tier: &Path,
    control: &Path,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec![
        "--socket".into(),
        dir.join("proxy.sock").into(),
        "--dir".into(),
        spec.code_dir.clone().into(),
        "--cmd".into(),
        spec.cmd.clone().into(),
        "--control".into(),
        control.into(),
        "--tier-dir".into(),
        tier.into(),
        "--mode".into(),
        spec.mode.as_str().into(),
        "--log-dir".into(),
        dir.into(),
        "--mem-limit".into(),
        spec.memory_bytes.to_string().into(),
    ];
    if let Some(so) = &opts.intercept_lib {
        args.push("--preload".into());
        args.push(so.into());
    }
    if let Some(bin) = &opts.bin_dir {
        args.push("--bin-dir".into());
        args.push(bin.into());
    }
    args
}

/// Creates an instance's directory, tier directory and control block.
pub(super) fn prepare_dir(
    instances_dir: &Path,
    spec: &InstanceSpec,
) -> Result<(PathBuf, PathBuf, PathBuf, ControlFile), RuntimeError> {
    let dir = instances_dir.join(&spec.instance_id);
    let tier = dir.join("tmp");
    fs::create_dir_all(&tier).map_err(|source| RuntimeError::Io {
        what: format!("creating {}", tier.display()),
        source,
    })?;
    let control_path = dir.join("control");
    let control =
        ControlFile::create(&control_path, spec.memory_bytes, spec.mode).map_err(|source| {
            RuntimeError::Io {
                what: format!("creating control block {}", control_path.display()),
                source,
            }
        })?;
    Ok((dir, tier, control_path, control))
}

impl Runtime for ProcessRuntime {
    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<Box<dyn Instance>, RuntimeError>> {
        self.start_inner(spec).boxed()
    }
}

/// Removes an instance's cgroup and non-log files.
pub(super) async fn cleanup(dir: &Path, cgroup: Option<&Cgroup>) {
    if let Some(cg) = cgroup.cloned() {
        let res =
            tokio::task::spawn_blocking(move || cg.kill_and_remove(Duration::from_secs(5))).await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("{e}"),
            Err(e) => tracing::warn!("cgroup cleanup task failed: {e}"),
        }
    }
    let _ = fs::remove_dir_all(dir.join("tmp"));
    let _ = fs::remove_file(dir.join("control"));
    let _ = fs::remove_file(dir.join("proxy.sock"));
}

/// One running proxy + launcher.
#[derive(Debug)]
struct ProcessInstance {
    /// Instance id.
    id: String,
    /// Launcher pid from the proxy's hello.
    launcher_pid: u32,
    /// The socket to the proxy; `None` once it broke.
    client: Option<ProxyClient>,
    /// The proxy process.
    child: Child,
    /// The instance directory.
    dir: PathBuf,
    /// Cgroup and control block.
    limits: Arc<InstanceLimits<CgroupFile>>,
    /// Its pids cgroup (confined instances).
    pids: Option<PidsCgroup>,
}

impl ProcessInstance {
    async fn run_inner(&mut self, act: Activation) -> Result<Output, RunError> {
        let res = self.run_checked(act).await;
        if matches!(res, Err(RunError::Exited { .. })) {
            // The launcher died (killed, OOM-killed): what it had mapped is
            // trimmed to its logical sizes before anything reads the tier.
            let (limits, tier) = (self.limits.clone(), self.dir.join("tmp"));
            let _ = tokio::task::spawn_blocking(move || limits.repair_tier(&tier)).await;
        }
        res
    }

    async fn run_checked(&mut self, act: Activation) -> Result<Output, RunError> {
        match run_activation(&mut self.client, act).await {
            Err(e @ RunError::Exited { .. }) if self.limits.oom_killed() => Err(e.oom_killed()),
            Err(RunError::Proxy(msg)) => {
                let status = match self.child.try_wait() {
                    Ok(Some(st)) => format!(" (proxy exited with {st})"),
                    _ => String::new(),
                };
                Err(RunError::Proxy(format!("{msg}{status}")))
            }
            other => other,
        }
    }
}

/// Runs one activation through an instance's proxy; the connection is
/// dropped (`None`) once the instance cannot serve again.
pub(super) async fn run_activation(
    client: &mut Option<ProxyClient>,
    act: Activation,
) -> Result<Output, RunError> {
    let Some(conn) = client.as_mut() else {
        return Err(RunError::Proxy("the connection broke earlier".into()));
    };
    let timeout_ms = act.timeout.as_millis() as u64;
    let request = Request::Run {
        activation_id: act.id,
        action_name: act.action_name,
        timeout_ms,
        value: act.input,
    };
    let reply = conn.call(&request, act.timeout + PROXY_GRACE).await;
    if !matches!(reply, Ok(Reply::Result { .. } | Reply::NonJson { .. })) {
        *client = None;
    }
    match reply {
        Ok(Reply::Result {
            result,
            duration_us,
        }) => Ok(Output {
            result,
            duration: Duration::from_micros(duration_us),
        }),
        Ok(Reply::NonJson { output, .. }) => Err(RunError::NonJson { output }),
        Ok(Reply::Exited {
            code,
            signal,
            stderr_tail,
            idle,
        }) => {
            let status = match (code, signal) {
                (Some(c), _) => format!("status {c}"),
                (None, Some(s)) => format!("signal {s}"),
                (None, None) => "unknown status".to_string(),
            };
            Err(RunError::Exited {
                status,
                stderr_tail,
                idle,
            })
        }
        Ok(Reply::Timeout {
            timeout_ms,
            stderr_tail,
        }) => Err(RunError::Timeout {
            timeout_ms,
            stderr_tail,
        }),
        Ok(Reply::Hello { .. }) => Err(RunError::Proxy("unexpected second hello".into())),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(RunError::Timeout {
            timeout_ms,
            stderr_tail: String::new(),
        }),
        Err(e) => Err(RunError::Proxy(e.to_string())),
    }
}

impl Instance for ProcessInstance {
    fn launcher_pid(&self) -> u32 {
        self.launcher_pid
    }

    fn limits(&self) -> Arc<dyn Limits> {
        self.limits.clone()
    }

    fn run(&mut self, activation: Activation) -> BoxFuture<'_, Result<Output, RunError>> {
        self.run_inner(activation).boxed()
    }

    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        async move {
            let ProcessInstance {
                id,
                client,
                mut child,
                dir,
                limits,
                pids,
                ..
            } = *self;
            // Closing the socket tells the proxy to kill the launcher and exit.
            drop(client);
            if tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_err()
            {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            cleanup(&dir, limits.cgroup()).await;
            remove_pids(pids).await;
            tracing::debug!(instance = %id, "instance stopped");
        }
        .boxed()
    }
}

/// The process runtime resizes an instance by writing its cgroup's limit.
#[derive(Debug)]
struct CgroupFile;

impl ApplyLimit for CgroupFile {
    fn apply<'a>(
        &'a self,
        cgroup: Option<&'a Cgroup>,
        bytes: u64,
    ) -> BoxFuture<'a, Result<(), RuntimeError>> {
        // Two small file writes: done inline, no need for a blocking thread.
        // Without cgroups only the control block's limit holds.
        let result = match cgroup {
            Some(cg) => cg.set_limit(bytes).map_err(RuntimeError::from),
            None => Ok(()),
        };
        futures::future::ready(result).boxed()
    }
}
