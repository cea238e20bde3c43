//! The docker-compose cluster (`compose/`) for fault tests: builds the images
//! once per test binary, starts three controllers and two agents under a
//! project name and loopback ports of its own (never a dev's `ephemera`
//! cluster), injects faults with `docker`, and removes every container,
//! network, volume and agent data dir it made when dropped, panics included.
//! Every external command runs with a deadline.
//!
//! - [`require_docker`]: `false` (with a loud message) when
//!   `EPHEMERA_SKIP_COMPOSE=1`; panics when Docker is not reachable.
//! - [`build_images_once`]: `compose/build-images.sh`, once per process
//!   (`EPHEMERA_NO_BUILD=1`: reuse the images).
//! - [`ComposeCluster`]: one running cluster.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ephemera_proto::v1::{DumpReply, DumpRequest, StatusReply, StatusRequest};

/// Prefix of every test project; the rest is `<pid>-<digits>` (see [`reap_stale`]).
pub const PROJECT_PREFIX: &str = "ephemera-t";
/// Controller member ids.
pub const CONTROLLERS: [u64; 3] = [1, 2, 3];
/// Agent node ids, in service order (`agent-1` is `node-1`).
pub const AGENTS: [&str; 2] = ["node-1", "node-2"];

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn compose_dir() -> PathBuf {
    repo_root().join("compose")
}

/// The tag of the images the cluster runs (`EPHEMERA_TAG`, default `dev`).
pub fn image_tag() -> String {
    std::env::var("EPHEMERA_TAG").unwrap_or_else(|_| "dev".into())
}

pub use ephemera_control_plane::client::Client;

/// Connects to the controller at `endpoint` with `token`; `timeout` per request.
pub async fn connect(endpoint: &str, token: &str, timeout: Duration) -> anyhow::Result<Client> {
    Ok(ephemera_control_plane::client::connect(endpoint, Some(token), Some(timeout)).await?)
}

/// Runs `cmd` to completion or kills it after `timeout`; output is captured.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what}: killed after {timeout:?}"));
            }
            Err(e) => return Err(format!("{what}: wait failed: {e}")),
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Runs `cmd` with stdout and stderr merged, copying each line to this
/// process's stderr as it comes (not captured by the test harness: a long
/// build shows progress) with `prefix`; kills it after `timeout`. Returns its
/// status and output.
pub fn run_streaming(
    cmd: &mut Command,
    timeout: Duration,
    prefix: &'static str,
) -> Result<(std::process::ExitStatus, String), String> {
    use std::io::{BufRead, Write};
    use std::os::unix::process::CommandExt;
    let what = format!("{cmd:?}");
    let mut child = cmd
        .process_group(0) // so a timeout stops cargo and docker build too
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let all = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let copy = |pipe: Box<dyn Read + Send>| {
        let all = all.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(std::io::stderr(), "{prefix}{line}");
                let mut all = all.lock().unwrap_or_else(|e| e.into_inner());
                all.push_str(&line);
                all.push('\n');
            }
        })
    };
    let copiers = [
        copy(Box::new(child.stdout.take().expect("piped stdout"))),
        copy(Box::new(child.stderr.take().expect("piped stderr"))),
    ];
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                // SAFETY: kill(2) on the process group our child leads.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                return Err(format!("{what}: killed after {timeout:?}"));
            }
            Err(e) => return Err(format!("{what}: wait failed: {e}")),
        }
    };
    for c in copiers {
        let _ = c.join();
    }
    let all = all.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((status, all))
}

/// Runs `cmd`; its stdout when it exits 0, else an error with its stderr.
pub fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let out = run_with_timeout(cmd, timeout)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn docker(args: &[&str], timeout: Duration) -> Result<String, String> {
    run_ok(Command::new("docker").args(args), timeout)
}

