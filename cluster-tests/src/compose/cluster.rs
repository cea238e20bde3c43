//! One running cluster: bringing it up under a project and ports of its
//! own, waiting until it is ready, its names, ports, compose files and logs.
//! Dropping it tears it down ([`super::teardown`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ephemera_domain::image;
use ephemera_trust::{ClusterCa, Identity};

use super::cli::cli_binary;
use super::docker::{docker, run_ok};
use super::teardown::reap_stale;
use super::{compose_dir, image_tag, AGENTS, CONTROLLERS, PROJECT_PREFIX};

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
    /// The compose files in use (`-f`), in `compose/`.
    pub(super) files: Vec<&'static str>,
    /// The variables the compose files read (project, ports, token, ...).
    pub(super) env: Vec<(String, String)>,
    /// The `ephemera` CLI used by [`ComposeCluster::cli`].
    pub cli_path: PathBuf,
    /// The admin token of every controller (random per cluster).
    pub token: String,
}

static PROJECTS: AtomicUsize = AtomicUsize::new(0);

impl ComposeCluster {
    /// Starts a fresh cluster (the images must exist, see
    /// [`super::build_images_once`]) and waits until the controllers agree on a
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
        let collector = format!("{}:{}", image::COLLECTOR_IMAGE_REPO, image_tag());
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
        cluster.issue_credentials();
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

    /// The endpoint URL of controller `id`.
    pub fn endpoint(&self, id: u64) -> String {
        format!("https://127.0.0.1:{}", self.controller_ports[&id])
    }

    /// The cluster CA's certificate file (clients' `--ca`).
    pub fn ca_file(&self) -> PathBuf {
        self.data_root
            .join("tls/ca")
            .join(ephemera_trust::CA_CERT_FILE)
    }

    /// The cluster CA's certificate.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_file()).expect("the cluster CA certificate")
    }

    /// Makes the cluster CA and every member's certificate, where the
    /// compose file mounts them (as `compose/up.sh` does).
    fn issue_credentials(&self) {
        let tls = self.data_root.join("tls");
        let ca = ClusterCa::init(&tls.join("ca")).expect("the cluster CA");
        for id in CONTROLLERS {
            let identity = Identity::controller(id).expect("id");
            let sans = [format!("controller-{id}")];
            ca.ensure_member(&identity, &sans, &tls.join(format!("controller-{id}")))
                .expect("a controller certificate");
        }
        for (i, node) in AGENTS.iter().enumerate() {
            let identity = Identity::agent(node).expect("node id");
            let sans = [format!("agent-{}", i + 1)];
            ca.ensure_member(&identity, &sans, &tls.join(format!("agent-{node}")))
                .expect("an agent certificate");
        }
    }

    /// Waits until [`Self::not_ready`] says nothing; panics (with the
    /// services' logs) after `timeout`.
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
