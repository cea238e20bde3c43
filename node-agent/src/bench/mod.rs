//! Benchmarks of issue 5, callable from the CLI (`ephemera bench sharing`).
//!
//! [`sharing_mix`] reproduces the thesis's mixed trace (§5.4, §5.5;
//! `shared/traces/input_manager_mix_*.txt`): one tenant, a CPU task
//! (`create cpu_task 300 100`: T_lim 300 MiB, U_max 100 MiB; big-integer
//! factorial of 5000) and an I/O task (`create io_task 150 128 5000`: T_lim
//! 150 MiB, U_max 128 MiB, F_max 5000 MiB; a 128 MiB file, 500 000 random
//! 8 KiB `lseek`+`write`, then 500 000 random 8 KiB `lseek`+`read`, as in
//! thesis §5.3.1), each invoked twice, concurrently: the CPU invocation starts
//! first and runs longer than the I/O one, so it is a running harvest-pool
//! instance while the I/O task needs memory.
//!
//! Everything is real: the process runtime (memory cgroups when the host
//! has them), `ephemera-proxy`, the Python launcher and, except in the disk
//! baseline, `libephemera_intercept.so` preloaded; invocations go through the
//! agent's `Run` handler and its tenant actor. Latency is the wall time of
//! `Run` on a warm instance.
//!
//! Scenarios, each on a fresh agent (fresh instances and pool):
//!
//! | name | tier | scope | what it shows |
//! |---|---|---|---|
//! | `disk` | no preload, tmp dir on disk | none | the baseline (thesis: OverlayFS) |
//! | `none` | yes | none | the tier alone |
//! | `function` | yes | function | CPU and I/O are different functions: nothing to share |
//! | `workflow` | yes | workflow | both in one workflow, running concurrently: they share |
//! | `workflow-seq` | yes | workflow | the thesis's Fig. 5.9 workflow: CPU *then* I/O, never concurrent, so no lender is running when the I/O task needs memory |
//! | `tenant` | yes | tenant | any two instances of the tenant share |
//!
//! Plus the CPU task's latency measured interleaved ([`cpu_ab`]: the
//! preload's and lending's cost, each as a median ratio), and the tenant
//! actor's decision time per event ([`pool::decision_time`], pure pool code;
//! meaningful only in a release build).

mod cpu_ab;

pub use cpu_ab::{CpuAbReport, RatioSummary};

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ephemera_proto::v1::agent_server::Agent;
use ephemera_proto::v1::{
    AgentStatusRequest, CodeFile, FunctionSpec, InstanceStatus, Profile, RunReply, RunRequest,
};
use serde::Serialize;

use crate::agent::EPHEMERA_PYTHON;
use crate::config::SharingScope;
use crate::pool;
use crate::runtime::process::{ProcessOptions, ProcessRuntime};
use crate::service::{AgentService, ServiceParts};
use ephemera_sys::Driver;

const MIB: u64 = 1 << 20;

/// The functions, as one Python module run by `ephemera-python`.
pub const WORKLOAD_PY: &str = r#"import os, random, tempfile, time

BLOCK = 8192