/// Whether the compose tests should run: `false` (and says so loudly) when
/// `EPHEMERA_SKIP_COMPOSE=1`; panics when the Docker engine or
/// docker-compose is unavailable (CI has both).
pub fn require_docker() -> bool {
    if std::env::var("EPHEMERA_SKIP_COMPOSE").as_deref() == Ok("1") {
        eprintln!(
            "\n************************************************************\n\
             SKIPPED: docker compose cluster tests (EPHEMERA_SKIP_COMPOSE=1)\n\
             ************************************************************\n"
        );
        return false;
    }
    if let Err(e) = docker(
        &["info", "--format", "{{.ServerVersion}}"],
        Duration::from_secs(30),
    ) {
        panic!(
            "the docker compose tests need a running Docker engine, and `docker info` failed: {e}\n\
             (set EPHEMERA_SKIP_COMPOSE=1 to skip them)"
        );
    }
    if let Err(e) = run_ok(
        Command::new("docker-compose").arg("version"),
        Duration::from_secs(30),
    ) {
        panic!(
            "the docker compose tests need docker-compose (v1): {e}\n\
             (set EPHEMERA_SKIP_COMPOSE=1 to skip them)"
        );
    }
    true
}

static BUILD: OnceLock<Result<(), String>> = OnceLock::new();

