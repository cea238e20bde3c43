//! A fresh in-process agent for each scenario (the real `Run` handler,
//! tenant actor, process runtime, proxy and launcher; no network), and the
//! invocations the benches make of it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ephemera_node_agent::agent::install_launcher;
use ephemera_node_agent::runtime::process::{ProcessOptions, ProcessRuntime};
use ephemera_node_agent::service::{AgentService, ServiceParts};
use ephemera_node_agent::SharingScope;
use ephemera_proto::v1::agent_server::Agent;
use ephemera_proto::v1::{
    AgentStatusRequest, CodeFile, FunctionSpec, InstanceStatus, RunReply, RunRequest,
};
use ephemera_sys::Driver;

use crate::error::{io_err, BenchError};
use crate::options::MixOptions;

/// A fresh agent (process runtime) for one scenario.
pub(crate) struct Node {
    /// The agent's `Agent` service, called directly.
    pub(crate) service: AgentService,
    /// Its instances' directories (each with the tier directory `tmp/`).
    instances_dir: PathBuf,
    /// Its cgroup subtree, removed when it stops.
    pub(crate) driver: Arc<Driver>,
    /// The workload's code was sent to it already.
    pub(crate) code_sent: bool,
}

impl Node {
    /// An agent named `bench-<name>` in `<work>/<name>`: with the intercept
    /// preloaded when `tier`, sharing within `scope`.
    pub(crate) fn start(
        o: &MixOptions,
        work: &Path,
        name: &str,
        tier: bool,
        scope: SharingScope,
    ) -> Result<Node, BenchError> {
        let dir = work.join(name);
        let instances_dir = dir.join("instances");
        let bin_dir = dir.join("bin");
        fs::create_dir_all(&instances_dir)
            .map_err(io_err(format!("creating {}", instances_dir.display())))?;
        install_launcher(&bin_dir).map_err(io_err(format!(
            "installing the Python launcher in {}",
            bin_dir.display()
        )))?;
        let driver = Arc::new(Driver::detect(&format!(
            "bench-{}-{name}",
            std::process::id()
        )));
        let runtime = ProcessRuntime::new(
            ProcessOptions {
                instances_dir: instances_dir.clone(),
                proxy_bin: o.proxy_bin.clone(),
                intercept_lib: tier.then(|| o.intercept_lib.clone()),
                bin_dir: Some(bin_dir),
            },
            driver.clone(),
            // Unconfined: the benches measure the tier and the pool, and run
            // the build's own proxy and intercept wherever they are.
            None,
        );
        let service = AgentService::new(ServiceParts {
            node_id: format!("bench-{name}"),
            runtime: Arc::new(runtime),
            code_dir: dir.join("code"),
            idle_timeout: Duration::from_secs(3600),
            sharing: scope,
            ledger_dir: None,
            running: Default::default(),
        });
        Ok(Node {
            service,
            instances_dir,
            driver,
            code_sent: false,
        })
    }

    /// Stops its instances and removes its cgroups.
    pub(crate) async fn stop(self) {
        self.service.shutdown().await;
        self.driver.remove_base();
    }
}

/// Runs one invocation; returns the reply and its wall time.
pub(crate) async fn run_one(
    service: &AgentService,
    scenario: &str,
    f: &FunctionSpec,
    code: &[CodeFile],
    input: serde_json::Value,
) -> Result<(RunReply, Duration), BenchError> {
    let req = RunRequest {
        invocation_id: uuid::Uuid::new_v4().to_string(),
        function: Some(f.clone()),
        input_json: input.to_string(),
        code: code.to_vec(),
    };
    let start = Instant::now();
    let reply = service
        .run_in_process(req)
        .await
        .map_err(|s| BenchError::Invocation {
            scenario: scenario.into(),
            function: f.name.clone(),
            status: s.to_string(),
        })?;
    Ok((reply, start.elapsed()))
}

/// Times the CPU task while the I/O instance holds an idle invocation (so it
/// borrows, where the scope allows, but competes for no CPU); returns the
/// CPU latency and the CPU instance's limit while both were busy.
pub(crate) async fn cpu_next_to_idle_io(
    node: &Node,
    scenario: &str,
    cpu: &FunctionSpec,
    io: &FunctionSpec,
    input: serde_json::Value,
) -> Result<(Duration, u64), BenchError> {
    let svc = node.service.clone();
    let (name, c) = (scenario.to_string(), cpu.clone());
    let cpu_run = tokio::spawn(async move { run_one(&svc, &name, &c, &[], input).await });
    wait_busy(&node.service, "cpu_task").await?;
    let svc = node.service.clone();
    let (name, i) = (scenario.to_string(), io.clone());
    let hold = serde_json::json!({ "hold": "release" });
    let io_run = tokio::spawn(async move { run_one(&svc, &name, &i, &[], hold).await });
    let io_inst = wait_busy(&node.service, "io_task").await?;
    let cpu_limit = Agent::status(&node.service, tonic::Request::new(AgentStatusRequest {}))
        .await
        .map_err(|s| BenchError::Setup(format!("status: {s}")))?
        .into_inner()
        .instances
        .iter()
        .find(|i| i.function == "cpu_task")
        .map_or(u64::MAX, |i| i.limit_bytes);
    let cpu_res = cpu_run
        .await
        .map_err(|e| BenchError::Setup(format!("cpu task join: {e}")));
    // Release the idle invocation whatever happened to the CPU one.
    let flag = node
        .instances_dir
        .join(&io_inst.instance_id)
        .join("tmp")
        .join("release");
    fs::write(&flag, b"").map_err(io_err(format!("writing {}", flag.display())))?;
    io_run
        .await
        .map_err(|e| BenchError::Setup(format!("io task join: {e}")))??;
    let (_, t) = cpu_res??;
    Ok((t, cpu_limit))
}

/// Waits until an instance of `function` is busy.
pub(crate) async fn wait_busy(
    service: &AgentService,
    function: &str,
) -> Result<InstanceStatus, BenchError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = Agent::status(service, tonic::Request::new(AgentStatusRequest {}))
            .await
            .map_err(|s| BenchError::Setup(format!("status: {s}")))?
            .into_inner();
        if let Some(i) = st
            .instances
            .into_iter()
            .find(|i| i.function == function && i.state == "busy")
        {
            return Ok(i);
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "{function} did not become busy within 60 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