def io_task(args):
    """A file of size_mib MiB in the tier directory: written once, then `ops`
    random 8 KiB lseek+write, then `ops` random 8 KiB lseek+read."""
    if "hold" in args:
        # Busy without using CPU or memory until the bench drops the flag.
        flag = os.path.join(tempfile.gettempdir(), args["hold"])
        deadline = time.time() + 3600
        while not os.path.exists(flag) and time.time() < deadline:
            time.sleep(0.005)
        os.unlink(flag)
        return {"held": True}
    size = int(args.get("size_mib", 128)) << 20
    ops = int(args.get("ops", 500000))
    path = os.path.join(tempfile.gettempdir(), "io_task.dat")
    blocks = max(1, size // BLOCK)
    buf = bytes(range(256)) * (BLOCK // 256)
    rnd = random.Random(int(args.get("seed", 1)))
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(blocks):
            os.write(fd, buf)
        t1 = time.perf_counter()
        lseek, write, read, pick = os.lseek, os.write, os.read, rnd.randrange
        for _ in range(ops):
            lseek(fd, pick(blocks) * BLOCK, 0)
            write(fd, buf)
        t2 = time.perf_counter()
        got = 0
        for _ in range(ops):
            lseek(fd, pick(blocks) * BLOCK, 0)
            got += len(read(fd, BLOCK))
        t3 = time.perf_counter()
    finally:
        os.close(fd)
        os.unlink(path)
    return {"ops": ops, "bytes_read": got, "secs": time.perf_counter() - t0,
            "phases": [t1 - t0, t2 - t1, t3 - t2]}

def cpu_task(args):
    """Big-integer factorial of n by repeated multiplication, `rounds` times."""
    n = int(args.get("n", 5000))
    rounds = int(args.get("rounds", 1))
    t0 = time.perf_counter()
    r = 1
    for _ in range(rounds):
        r = 1
        for i in range(2, n + 1):
            r *= i
    return {"n": n, "rounds": rounds, "bits": r.bit_length(), "secs": time.perf_counter() - t0}
"#;

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A file or directory could not be prepared.
    #[error("bench: {what}: {source}")]
    Io {
        /// What, with its path.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An invocation failed.
    #[error("bench: scenario {scenario}: {function} failed: {status}")]
    Invocation {
        /// The scenario.
        scenario: String,
        /// The function.
        function: String,
        /// The agent's answer.
        status: String,
    },
    /// A precondition or a wait failed.
    #[error("bench: {0}")]
    Setup(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// What to run. [`MixOptions::new`] gives the thesis's trace.
#[derive(Debug, Clone, Serialize)]
pub struct MixOptions {
    /// The `ephemera-proxy` executable.
    pub proxy_bin: PathBuf,
    /// `libephemera_intercept.so` (a release build for real figures).
    pub intercept_lib: PathBuf,
    /// Where instance directories go (must be a disk file system: it is the
    /// baseline's tmp dir); `None`: a fresh directory under the system temp
    /// dir, removed afterwards.
    pub work_dir: Option<PathBuf>,
    /// I/O task file size (MiB).
    pub io_file_mib: u64,
    /// I/O task random writes, and as many random reads.
    pub io_ops: u64,
    /// CPU task factorial size.
    pub cpu_n: u64,
    /// Factorials per CPU invocation; `None`: calibrated so that a CPU
    /// invocation lasts 2× an I/O invocation in the tier, measured alone (it
    /// must outlast the I/O task to lend to it throughout).
    pub cpu_rounds: Option<u64>,
    /// Invocations of each task per scenario (the trace has 2).
    pub repetitions: usize,
    /// CPU task T_lim, U_max (MiB).
    pub cpu_limit_mib: u64,
    /// CPU task U_max (MiB).
    pub cpu_u_max_mib: u64,
    /// I/O task T_lim (MiB).
    pub io_limit_mib: u64,
    /// I/O task U_max (MiB).
    pub io_u_max_mib: u64,
    /// I/O task F_max (MiB).
    pub io_f_max_mib: u64,
    /// Rounds of the decision-time measurement (each is 2 events).
    pub decision_rounds: usize,
    /// Also run the thesis's sequential workflow (`workflow-seq`).
    pub sequential_workflow: bool,
    /// Rounds of the interleaved CPU measurement ([`CpuAbReport`]); 0 skips it.
    pub cpu_ab_rounds: usize,
    /// Target length of one CPU invocation in it (ms).
    pub cpu_ab_ms: u64,
}

impl MixOptions {
    /// The thesis's trace with these binaries.
    pub fn new(proxy_bin: impl Into<PathBuf>, intercept_lib: impl Into<PathBuf>) -> MixOptions {
        MixOptions {
            proxy_bin: proxy_bin.into(),
            intercept_lib: intercept_lib.into(),
            work_dir: None,
            io_file_mib: 128,
            io_ops: 500_000,
            cpu_n: 5000,
            cpu_rounds: None,
            repetitions: 2,
            cpu_limit_mib: 300,
            cpu_u_max_mib: 100,
            io_limit_mib: 150,
            io_u_max_mib: 128,
            io_f_max_mib: 5000,
            decision_rounds: 1_000_000,
            sequential_workflow: true,
            cpu_ab_rounds: 40,
            cpu_ab_ms: 300,
        }
    }
}

/// One scenario's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// `disk`, `none`, `function`, `workflow`, `workflow-seq`, `tenant`.
    pub name: String,
    /// The intercept was preloaded.
    pub tier: bool,
    /// The sharing scope.
    pub scope: SharingScope,
    /// I/O task latency per invocation (ms).
    pub io_ms: Vec<f64>,
    /// CPU task latency per invocation (ms).
    pub cpu_ms: Vec<f64>,
    /// Invocations where the CPU task ended before the I/O task (its loans
    /// were then rolled back while the I/O task still ran).
    pub cpu_ended_first: usize,
    /// CPU task latency while the I/O instance is busy but idle (it holds
    /// its loan and uses no CPU): the effect of lending alone (ms).
    pub cpu_idle_partner_ms: Vec<f64>,
    /// Mean of `cpu_idle_partner_ms`, if measured.
    pub cpu_idle_partner_mean_ms: Option<f64>,
    /// The CPU instance's lowest limit then (MiB): below T_lim when it lent.
    pub cpu_limit_idle_partner_mib: f64,
    /// Mean of `io_ms`.
    pub io_mean_ms: f64,
    /// The I/O task's own timing of its phases, mean over its invocations
    /// (ms): sequential write, random writes, random reads.
    pub io_phases_ms: [f64; 3],
    /// Mean of `cpu_ms`.
    pub cpu_mean_ms: f64,
    /// Largest memory limit the I/O instance had at the end of a run (MiB).
    pub io_limit_mib: f64,
    /// Bytes the I/O instance's tier served (cumulative over its runs).
    pub io_tier_bytes: u64,
    /// Tier evictions in the I/O instance (cumulative).
    pub io_evictions: u64,
    /// Files the I/O instance's tier mapped (cumulative).
    pub io_files_mapped: u64,
}

/// Decision time of the tenant actor's pool.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionTime {
    /// Concurrent instances of the tenant.
    pub instances: usize,
    /// Mean time per event (ns).
    pub ns_per_event: f64,
}

/// Everything [`sharing_mix`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct MixReport {
    /// The options used.
    pub options: MixOptions,
    /// 1-minute load average when the bench started (other work on the
    /// machine skews latencies).
    pub load_before: f64,
    /// 1-minute load average when it ended.
    pub load_after: f64,
    /// CPU factorials per invocation (given or calibrated).
    pub cpu_rounds: u64,
    /// Memory cgroups were available (limits enforced by the kernel).
    pub cgroups: bool,
    /// Built without optimisations: decision times are not meaningful.
    pub debug_build: bool,
    /// One row per scenario.
    pub scenarios: Vec<ScenarioReport>,
    /// The interleaved CPU measurement, unless skipped.
    pub cpu_ab: Option<CpuAbReport>,
    /// Decision time at 1 and 10 instances.
    pub decision: Vec<DecisionTime>,
}

impl MixReport {
    /// The scenario called `name`.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioReport> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// `(a / b − 1)·100` of two scenarios' mean I/O latency.
    pub fn io_change_pct(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.scenario(a)?, self.scenario(b)?);
        Some(pct(a.io_mean_ms, b.io_mean_ms))
    }

    /// `(a / b − 1)·100` of two scenarios' CPU latency next to an idle
    /// borrower.
    pub fn cpu_alone_change_pct(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.scenario(a)?, self.scenario(b)?);
        Some(pct(
            a.cpu_idle_partner_mean_ms?,
            b.cpu_idle_partner_mean_ms?,
        ))
    }

    /// `(a / b − 1)·100` of two scenarios' mean CPU latency.
    pub fn cpu_change_pct(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.scenario(a)?, self.scenario(b)?);
        Some(pct(a.cpu_mean_ms, b.cpu_mean_ms))
    }
}