/// Builds the images with `compose/build-images.sh`, once per process; with
/// `EPHEMERA_NO_BUILD=1` only checks that they exist. Panics on failure.
pub fn build_images_once() {
    let result = BUILD.get_or_init(|| {
        if std::env::var("EPHEMERA_NO_BUILD").as_deref() != Ok("1") {
            let t0 = Instant::now();
            eprintln!(
                "compose: building the images (compose/build-images.sh; ~7 min from nothing)"
            );
            let script = compose_dir().join("build-images.sh");
            let (status, log) = run_streaming(
                Command::new(&script)
                    // Cargo's own settings for this test run must not leak
                    // into the script's static build.
                    .env_remove("CARGO_TARGET_DIR")
                    .env_remove("RUSTFLAGS")
                    .env_remove("CARGO_ENCODED_RUSTFLAGS")
                    .env_remove("CARGO_BUILD_TARGET")
                    .env_remove("CARGO_MAKEFLAGS")
                    .env("EPHEMERA_REPO", repo_root()),
                Duration::from_secs(45 * 60),
                "build-images| ",
            )?;
            if !status.success() {
                let tail: Vec<&str> = log.lines().rev().take(60).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(format!(
                    "{} failed ({status}); last lines:\n{}",
                    script.display(),
                    tail.join("\n")
                ));
            }
            eprintln!("compose: images built in {:.0?}", t0.elapsed());
        }
        let tag = image_tag();
        for image in [
            format!("ephemera/ephemera:{tag}"),
            format!("ephemera/python:{tag}"),
        ] {
            docker(&["image", "inspect", &image], Duration::from_secs(30)).map_err(|e| {
                format!("image {image} is missing (run compose/build-images.sh): {e}")
            })?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("building the compose images failed: {e}");
    }
}

/// The `ephemera` CLI: the static one the image build makes, else the
/// workspace's debug build.
pub fn cli_binary() -> PathBuf {
    let root = repo_root();
    let candidates = [
        std::env::var_os("EPHEMERA_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target-static"))
            .join("x86_64-unknown-linux-gnu/release/ephemera"),
        root.join("target/debug/ephemera"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| panic!("no ephemera CLI at {candidates:?}: build the images first"))
}

/// Removes what test projects of dead processes left behind (a test killed
/// with SIGKILL cannot clean up after itself).
pub fn reap_stale() {
    let t = Duration::from_secs(60);
    let Ok(names) = docker(
        &[
            "ps",
            "-a",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}",
        ],
        t,
    ) else {
        return;
    };
    let mut projects: Vec<String> = names
        .lines()
        .chain(
            docker(&["network", "ls", "--format", "{{.Name}}"], t)
                .unwrap_or_default()
                .lines(),
        )
        .filter_map(|n| {
            let rest = n.strip_prefix(PROJECT_PREFIX)?;
            let mut parts = rest.splitn(3, '-');
            let pid: u32 = parts.next()?.parse().ok()?;
            let n = parts.next()?;
            let n: String = n.chars().take_while(|c| c.is_ascii_digit()).collect();
            let project = format!("{PROJECT_PREFIX}{pid}-{n}");
            // Ours (its data dir is in our temp dir: same host, same mount
            // namespace, so the same pid namespace too) and its process gone.
            (!n.is_empty()
                && std::env::temp_dir().join(&project).is_dir()
                && !Path::new(&format!("/proc/{pid}")).exists())
            .then_some(project)
        })
        .collect();
    projects.sort();
    projects.dedup();
    for project in projects {
        eprintln!("compose: removing {project}, left behind by a test process that is gone");
        teardown(&project, &std::env::temp_dir().join(&project));
    }
}

/// Removes project `project`'s containers, networks and volumes and the agent
/// data dirs under `data_root`; returns what could not be removed.
fn teardown(project: &str, data_root: &Path) -> Vec<String> {
    let t = Duration::from_secs(120);
    let label = format!("label=com.docker.compose.project={project}");
    let ids = |args: &[&str]| -> Vec<String> {
        docker(args, t)
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    // Paused containers cannot be stopped; unpause first.
    let paused = ids(&["ps", "-q", "--filter", &label, "--filter", "status=paused"]);
    if !paused.is_empty() {
        let mut args = vec!["unpause"];
        args.extend(paused.iter().map(String::as_str));
        let _ = docker(&args, t);
    }
    let dir = compose_dir();
    let down = run_with_timeout(
        Command::new("docker-compose")
            .current_dir(&dir)
            .env("EPHEMERA_PROJECT", project)
            .env("EPHEMERA_DATA_ROOT", data_root)
            // Required by the file, unused by `down`.
            .env("EPHEMERA_ADMIN_TOKEN", "unused-by-down")
            .args([
                "-p",
                project,
                "-f",
                "docker-compose.yml",
                "-f",
                "docker-compose.otel.yml",
            ])
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "2"]),
        t,
    );
    if let Err(e) = &down {
        eprintln!("compose: docker-compose down for {project}: {e}");
    }
    // Whatever is left, by label and name: containers (including function
    // containers agents started as siblings, labelled ephemera.owner), then
    // networks and volumes.
    let mut containers = ids(&["ps", "-aq", "--filter", &label]);
    for node in AGENTS {
        let data = data_root.join(node);
        let owner = format!("{node}-{}", sha256_prefix(&data.to_string_lossy()));
        containers.extend(ids(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=ephemera.owner={owner}"),
        ]));
    }
    if !containers.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(containers.iter().map(String::as_str));
        let _ = docker(&args, t);
    }
    let networks: Vec<String> = ids(&["network", "ls", "--format", "{{.Name}}"])
        .into_iter()
        .filter(|n| n == project || n.starts_with(&format!("{project}-")))
        .collect();
    for n in &networks {
        let _ = docker(&["network", "rm", n], t);
    }
    let volumes: Vec<String> = ids(&["volume", "ls", "-q"])
        .into_iter()
        .filter(|v| v.starts_with(&format!("{project}_")))
        .collect();
    if !volumes.is_empty() {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(volumes.iter().map(String::as_str));
        let _ = docker(&args, t);
    }
    if data_root.starts_with(std::env::temp_dir())
        && data_root
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(PROJECT_PREFIX))
    {
        let _ = std::fs::remove_dir_all(data_root);
    }
    // What is still there.
    let mut left: Vec<String> = ids(&["ps", "-aq", "--filter", &label])
        .into_iter()
        .map(|c| format!("container {c}"))
        .collect();
    left.extend(
        ids(&["network", "ls", "--format", "{{.Name}}"])
            .into_iter()
            .filter(|n| n == project || n.starts_with(&format!("{project}-")))
            .map(|n| format!("network {n}")),
    );
    left.extend(
        ids(&["volume", "ls", "-q"])
            .into_iter()
            .filter(|v| v.starts_with(&format!("{project}_")))
            .map(|v| format!("volume {v}")),
    );
    if data_root.exists() {
        left.push(format!("directory {}", data_root.display()));
    }
    left
}

