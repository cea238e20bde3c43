//! Shared helpers: start a real agent (process runtime, real proxy, real
//! Python launcher) on port 0 with a temporary data directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ephemera_domain::{code, Reason};
use ephemera_node_agent::AgentConfig;
use ephemera_proto::v1::agent_client::AgentClient;
use ephemera_proto::v1::{
    AgentStatusRequest, CodeFile, FunctionSpec, InstanceStatus, Profile, RunReply, RunRequest,
};
use ephemera_sys::process;
use ephemera_trust::{ClusterCa, Credentials, Expect, Identity, Security};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const MIB: u64 = 1 << 20;

/// How long a test waits for a state it expects: long, because it only
/// matters when the test fails (a loaded machine is slow, not wrong).
const WAIT: Duration = Duration::from_secs(30);

/// `target/debug` of this build, from the test binary's path (`target/debug/deps/x`).
pub fn target_debug_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/debug/deps")
        .to_path_buf()
}

/// The intercept library, if it was built (`cargo build -p ephemera-intercept`).
pub fn intercept_lib() -> Option<PathBuf> {
    let so = target_debug_dir().join("libephemera_intercept.so");
    if so.exists() {
        Some(so)
    } else {
        eprintln!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! {} is missing: running WITHOUT the memory tier and SKIPPING the\n\
             !!! tier-counter assertions. Run `cargo build -p ephemera-intercept` first.\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n",
            so.display()
        );
        None
    }
}

/// A running agent.
pub struct TestAgent {
    pub node_id: String,
    /// The agent's cgroup subtree name (see `AgentConfig::cgroup_name`).
    pub cgroup: String,
    pub data: tempfile::TempDir,
    /// A controller's client of this agent (mutual TLS).
    pub client: AgentClient<Channel>,
    /// The test cluster's CA and member certificates (controller 1 and
    /// this agent's node), as `ephemera dev` keeps them.
    pub tls: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestAgent {
    pub async fn start(node_id: &str, idle_timeout: Duration) -> TestAgent {
        Self::start_with(node_id, |c| c.idle_timeout = idle_timeout).await
    }

    /// Starts an agent; `tweak` adjusts its configuration first.
    pub async fn start_with(node_id: &str, tweak: impl FnOnce(&mut AgentConfig)) -> TestAgent {
        let data = tempfile::tempdir().expect("tempdir");
        let tls = data.path().join("tls");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = AgentConfig::new(
            node_id,
            data.path(),
            4 << 30,
            format!("https://{addr}"),
            vec![],
            env!("CARGO_BIN_EXE_ephemera-proxy"),
            Security::mutual(member(&tls, Identity::agent(node_id).expect("node id"))),
        );
        config.intercept_lib = intercept_lib();
        tweak(&mut config);
        let cgroup = config.cgroup_name();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ephemera_node_agent::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let client = connect(&tls, &addr.to_string(), node_id).await;
        TestAgent {
            node_id: node_id.to_string(),
            cgroup,
            data,
            client,
            tls,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the agent and checks it left no cgroup behind.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("agent task").expect("agent run");
        }
        let cg = self.cgroup_dir();
        assert!(!cg.exists(), "cgroup {} left behind", cg.display());
    }

    /// The agent's v1 cgroup subtree.
    pub fn cgroup_dir(&self) -> PathBuf {
        Path::new("/sys/fs/cgroup/memory/ephemera").join(&self.cgroup)
    }
}

impl Drop for TestAgent {
    /// A test that panicked never called `stop`: kill what the agent started
    /// and remove its cgroups, so a failing test leaves nothing behind.
    fn drop(&mut self) {
        let Some(stop) = self.stop.take() else { return };
        let _ = stop.send(());
        let base = self.cgroup_dir();
        let Ok(entries) = std::fs::read_dir(&base) else {
            return;
        };
        for e in entries.flatten().filter(|e| e.path().is_dir()) {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let procs =
                    std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = process::kill(pid, libc::SIGKILL);
                }
                if std::fs::remove_dir(e.path()).is_ok() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let _ = std::fs::remove_dir(&base);
        // Containers of a docker-runtime agent.
        let label = format!("label=ephemera.owner={}", self.cgroup);
        if let Ok(out) = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &label])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", id])
                    .output();
            }
        }
    }
}

/// The credentials of `identity` in the test cluster whose CA is in `tls`
/// (made on first use).
pub fn member(tls: &Path, identity: Identity) -> Credentials {
    ClusterCa::init(tls)
        .and_then(|ca| ca.ensure_member(&identity, &[], tls))
        .expect("test credentials")
}