/// The 1-minute load average (0 when unreadable).
fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn pct(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b - 1.0) * 100.0
    } else {
        f64::NAN
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

impl fmt::Display for MixReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "sharing mix: cpu_task {} MiB (U {}), factorial {} x {} rounds; io_task {} MiB (U {}, F {}), {} MiB file, {} random 8 KiB writes + {} reads; {} invocations each{}{}",
            o.cpu_limit_mib,
            o.cpu_u_max_mib,
            o.cpu_n,
            self.cpu_rounds,
            o.io_limit_mib,
            o.io_u_max_mib,
            o.io_f_max_mib,
            o.io_file_mib,
            o.io_ops,
            o.io_ops,
            o.repetitions,
            if self.cgroups { "" } else { "; NO memory cgroups: limits not enforced" },
            if self.debug_build { "; DEBUG build" } else { "" },
        )?;
        writeln!(
            f,
            "{:<13} {:>5} {:>9} {:>10} {:>17} {:>10} {:>11} {:>9} {:>10} {:>14} {:>12}",
            "scenario",
            "tier",
            "scope",
            "io ms",
            "io seq/w/r** ms",
            "cpu ms",
            "io lim MiB",
            "io evict",
            "io mapped",
            "cpu alone* ms",
            "cpu lim MiB"
        )?;
        for s in &self.scenarios {
            writeln!(
                f,
                "{:<13} {:>5} {:>9} {:>10.1} {:>17} {:>10.1} {:>11.0} {:>9} {:>10} {:>14} {:>12}",
                s.name,
                if s.tier { "yes" } else { "no" },
                format!("{:?}", s.scope).to_lowercase(),
                s.io_mean_ms,
                format!(
                    "{:.0}/{:.0}/{:.0}",
                    s.io_phases_ms[0], s.io_phases_ms[1], s.io_phases_ms[2]
                ),
                s.cpu_mean_ms,
                s.io_limit_mib,
                s.io_evictions,
                s.io_files_mapped,
                s.cpu_idle_partner_mean_ms
                    .map_or("-".to_string(), |v| format!("{v:.1}")),
                s.cpu_idle_partner_mean_ms
                    .map_or("-".to_string(), |_| format!(
                        "{:.0}",
                        s.cpu_limit_idle_partner_mib
                    )),
            )?;
        }
        let show = |f: &mut fmt::Formatter<'_>, what: &str, v: Option<f64>| match v {
            Some(v) => writeln!(f, "  {what:<44} {v:+.2}%"),
            None => Ok(()),
        };
        writeln!(
            f,
            "  * cpu alone: the CPU task next to a busy but idle I/O instance (it borrows where the scope allows, uses no CPU)"
        )?;
        writeln!(
            f,
            "  ** the I/O task's own timing: sequential write, random writes, random reads"
        )?;
        writeln!(f, "ratios (this run):")?;
        show(
            f,
            "io: tier, no sharing vs disk",
            self.io_change_pct("none", "disk"),
        )?;
        show(
            f,
            "io: tier, tenant sharing vs disk",
            self.io_change_pct("tenant", "disk"),
        )?;
        show(
            f,
            "io: tier, tenant sharing vs no sharing",
            self.io_change_pct("tenant", "none"),
        )?;
        show(
            f,
            "io: function scope vs no sharing",
            self.io_change_pct("function", "none"),
        )?;
        show(
            f,
            "io: workflow scope vs no sharing",
            self.io_change_pct("workflow", "none"),
        )?;
        show(
            f,
            "io: sequential workflow vs no sharing",
            self.io_change_pct("workflow-seq", "none"),
        )?;
        show(
            f,
            "cpu: tenant sharing vs no sharing",
            self.cpu_change_pct("tenant", "none"),
        )?;
        show(
            f,
            "cpu: tier + tenant sharing vs disk",
            self.cpu_change_pct("tenant", "disk"),
        )?;
        show(
            f,
            "cpu alone*: lending (tenant) vs not (none)",
            self.cpu_alone_change_pct("tenant", "none"),
        )?;
        show(
            f,
            "cpu alone*: Ephemera (none) vs no preload (disk)",
            self.cpu_alone_change_pct("none", "disk"),
        )?;
        for s in self.scenarios.iter().filter(|s| s.cpu_ended_first > 0) {
            writeln!(
                f,
                "  WARNING {}: the CPU task ended before the I/O task in {} run(s): its loans were rolled back early",
                s.name, s.cpu_ended_first
            )?;
        }
        writeln!(
            f,
            "  load average (1 min) before / after:         {:.2} / {:.2}",
            self.load_before, self.load_after
        )?;
        if let Some(ab) = &self.cpu_ab {
            write!(f, "{ab}")?;
        }
        for d in &self.decision {
            writeln!(
                f,
                "  decision time per event, {:>2} instance(s):   {:.0} ns",
                d.instances, d.ns_per_event
            )?;
        }
        Ok(())
    }
}