/// A hard-to-guess token part from the clock, `seed` and `salt`: the
/// cluster listens on loopback only and lives for one test.
fn uuid_like(seed: &str, salt: u64) -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    (0..4)
        .map(|i| {
            let mut h = RandomState::new().build_hasher();
            h.write(seed.as_bytes());
            h.write_u64(salt.wrapping_add(i));
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// First 8 hex digits of sha256(`text`), as the agent labels its containers.
fn sha256_prefix(text: &str) -> String {
    run_ok(
        Command::new("sh").args(["-c", "printf '%s' \"$1\" | sha256sum", "sh", text]),
        Duration::from_secs(10),
    )
    .map(|s| s.chars().take(8).collect())
    .unwrap_or_default()
}

/// How to start a cluster.
#[derive(Clone, Debug)]
pub struct ComposeOptions {
    /// Controllers' `--node-timeout-secs`.
    pub node_timeout_secs: u64,
    /// Memory each agent offers.
    pub node_memory: String,
    /// How long to wait for a leader and both agents.
    pub ready_timeout: Duration,
}

impl Default for ComposeOptions {
    fn default() -> Self {
        ComposeOptions {
            node_timeout_secs: 10,
            node_memory: "2GiB".into(),
            ready_timeout: Duration::from_secs(180),
        }
    }
}

/// One running compose cluster; dropping it removes everything it made.
pub struct ComposeCluster {
    /// The compose project (`ephemera-t<pid>-<digits>`), also the prefix of
    /// container and network names.
    pub project: String,
    /// Host directory holding the agents' data dirs.
    pub data_root: PathBuf,
    /// Controller id → published loopback port.
    pub controller_ports: BTreeMap<u64, u16>,
    /// Agent node id → published loopback port.
    pub agent_ports: BTreeMap<String, u16>,
    files: Vec<&'static str>,
    env: Vec<(String, String)>,
    /// The `ephemera` CLI used by [`ComposeCluster::cli`].
    pub cli_path: PathBuf,
    /// The admin token of every controller (random per cluster).
    pub token: String,
}

static PROJECTS: AtomicUsize = AtomicUsize::new(0);

impl ComposeCluster {
    /// Starts a fresh cluster (the images must exist, see
    /// [`build_images_once`]) and waits until the controllers agree on a
    /// leader and both agents are up. Panics on failure, after cleaning up.
    pub fn up(opts: &ComposeOptions) -> ComposeCluster {
        reap_stale();
        // pid, then a count and the clock: unique even among processes of
        // other pid namespaces sharing this engine.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() % 1_000_000)
            .unwrap_or(0);
        let project = format!(
            "{PROJECT_PREFIX}{}-{}{nanos:06}",
            std::process::id(),
            PROJECTS.fetch_add(1, Ordering::SeqCst)
        );
        let data_root = std::env::temp_dir().join(&project);
        let mut ports = crate::free_ports(CONTROLLERS.len() + AGENTS.len() + 1).into_iter();
        let controller_ports: BTreeMap<u64, u16> = CONTROLLERS
            .iter()
            .map(|&id| (id, ports.next().expect("port")))
            .collect();
        let agent_ports: BTreeMap<String, u16> = AGENTS
            .iter()
            .map(|&n| (n.to_string(), ports.next().expect("port")))
            .collect();
        let token = format!(
            "eph_test_{}",
            uuid_like(&project, std::process::id() as u64 ^ u64::from(nanos))
        );
        let mut env: Vec<(String, String)> = vec![
            ("EPHEMERA_PROJECT".into(), project.clone()),
            ("EPHEMERA_ADMIN_TOKEN".into(), token.clone()),
            ("EPHEMERA_DATA_ROOT".into(), data_root.display().to_string()),
            (
                "EPHEMERA_NODE_TIMEOUT_SECS".into(),
                opts.node_timeout_secs.to_string(),
            ),
            ("EPHEMERA_NODE_MEMORY".into(), opts.node_memory.clone()),
            (
                "EPHEMERA_PORT_OTEL".into(),
                ports.next().expect("port").to_string(),
            ),
        ];
        for (id, port) in &controller_ports {
            env.push((format!("EPHEMERA_PORT_CONTROLLER_{id}"), port.to_string()));
        }
        for (i, node) in AGENTS.iter().enumerate() {
            env.push((
                format!("EPHEMERA_PORT_AGENT_{}", i + 1),
                agent_ports[*node].to_string(),
            ));
        }
        let mut files = vec!["docker-compose.yml"];
        let collector = format!("ephemera/otel-collector:{}", image_tag());
        if docker(&["image", "inspect", &collector], Duration::from_secs(30)).is_ok() {
            files.push("docker-compose.otel.yml");
        }
        let cluster = ComposeCluster {
            project,
            data_root,
            controller_ports,
            agent_ports,
            files,
            env,
            cli_path: cli_binary(),
            token,
        };
        // From here on, a panic drops `cluster`, which tears it all down.
        for node in AGENTS {
            std::fs::create_dir_all(cluster.data_root.join(node)).expect("agent data dir");
        }
        let t0 = Instant::now();
        eprintln!(
            "compose: starting project {} (controllers on 127.0.0.1:{:?}, agents on {:?})",
            cluster.project,
            cluster.controller_ports.values().collect::<Vec<_>>(),
            cluster.agent_ports.values().collect::<Vec<_>>()
        );
        if let Err(e) = cluster.compose(&["up", "-d"], Duration::from_secs(300)) {
            panic!("docker-compose up failed: {e}\n{}", cluster.logs(40));
        }
        cluster.wait_ready(opts.ready_timeout);
        eprintln!("compose: {} ready in {:.1?}", cluster.project, t0.elapsed());
        cluster
    }

    /// Runs `docker-compose -p <project> -f ... ARGS` in `compose/`.
    pub fn compose(&self, args: &[&str], timeout: Duration) -> Result<String, String> {
        let mut cmd = Command::new("docker-compose");
        cmd.current_dir(compose_dir()).args(["-p", &self.project]);
        for f in &self.files {
            cmd.args(["-f", f]);
        }
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        run_ok(&mut cmd, timeout)
    }

    /// The last `lines` log lines of every service (for failure messages).
    pub fn logs(&self, lines: usize) -> String {
        self.compose(
            &["logs", "--no-color", "--tail", &lines.to_string()],
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| e)
    }

    /// Container name of controller `id`.
    pub fn controller_container(&self, id: u64) -> String {
        format!("{}-controller-{id}", self.project)
    }

    /// Container name of the agent running `node` (`node-1` → `agent-1`).
    pub fn agent_container(&self, node: &str) -> String {
        let n = node.strip_prefix("node-").unwrap_or(node);
        format!("{}-agent-{n}", self.project)
    }

    /// The network controllers talk Raft on and agents reach them by.
    pub fn network(&self) -> &str {
        &self.project
    }

    /// Runs `docker ARGS` (30 s deadline).
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        docker(args, Duration::from_secs(30))
    }

    /// `docker kill -s KILL`.
    pub fn kill(&self, container: &str) {
        self.docker(&["kill", "-s", "KILL", container])
            .unwrap_or_else(|e| panic!("docker kill {container}: {e}"));
    }

    /// `docker start`.
    pub fn start(&self, container: &str) {
        self.docker(&["start", container])
            .unwrap_or_else(|e| panic!("docker start {container}: {e}"));
    }

    /// `docker pause`.
    pub fn pause(&self, container: &str) {
        self.docker(&["pause", container])
            .unwrap_or_else(|e| panic!("docker pause {container}: {e}"));
    }

    /// `docker unpause`.
    pub fn unpause(&self, container: &str) {
        self.docker(&["unpause", container])
            .unwrap_or_else(|e| panic!("docker unpause {container}: {e}"));
    }

    /// Cuts controller `id` off the cluster network (its published port,
    /// on its own access network, still answers).
    pub fn disconnect_controller(&self, id: u64) {
        let c = self.controller_container(id);
        self.docker(&["network", "disconnect", self.network(), &c])
            .unwrap_or_else(|e| panic!("docker network disconnect {c}: {e}"));
    }

    /// Puts controller `id` back on the cluster network under its service name.
    pub fn reconnect_controller(&self, id: u64) {
        let c = self.controller_container(id);
        let alias = format!("controller-{id}");
        self.docker(&["network", "connect", "--alias", &alias, self.network(), &c])
            .unwrap_or_else(|e| panic!("docker network connect {c}: {e}"));
    }

    /// The endpoint URL of controller `id`.
    pub fn endpoint(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.controller_ports[&id])
    }

    /// A client of controller `id` with per-request `timeout`.
    pub async fn client_with_timeout(&self, id: u64, timeout: Duration) -> anyhow::Result<Client> {
        connect(&self.endpoint(id), &self.token, timeout).await
    }

    /// A client of controller `id` (5 s per request).
    pub async fn client(&self, id: u64) -> anyhow::Result<Client> {
        self.client_with_timeout(id, Duration::from_secs(5)).await
    }

    /// Controller `id`'s applied state.
    pub async fn dump(&self, id: u64) -> anyhow::Result<DumpReply> {
        Ok(self
            .client(id)
            .await?
            .dump(DumpRequest {})
            .await?
            .into_inner())
    }

    /// Cluster status as controller `id` reports it.
    pub async fn status(&self, id: u64) -> anyhow::Result<StatusReply> {
        Ok(self
            .client(id)
            .await?
            .status(StatusRequest {
                tenant: String::new(),
            })
            .await?
            .into_inner())
    }

    /// Waits until every controller in `members` names the same leader, one
    /// of `members`; returns it.
    pub async fn agreed_leader(&self, members: &[u64], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for &id in members {
                seen.push(match self.dump(id).await {
                    Ok(d) => Ok((d.leader_id, d.term)),
                    Err(e) => Err(format!("{e:#}")),
                });
            }
            let leaders: Vec<u64> = seen
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|r| r.0)
                .collect();
            if let Some(&first) = leaders.first() {
                if leaders.len() == members.len()
                    && first != 0
                    && members.contains(&first)
                    && leaders.iter().all(|l| *l == first)
                {
                    return first;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for controllers {members:?} agreeing on a \
                 leader; last seen (leader, term) per member: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the OTLP collector runs (docker-compose.otel.yml is in use).
    pub fn has_collector(&self) -> bool {
        self.files.contains(&"docker-compose.otel.yml")
    }

    /// The spans the collector has stored so far (one JSON object each);
    /// `None` without a collector.
    pub fn collector_spans(&self) -> Option<Result<Vec<serde_json::Value>, String>> {
        if !self.has_collector() {
            return None;
        }
        let dest = self.data_root.join("spans.jsonl");
        let src = format!("{}-otel-collector:/data/spans.jsonl", self.project);
        Some(
            docker(
                &["cp", &src, &dest.to_string_lossy()],
                Duration::from_secs(60),
            )
            .and_then(|_| {
                let text = std::fs::read_to_string(&dest)
                    .map_err(|e| format!("{}: {e}", dest.display()))?;
                Ok(text
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect())
            }),
        )
    }

    /// Runs the `ephemera` CLI against controller `via` (60 s deadline).
    pub fn cli(&self, via: u64, args: &[&str]) -> Result<String, String> {
        run_ok(&mut self.cli_command(via, args), Duration::from_secs(60))
    }

    /// The CLI with `args`, talking to controller `via` with the admin token.
    fn cli_command(&self, via: u64, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cli_path);
        cmd.env("EPHEMERA_ENDPOINT", self.endpoint(via))
            .env("EPHEMERA_TOKEN", &self.token)
            .env_remove("EPHEMERA_LOG")
            .args(args);
        cmd
    }

    /// Runs the CLI like [`Self::cli`], exporting its spans to the
    /// cluster's collector (through its published port).
    pub fn cli_traced(&self, via: u64, args: &[&str]) -> Result<String, String> {
        let port = self
            .env
            .iter()
            .find(|(k, _)| k == "EPHEMERA_PORT_OTEL")
            .map(|(_, v)| v.clone())
            .ok_or("no collector port")?;
        run_ok(
            self.cli_command(via, args)
                .env(
                    "OTEL_EXPORTER_OTLP_ENDPOINT",
                    format!("http://127.0.0.1:{port}"),
                )
                .env("OTEL_BSP_SCHEDULE_DELAY", "200"),
            Duration::from_secs(60),
        )
    }

    fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        loop {
            match self.not_ready() {
                None => return,
                Some(why) => {
                    if why != last {
                        eprintln!("compose: waiting: {why}");
                        last = why;
                    }
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "the cluster was not ready within {timeout:?} (last: {last})\n{}",
                    self.logs(40)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Why the cluster is not ready yet (`None`: it is).
    fn not_ready(&self) -> Option<String> {
        let t = Duration::from_secs(30);
        let ids = self.compose(&["ps", "-q"], t).unwrap_or_default();
        for id in ids.split_whitespace() {
            let state = docker(
                &[
                    "inspect",
                    "-f",
                    "{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}healthy{{end}}",
                    id,
                ],
                t,
            )
            .unwrap_or_default();
            let state = state.trim();
            if state.contains(" exited ") || state.contains(" dead ") {
                panic!(
                    "container stopped while starting: {state}\n{}",
                    self.logs(40)
                );
            }
            if !state.ends_with(" healthy") {
                return Some(format!("container {state}"));
            }
        }
        let out = match self.cli(1, &["status", "--json"]) {
            Ok(out) => out,
            Err(e) => return Some(format!("status: {}", e.lines().last().unwrap_or(""))),
        };
        let s: serde_json::Value = match serde_json::from_str(&out) {
            Ok(s) => s,
            Err(_) => return Some(format!("unexpected status output: {out}")),
        };
        if s["leader_id"].as_u64().unwrap_or(0) == 0 {
            return Some("no leader yet".into());
        }
        let up: Vec<&str> = s["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter(|n| n["up"].as_bool() == Some(true))
                    .filter_map(|n| n["node_id"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        let missing: Vec<&str> = AGENTS.iter().copied().filter(|n| !up.contains(n)).collect();
        (!missing.is_empty()).then(|| format!("agents not up yet: {missing:?}"))
    }
}

impl Drop for ComposeCluster {
    fn drop(&mut self) {
        let t0 = Instant::now();
        if std::thread::panicking() || std::env::var_os("EPHEMERA_COMPOSE_LOGS").is_some() {
            // Every line to a file under target/ (the failure message keeps a tail).
            let all = self.logs(100_000);
            let file = repo_root()
                .join("target")
                .join(format!("compose-logs-{}.txt", self.project));
            match std::fs::write(&file, &all) {
                Ok(()) => eprintln!("compose: all logs in {}", file.display()),
                Err(e) => eprintln!("compose: cannot write {}: {e}", file.display()),
            }
            eprintln!("compose: logs of {}:\n{}", self.project, self.logs(60));
            let ps = self.docker(&[
                "ps",
                "-a",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--format",
                "{{.Names}} {{.Status}} {{.Networks}}",
            ]);
            let net = self.docker(&[
                "network",
                "inspect",
                self.network(),
                "--format",
                "{{range .Containers}}{{.Name}}={{.IPv4Address}} {{end}}",
            ]);
            eprintln!(
                "compose: containers: {ps:?}\ncompose: network {}: {net:?}",
                self.network()
            );
        }
        let left = teardown(&self.project, &self.data_root);
        if left.is_empty() {
            eprintln!(
                "compose: {} removed (containers, networks, volumes, data) in {:.1?}",
                self.project,
                t0.elapsed()
            );
        } else {
            eprintln!(
                "compose: WARNING: could not remove everything of {}: {left:?}",
                self.project
            );
        }
    }
}