/// Connects to the agent of `node_id` at `addr` as controller 1.
pub async fn connect(tls: &Path, addr: &str, node_id: &str) -> AgentClient<Channel> {
    let creds = member(tls, Identity::controller(1).expect("id"));
    let expect = Expect::Identity(Identity::agent(node_id).expect("node id"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let endpoint = ephemera_trust::member_endpoint(&creds, addr, &expect).expect("endpoint");
        match endpoint.connect().await {
            Ok(ch) => return AgentClient::new(ch).max_decoding_message_size(96 << 20),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot reach the agent at {addr}: {e}"),
        }
    }
}

/// Writes `files` into a fresh directory and reads it back as code.
pub fn code_of(files: &[(&str, &str)]) -> (Vec<CodeFile>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, body) in files {
        std::fs::write(dir.path().join(name), body).expect("write");
    }
    let code = code::read_dir(dir.path()).expect("read code");
    let digest = code::digest(&code);
    (code, digest)
}

pub fn function(tenant: &str, name: &str, cmd: &str, digest: &str, memory: u64) -> FunctionSpec {
    FunctionSpec {
        tenant: tenant.into(),
        name: name.into(),
        cmd: cmd.into(),
        memory_bytes: memory,
        code_digest: digest.into(),
        ..Default::default()
    }
}

/// Runs once; when the agent lacks the code, retries with it, as the
/// controller does.
pub async fn invoke(
    client: &mut AgentClient<Channel>,
    f: &FunctionSpec,
    code: &[CodeFile],
    input: &str,
) -> Result<RunReply, tonic::Status> {
    let mut req = RunRequest {
        invocation_id: uuid::Uuid::new_v4().to_string(),
        function: Some(f.clone()),
        input_json: input.into(),
        code: vec![],
    };
    match client.run(req.clone()).await {
        Err(s) if Reason::of(&s) == Some(Reason::CodeMissing) => {
            req.code = code.to_vec();
            client.run(req).await.map(|r| r.into_inner())
        }
        other => other.map(|r| r.into_inner()),
    }
}

pub fn alive(pid: u32) -> bool {
    i32::try_from(pid).is_ok_and(process::alive)
}

/// Waits until `pid` is gone (or panics after `within`).
pub async fn wait_gone(pid: u32, within: Duration) {
    let deadline = Instant::now() + within;
    while alive(pid) && !is_zombie(pid) {
        assert!(
            Instant::now() < deadline,
            "process {pid} still alive after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Polls the agent's `Status` until `cond` holds (at most [`WAIT`]);
/// returns the instances that satisfied it.
pub async fn wait_status(
    agent: &mut TestAgent,
    what: &str,
    cond: impl Fn(&[InstanceStatus]) -> bool,
) -> Vec<InstanceStatus> {
    let deadline = Instant::now() + WAIT;
    loop {
        let st = agent
            .client
            .status(AgentStatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .instances;
        if cond(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until an instance of `function` is started and busy; returns it.
pub async fn wait_busy(agent: &mut TestAgent, function: &str) -> InstanceStatus {
    let busy =
        |s: &InstanceStatus| s.function == function && s.state == "busy" && s.launcher_pid > 0;
    let st = wait_status(agent, &format!("{function} busy"), |st| st.iter().any(busy)).await;
    st.into_iter().find(busy).expect("the busy instance")
}

/// Invokes `f` with `input` in the background (sending `code` if the agent
/// lacks it).
pub fn spawn_invoke(
    agent: &TestAgent,
    f: &FunctionSpec,
    code: &[CodeFile],
    input: impl Into<String>,
) -> JoinHandle<Result<RunReply, tonic::Status>> {
    let (mut client, f, code, input) =
        (agent.client.clone(), f.clone(), code.to_vec(), input.into());
    tokio::spawn(async move { invoke(&mut client, &f, &code, &input).await })
}

/// The issue-5 pair, profiled: `cpu` (300 MiB, needs 10 MiB: a lender) and
/// `io` (150 MiB, needs 10 + 240 MiB: a borrower), run by `cpu_cmd` and
/// `io_cmd`.
pub fn cpu_and_io(digest: &str, cpu_cmd: &str, io_cmd: &str) -> (FunctionSpec, FunctionSpec) {
    let profiled = |name: &str, cmd: &str, memory: u64, f_max: u64| FunctionSpec {
        profile: Some(Profile {
            u_max_bytes: 10 * MIB,
            f_max_bytes: f_max,
            measured: true,
        }),
        ..function("acme", name, cmd, digest, memory)
    };
    (
        profiled("cpu", cpu_cmd, 300 * MIB, 0),
        profiled("io", io_cmd, 150 * MIB, 240 * MIB),
    )
}

/// What the I/O function of [`cpu_and_io`] holds while it borrows:
/// 1.1 × (10 + 240) MiB, rounded up per term as the pool pads.
pub const IO_NEED: u64 = 11 * MIB + 264 * MIB;