/// Removes the bench's own work directory when dropped.
struct WorkDir {
    path: PathBuf,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// One scenario's setup.
#[derive(Debug, Clone)]
struct Scenario {
    name: &'static str,
    tier: bool,
    scope: SharingScope,
    workflow: bool,
    sequential: bool,
    /// Also time the CPU task next to an idle borrower.
    cpu_probe: bool,
}

/// A fresh agent (process runtime) for one scenario.
struct Node {
    service: AgentService,
    instances_dir: PathBuf,
    driver: Arc<Driver>,
    code_sent: bool,
}

impl Node {
    fn start(
        o: &MixOptions,
        dir: &Path,
        name: &str,
        tier: bool,
        scope: SharingScope,
    ) -> Result<Node, BenchError> {
        let instances_dir = dir.join("instances");
        let bin_dir = dir.join("bin");
        for d in [&instances_dir, &bin_dir] {
            fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
        }
        let launcher = bin_dir.join("ephemera-python");
        fs::write(&launcher, EPHEMERA_PYTHON)
            .map_err(io_err(format!("writing {}", launcher.display())))?;
        fs::set_permissions(&launcher, fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod {}", launcher.display())))?;
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
        );
        let service = AgentService::new(ServiceParts {
            node_id: format!("bench-{name}"),
            runtime: Arc::new(runtime),
            code_dir: dir.join("code"),
            idle_timeout: Duration::from_secs(3600),
            sharing: scope,
            ledger_dir: None,
        });
        Ok(Node {
            service,
            instances_dir,
            driver,
            code_sent: false,
        })
    }

