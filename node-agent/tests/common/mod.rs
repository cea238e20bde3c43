//! Shared helpers: start a real agent (process runtime, real proxy, real
//! Python launcher) on port 0 with a temporary data directory.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ephemera_domain::{code, Reason};
use ephemera_node_agent::AgentConfig;
use ephemera_proto::v1::agent_client::AgentClient;
use ephemera_proto::v1::{CodeFile, FunctionSpec, RunReply, RunRequest};
use tonic::transport::Channel;

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
    pub client: AgentClient<Channel>,
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = AgentConfig::new(
            node_id,
            data.path(),
            4 << 30,
            format!("http://{addr}"),
            vec![],
            env!("CARGO_BIN_EXE_ephemera-proxy"),
        );
        config.intercept_lib = intercept_lib();
        tweak(&mut config);
        let cgroup = config.cgroup_name();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(ephemera_node_agent::run(config, listener, async move {
            let _ = stopped.await;
        }));
        let client = connect(&format!("http://{addr}")).await;
        TestAgent {
            node_id: node_id.to_string(),
            cgroup,
            data,
            client,
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
                    // SAFETY: plain kill(2) of a pid from the test's own cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
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

pub async fn connect(url: &str) -> AgentClient<Channel> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match AgentClient::connect(url.to_string()).await {
            Ok(c) => return c.max_decoding_message_size(96 << 20),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot reach the agent at {url}: {e}"),
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
    // SAFETY: signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
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

/// Polls the agent's `Status` until `cond` holds, for at most `within`;
/// returns the instances that satisfied it.
pub async fn wait_status(
    agent: &mut TestAgent,
    what: &str,
    within: Duration,
    cond: impl Fn(&[ephemera_proto::v1::InstanceStatus]) -> bool,
) -> Vec<ephemera_proto::v1::InstanceStatus> {
    let deadline = Instant::now() + within;
    loop {
        let st = agent
            .client
            .status(ephemera_proto::v1::AgentStatusRequest {})
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