    async fn stop(self) {
        self.service.shutdown().await;
        self.driver.remove_base();
    }
}

fn spec(o: &MixOptions, name: &str, cpu: bool, workflow: bool, digest: &str) -> FunctionSpec {
    let (limit, u, fmax) = if cpu {
        (o.cpu_limit_mib, o.cpu_u_max_mib, 0)
    } else {
        (o.io_limit_mib, o.io_u_max_mib, o.io_f_max_mib)
    };
    FunctionSpec {
        tenant: "bench".into(),
        name: name.into(),
        cmd: format!("ephemera-python fns.py:{name}"),
        memory_bytes: limit * MIB,
        timeout_ms: 3_600_000,
        code_digest: digest.into(),
        profile: Some(Profile {
            u_max_bytes: u * MIB,
            f_max_bytes: fmax * MIB,
            measured: true,
        }),
        workflow: if workflow {
            "mix".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

/// Runs one invocation; returns the reply and its wall time.
async fn run_one(
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
    let reply = Agent::run(service, tonic::Request::new(req))
        .await
        .map_err(|s| BenchError::Invocation {
            scenario: scenario.into(),
            function: f.name.clone(),
            status: s.to_string(),
        })?
        .into_inner();
    Ok((reply, start.elapsed()))
}

/// Times the CPU task while the I/O instance holds an idle invocation (so it
/// borrows, where the scope allows, but competes for no CPU); returns the
/// CPU latency and the CPU instance's limit while both were busy.
async fn cpu_next_to_idle_io(
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
async fn wait_busy(service: &AgentService, function: &str) -> Result<InstanceStatus, BenchError> {
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

/// The `phases` of an I/O task's result, in ms.
fn phase_ms(result_json: &str) -> Option<[f64; 3]> {
    let v: serde_json::Value = serde_json::from_str(result_json).ok()?;
    let p = v.get("phases")?.as_array()?;
    let at = |i: usize| p.get(i)?.as_f64().map(|s| s * 1e3);
    Some([at(0)?, at(1)?, at(2)?])
}

fn io_input(o: &MixOptions) -> serde_json::Value {
    serde_json::json!({ "size_mib": o.io_file_mib, "ops": o.io_ops })
}

fn cpu_input(o: &MixOptions, rounds: u64) -> serde_json::Value {
    serde_json::json!({ "n": o.cpu_n, "rounds": rounds })
}

/// The functions' code as the agent receives it.
fn workload_code(dir: &Path) -> Result<(Vec<CodeFile>, String), BenchError> {
    let src = dir.join("src");
    fs::create_dir_all(&src).map_err(io_err(format!("creating {}", src.display())))?;
    fs::write(src.join("fns.py"), WORKLOAD_PY).map_err(io_err("writing fns.py"))?;
    let code = ephemera_domain::code::read_dir(&src)
        .map_err(|e| BenchError::Setup(format!("reading the workload code: {e}")))?;
    let digest = ephemera_domain::code::digest(&code);
    Ok((code, digest))
}

/// Picks the CPU rounds: one CPU invocation lasts 2× an I/O invocation in
/// the tier. Runs on its own agent (tier, no sharing).
async fn calibrate(
    o: &MixOptions,
    dir: &Path,
    code: &[CodeFile],
    digest: &str,
) -> Result<u64, BenchError> {
    let node = Node::start(
        o,
        &dir.join("calibrate"),
        "calibrate",
        true,
        SharingScope::None,
    )?;
    let result = async {
        let cpu = spec(o, "cpu_task", true, false, digest);
        let io = spec(o, "io_task", false, false, digest);
        let probe = 20u64;
        run_one(&node.service, "calibrate", &cpu, code, cpu_input(o, 1)).await?;
        let (_, t_cpu) =
            run_one(&node.service, "calibrate", &cpu, &[], cpu_input(o, probe)).await?;
        let (_, t_io) = run_one(&node.service, "calibrate", &io, &[], io_input(o)).await?;
        let per_round = t_cpu.as_secs_f64() / probe as f64;
        let rounds = (2.0 * t_io.as_secs_f64() / per_round.max(1e-9)).ceil() as u64;
        tracing::info!(
            cpu_round_ms = per_round * 1e3,
            io_ms = t_io.as_secs_f64() * 1e3,
            rounds,
            "calibrated the CPU task"
        );
        Ok(rounds.max(1))
    }
    .await;
    node.stop().await;
    result
}

async fn run_scenario(
    o: &MixOptions,
    dir: &Path,
    sc: &Scenario,
    code: &[CodeFile],
    digest: &str,
    cpu_rounds: u64,
) -> Result<(ScenarioReport, bool), BenchError> {
    let mut node = Node::start(o, &dir.join(sc.name), sc.name, sc.tier, sc.scope)?;
    let cgroups = !matches!(*node.driver, Driver::Unavailable { .. });
    let result = async {
        let cpu = spec(o, "cpu_task", true, sc.workflow, digest);
        let io = spec(o, "io_task", false, sc.workflow, digest);
        // `create`: start both instances (warm-up invocations, not measured).
        let first: &[CodeFile] = if node.code_sent { &[] } else { code };
        run_one(&node.service, sc.name, &cpu, first, cpu_input(o, 1)).await?;
        node.code_sent = true;
        let tiny = serde_json::json!({ "size_mib": 1, "ops": 10 });
        run_one(&node.service, sc.name, &io, &[], tiny).await?;
        let (mut io_ms, mut cpu_ms, mut phase_sum) = (Vec::new(), Vec::new(), [0.0; 3]);
        let (mut limit, mut last_io, mut cpu_first) = (0u64, None, 0usize);
        for _ in 0..o.repetitions {
            let (io_reply, io_t, cpu_t) = if sc.sequential {
                let (_, cpu_t) =
                    run_one(&node.service, sc.name, &cpu, &[], cpu_input(o, cpu_rounds)).await?;
                let (r, io_t) = run_one(&node.service, sc.name, &io, &[], io_input(o)).await?;
                (r, io_t, cpu_t)
            } else {
                let svc = node.service.clone();
                let (name, c, input) = (sc.name.to_string(), cpu.clone(), cpu_input(o, cpu_rounds));
                let cpu_run =
                    tokio::spawn(async move { run_one(&svc, &name, &c, &[], input).await });
                wait_busy(&node.service, "cpu_task").await?;
                let io_res = run_one(&node.service, sc.name, &io, &[], io_input(o)).await;
                if cpu_run.is_finished() {
                    cpu_first += 1;
                }
                let cpu_res = cpu_run
                    .await
                    .map_err(|e| BenchError::Setup(format!("cpu task join: {e}")))?;
                let (r, io_t) = io_res?;
                let (_, cpu_t) = cpu_res?;
                (r, io_t, cpu_t)
            };
            io_ms.push(io_t.as_secs_f64() * 1e3);
            let phases = phase_ms(&io_reply.result_json).ok_or_else(|| {
                BenchError::Setup(format!("io_task result: {}", io_reply.result_json))
            })?;
            for (sum, p) in phase_sum.iter_mut().zip(phases) {
                *sum += p / o.repetitions as f64;
            }
            cpu_ms.push(cpu_t.as_secs_f64() * 1e3);
            if let Some(t) = &io_reply.tier {
                limit = limit.max(t.mem_limit_bytes);
            }
            last_io = io_reply.tier;
        }
        let mut alone_ms = Vec::new();
        let mut cpu_limit = o.cpu_limit_mib * MIB;
        if sc.cpu_probe {
            for _ in 0..o.repetitions {
                let (t, lim) =
                    cpu_next_to_idle_io(&node, sc.name, &cpu, &io, cpu_input(o, cpu_rounds))
                        .await?;
                alone_ms.push(t.as_secs_f64() * 1e3);
                cpu_limit = cpu_limit.min(lim);
            }
        }
        let t = last_io.unwrap_or_default();
        Ok(ScenarioReport {
            name: sc.name.to_string(),
            tier: sc.tier,
            scope: sc.scope,
            cpu_ended_first: cpu_first,
            cpu_idle_partner_mean_ms: (!alone_ms.is_empty()).then(|| mean(&alone_ms)),
            cpu_idle_partner_ms: alone_ms,
            cpu_limit_idle_partner_mib: cpu_limit as f64 / MIB as f64,
            io_mean_ms: mean(&io_ms),
            io_phases_ms: phase_sum,
            cpu_mean_ms: mean(&cpu_ms),
            io_ms,
            cpu_ms,
            io_limit_mib: if limit > 0 {
                limit as f64 / MIB as f64
            } else {
                o.io_limit_mib as f64
            },
            io_tier_bytes: t.bytes_read + t.bytes_written,
            io_evictions: t.evictions,
            io_files_mapped: t.files_mapped,
        })
    }
    .await;
    node.stop().await;
    result.map(|r| (r, cgroups))
}

/// Makes the binaries' paths absolute (the launcher runs in the code dir, and
/// `LD_PRELOAD` of a relative path would silently load nothing) and creates
/// the work directory with the workload's code in it.
fn prepare(
    mut opts: MixOptions,
) -> Result<(MixOptions, WorkDir, Vec<CodeFile>, String), BenchError> {
    for (what, p) in [
        ("proxy", &mut opts.proxy_bin),
        ("intercept library", &mut opts.intercept_lib),
    ] {
        *p = fs::canonicalize(&*p)
            .map_err(|e| BenchError::Setup(format!("{what} {}: {e}", p.display())))?;
    }
    let base = match &opts.work_dir {
        Some(d) => d.join(format!("bench-{}", std::process::id())),
        None => std::env::temp_dir().join(format!("ephemera-bench-{}", std::process::id())),
    };
    let work = WorkDir {
        path: std::path::absolute(&base)
            .map_err(io_err(format!("resolving {}", base.display())))?,
    };
    fs::create_dir_all(&work.path).map_err(io_err(format!("creating {}", base.display())))?;
    let (code, digest) = workload_code(&work.path)?;
    Ok((opts, work, code, digest))
}

/// Only the interleaved CPU measurement ([`CpuAbReport`]), with
/// `opts.cpu_ab_rounds` rounds (at least 1).
pub async fn cpu_interleaved(opts: MixOptions) -> Result<CpuAbReport, BenchError> {
    let (mut opts, work, code, digest) = prepare(opts)?;
    opts.cpu_ab_rounds = opts.cpu_ab_rounds.max(1);
    cpu_ab::cpu_ab(&opts, &work.path, &code, &digest).await
}

/// Runs the thesis's mixed trace in every scenario and measures the pool's
/// decision time. Takes minutes with the default (thesis) sizes.
pub async fn sharing_mix(opts: MixOptions) -> Result<MixReport, BenchError> {
    let load_before = loadavg();
    let (opts, work, code, digest) = prepare(opts)?;
    let dir = work.path.clone();
    let cpu_rounds = match opts.cpu_rounds {
        Some(r) => r,
        None => calibrate(&opts, &dir, &code, &digest).await?,
    };
    let mut scenarios = vec![
        Scenario {
            name: "disk",
            tier: false,
            scope: SharingScope::None,
            workflow: false,
            sequential: false,
            cpu_probe: true,
        },
        Scenario {
            name: "none",
            tier: true,
            scope: SharingScope::None,
            workflow: false,
            sequential: false,
            cpu_probe: true,
        },
        Scenario {
            name: "function",
            tier: true,
            scope: SharingScope::Function,
            workflow: false,
            sequential: false,
            cpu_probe: false,
        },
        Scenario {
            name: "workflow",
            tier: true,
            scope: SharingScope::Workflow,
            workflow: true,
            sequential: false,
            cpu_probe: false,
        },
    ];
    if opts.sequential_workflow {
        scenarios.push(Scenario {
            name: "workflow-seq",
            tier: true,
            scope: SharingScope::Workflow,
            workflow: true,
            sequential: true,
            cpu_probe: false,
        });
    }
    scenarios.push(Scenario {
        name: "tenant",
        tier: true,
        scope: SharingScope::Tenant,
        workflow: false,
        sequential: false,
        cpu_probe: true,
    });
    let mut rows = Vec::new();
    let mut cgroups = true;
    for sc in &scenarios {
        let (row, cg) = run_scenario(&opts, &dir, sc, &code, &digest, cpu_rounds).await?;
        tracing::info!(
            scenario = sc.name,
            io_ms = row.io_mean_ms,
            cpu_ms = row.cpu_mean_ms,
            "scenario done"
        );
        cgroups &= cg;
        rows.push(row);
    }
    let cpu_ab = if opts.cpu_ab_rounds > 0 {
        Some(cpu_ab::cpu_ab(&opts, &dir, &code, &digest).await?)
    } else {
        None
    };
    let rounds = opts.decision_rounds.max(1);
    let decision = [1usize, 10]
        .into_iter()
        .map(|n| DecisionTime {
            instances: n,
            ns_per_event: pool::decision_time(n, rounds).as_nanos() as f64,
        })
        .collect();
    Ok(MixReport {
        options: opts,
        load_before,
        load_after: loadavg(),
        cpu_rounds,
        cgroups,
        debug_build: cfg!(debug_assertions),
        scenarios: rows,
        cpu_ab,
        decision,
    })
}
