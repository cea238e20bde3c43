//! The docker-compose cluster (`compose/`) under faults, end to end: three
//! controllers and two agents in containers, started from nothing under a
//! project and ports of their own, removed afterwards (panics included).
//!
//! One test function, in sections, sharing one cluster (the scenarios kill
//! and pause its members, so they must not run in parallel):
//!
//! a. up from nothing: deploy the examples, invoke until both agents served;
//!    every instance is a container whose memory limit is the instance's;
//! e. no-op invocation latency through the cluster (gRPC from this process);
//! b. SIGKILL the leader under a stream of invocations, 20 times: fail-over
//!    time (kill → the first invocation through a survivor that succeeds;
//!    kill → survivors agree on a leader), every acknowledged invocation
//!    correct and recorded as completed, no placement left behind, the
//!    restarted member catches up;
//! c. `docker pause` the leader, then cut it off with `docker network
//!    disconnect`: the majority goes on, the isolated one commits nothing,
//!    both catch up afterwards;
//! d. SIGKILL an agent mid-invocation: a clear error naming the node, the
//!    agent marked down and its tasks released, new invocations on the other;
//! f. (after a) an invocation through the CLI is one trace in the collector,
//!    CLI → controller → Raft schedule → agent → tenant actor → instance;
//! g. (after f) an attacker's function: runs as a tenant uid with no token in
//!    its environment, cannot write the root filesystem, is stopped by the
//!    pids limit, damages its own control block without hurting its agent; its
//!    container is non-root, `cap_drop: ALL`, `no-new-privileges`,
//!    read-only, with its own pid namespace and no network.
//!
//! `EPHEMERA_SKIP_COMPOSE=1` skips (loudly); `EPHEMERA_NO_BUILD=1` reuses the
//! images. Run with `--nocapture` to see the measurements.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ephemera_cluster_tests::compose::{
    self, Client, ComposeCluster, ComposeOptions, AGENTS, CONTROLLERS,
};
use ephemera_cluster_tests::{wait_for, wait_until};
use ephemera_proto::v1::{InvokeReply, InvokeRequest, PlaceRequest, ReleaseRequest};
use ephemera_telemetry::INVOCATION_SPANS;
use serde_json::{json, Value};

#[path = "compose/confined.rs"]
mod confined;

const TENANT: &str = "ct";
/// Leader kills in section b (enough for a p95 to mean something).
const KILLS: usize = 20;
/// Concurrent clients of the invocation stream.
const CLIENTS: usize = 4;
/// Most invocations one client makes in one round.
const MAX_PER_CLIENT: usize = 150;
/// Measured no-op invocations in section e.
const LATENCY_SAMPLES: usize = 300;
/// How long one invocation may keep being retried.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// Overall bound of the scenarios.
const SCENARIOS_TIMEOUT: Duration = Duration::from_secs(20 * 60);

#[test]
fn compose_cluster_under_faults() {
    if !compose::require_docker() {
        return;
    }
    let t0 = Instant::now();
    compose::build_images_once();
    let t_build = t0.elapsed();
    let cluster = ComposeCluster::up(&ComposeOptions::default());
    let t_up = t0.elapsed() - t_build;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = rt.block_on(async {
        tokio::time::timeout(SCENARIOS_TIMEOUT, scenarios(&cluster))
            .await
            .unwrap_or_else(|_| panic!("the scenarios took more than {SCENARIOS_TIMEOUT:?}"))
    });
    drop(rt);
    drop(cluster);
    eprintln!(
        "\n==== compose cluster report ====\n\
         image build {:.1?}, cluster up {:.1?}, scenarios {:.1?}, total {:.1?}\n{report}",
        t_build,
        t_up,
        t0.elapsed() - t_build - t_up,
        t0.elapsed()
    );
}

async fn scenarios(c: &ComposeCluster) -> String {
    let mut report = String::new();
    report += &timed("a", up_from_nothing(c)).await;
    report += &timed("f", traces(c)).await;
    report += &timed(
        "g",
        confined::instances_are_confined(c, |name| deploy(c, name, &fixture(name), "64MiB", 30)),
    )
    .await;
    report += &timed("e", noop_latency(c)).await;
    report += &timed("b", leader_kills(c)).await;
    report += &timed("c", pause_and_partition(c)).await;
    report += &timed("d", agent_kill(c)).await;
    report += &agents_marked_down(c);
    report
}

/// Section `name`'s report, followed by how long it took.
async fn timed(name: &str, section: impl std::future::Future<Output = String>) -> String {
    let t = Instant::now();
    let report = section.await;
    format!("{report}  ({name} took {:.1?})\n", t.elapsed())
}

/// How often the controllers marked an agent down (once is expected, in d;
/// more means an agent missed heartbeats during controller faults).
fn agents_marked_down(c: &ComposeCluster) -> String {
    let logs = c
        .compose(
            &[
                "logs",
                "--no-color",
                "controller-1",
                "controller-2",
                "controller-3",
            ],
            Duration::from_secs(60),
        )
        .unwrap_or_default();
    let downs: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("marking it down"))
        .collect();
    format!(
        "controllers marked an agent down {} time(s) (1 expected, in d){}\n",
        downs.len(),
        if downs.len() > 1 {
            format!(":\n    {}", downs.join("\n    "))
        } else {
            String::new()
        }
    )
}

/// f. One invocation through the CLI is one trace in the compose
/// collector: CLI → controller `invoke` → Raft `schedule`, and `agent_run`
/// on the agent → tenant actor `reallocate` and `instance_run`, linked
/// parent to child across three processes.
async fn traces(c: &ComposeCluster) -> String {
    assert!(
        c.has_collector(),
        "the cluster has no OTLP collector (image ephemera/otel-collector missing)"
    );
    let leader = c.agreed_leader(&CONTROLLERS, Duration::from_secs(30)).await;
    let reply = cli_invoke_details(c, leader, "cpu", r#"{"n": 400}"#, true);
    check_cpu(&reply["result"], 400);
    let invocation = reply["invocation_id"]
        .as_str()
        .expect("invocation id")
        .to_string();
    let node = reply["node_id"].as_str().expect("node id").to_string();
    let trace: Vec<Value> = wait_until(
        "the invocation's complete trace in the collector",
        Duration::from_secs(60),
        || async {
            let spans = c.collector_spans().ok_or("no collector")??;
            let trace_id = spans
                .iter()
                .find(|s| {
                    s["name"] == "invoke" && s["attributes"]["invocation_id"] == invocation.as_str()
                })
                .and_then(|s| s["trace_id"].as_str())
                .map(String::from)
                .ok_or_else(|| {
                    format!(
                        "no `invoke` span of {invocation} among {} spans",
                        spans.len()
                    )
                })?;
            let trace: Vec<Value> = spans
                .into_iter()
                .filter(|s| s["trace_id"] == trace_id.as_str())
                .collect();
            let missing: Vec<&str> = INVOCATION_SPANS
                .iter()
                .copied()
                .filter(|n| !trace.iter().any(|s| s["name"] == *n))
                .collect();
            if missing.is_empty() {
                Ok(trace)
            } else {
                Err(format!(
                    "trace {trace_id} lacks {missing:?} so far: {trace:#?}"
                ))
            }
        },
    )
    .await;
    let one = |name: &str| -> &Value {
        let found: Vec<&Value> = trace.iter().filter(|s| s["name"] == name).collect();
        assert_eq!(found.len(), 1, "one {name} span in {trace:#?}");
        found[0]
    };
    let (cli, invoke, schedule) = (one("cli_invoke"), one("invoke"), one("schedule"));
    let (agent, reallocate, run) = (one("agent_run"), one("reallocate"), one("instance_run"));
    let parent = |child: &Value, parent: &Value| {
        assert_eq!(
            child["parent_span_id"], parent["span_id"],
            "{} must be a child of {}: {trace:#?}",
            child["name"], parent["name"]
        );
    };
    assert_eq!(cli["parent_span_id"], "", "the CLI span is the root: {cli}");
    parent(invoke, cli);
    parent(schedule, invoke);
    parent(agent, invoke);
    parent(reallocate, agent);
    parent(run, agent);
    assert_eq!(cli["service_name"], "ephemera-cli", "{cli}");
    for s in [invoke, schedule] {
        assert_eq!(s["service_name"], "ephemera-controller", "{s}");
    }
    for s in [agent, reallocate, run] {
        assert_eq!(s["service_name"], "ephemera-agent", "{s}");
    }
    assert_eq!(invoke["attributes"]["node"], node.as_str(), "{invoke}");
    assert_eq!(schedule["attributes"]["node"], node.as_str(), "{schedule}");
    assert_eq!(agent["attributes"]["node"], node.as_str(), "{agent}");
    assert!(schedule["attributes"]["policy"].is_string(), "{schedule}");
    // The collector keeps OTLP's 64-bit integers as decimal strings.
    let attr_u64 = |span: &Value, k: &str| -> Option<u64> {
        let v = &span["attributes"][k];
        v.as_u64().or_else(|| v.as_str()?.parse().ok())
    };
    for k in ["lent", "borrowed", "limit"] {
        assert!(attr_u64(reallocate, k).is_some(), "{k} in {reallocate}");
    }
    for k in [
        "tier_reads",
        "tier_writes",
        "tier_bytes_read",
        "tier_bytes_written",
    ] {
        assert!(attr_u64(run, k).is_some(), "{k} in {run}");
    }
    let services: BTreeSet<&str> = trace
        .iter()
        .filter_map(|s| s["service_name"].as_str())
        .collect();
    format!(
        "f. traces: invocation {invocation} (on {node}) is one trace of {} spans from {services:?}: \
         cli_invoke → invoke → schedule; invoke → agent_run → reallocate, instance_run\n",
        trace.len()
    )
}

// ------------------------------------------------------------------ helpers

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn example(name: &str) -> String {
    compose::repo_root()
        .join("examples/functions")
        .join(name)
        .display()
        .to_string()
}

fn deploy(c: &ComposeCluster, name: &str, dir: &str, memory: &str, timeout_secs: u64) {
    c.cli(
        1,
        &[
            "fn",
            "deploy",
            "--tenant",
            TENANT,
            "--name",
            name,
            "--dir",
            dir,
            "--cmd",
            "ephemera-python handler.py",
            "--memory",
            memory,
            "--timeout",
            &timeout_secs.to_string(),
        ],
    )
    .unwrap_or_else(|e| panic!("deploying {name}: {e}"));
}

/// `ephemera invoke ct/NAME --input INPUT --details` through controller
/// `via` (exporting its spans to the collector when `traced`); the reply it
/// prints.
fn cli_invoke_details(
    c: &ComposeCluster,
    via: u64,
    name: &str,
    input: &str,
    traced: bool,
) -> Value {
    let function = format!("{TENANT}/{name}");
    let args = ["invoke", &function, "--input", input, "--details"];
    let out = if traced {
        c.cli_traced(via, &args)
    } else {
        c.cli(via, &args)
    };
    let out = out.unwrap_or_else(|e| panic!("ephemera invoke {function}: {e}"));
    serde_json::from_str(&out).expect("--details prints JSON")
}

fn request(name: &str, id: &str, input: Value) -> InvokeRequest {
    InvokeRequest {
        tenant: TENANT.into(),
        name: name.into(),
        input_json: input.to_string(),
        invocation_id: id.into(),
    }
}

/// p-quantile (0 < q <= 1) of sorted `v`.
fn quantile(v: &[Duration], q: f64) -> Duration {
    assert!(!v.is_empty());
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// How an invocation ended.
#[derive(Debug)]
enum Outcome {
    /// Acknowledged with this reply.
    Acked(InvokeReply),
    /// A retry found it already completed: it ran, the first reply was lost.
    AlreadyCompleted,
    /// Still failing when its retries ran out.
    Failed(String),
}

/// Controller clients, connected on demand and dropped on error.
struct Clients {
    endpoints: BTreeMap<u64, String>,
    ca: String,
    token: String,
    conns: BTreeMap<u64, Client>,
}

impl Clients {
    fn new(c: &ComposeCluster) -> Clients {
        Clients {
            endpoints: CONTROLLERS.iter().map(|&id| (id, c.endpoint(id))).collect(),
            ca: c.ca_pem(),
            token: c.token.clone(),
            conns: BTreeMap::new(),
        }
    }

    async fn connect(&self, id: u64) -> anyhow::Result<Client> {
        compose::connect(
            &self.endpoints[&id],
            &self.ca,
            &self.token,
            Duration::from_secs(30),
        )
        .await
    }

    /// Invokes `req`, trying the controllers in turn from `turn`, reusing the
    /// invocation id (a placement is applied once per id) until it is
    /// acknowledged, found already completed, or `RETRY_FOR` has passed.
    async fn invoke(&mut self, mut turn: usize, req: &InvokeRequest) -> (Outcome, usize) {
        let deadline = Instant::now() + RETRY_FOR;
        let mut attempts = 0;
        let mut last = String::new();
        while Instant::now() < deadline {
            let id = CONTROLLERS[turn % CONTROLLERS.len()];
            attempts += 1;
            if !self.conns.contains_key(&id) {
                match self.connect(id).await {
                    Ok(client) => {
                        self.conns.insert(id, client);
                    }
                    Err(e) => {
                        last = format!("controller {id}: {e}");
                        turn += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                }
            }
            let client = self.conns.get_mut(&id).expect("connected");
            match client.invoke(req.clone()).await {
                Ok(reply) => return (Outcome::Acked(reply.into_inner()), attempts),
                Err(s) if s.message().contains("already completed") => {
                    return (Outcome::AlreadyCompleted, attempts)
                }
                Err(s) => {
                    last = format!("controller {id}: {:?}: {}", s.code(), s.message());
                    self.conns.remove(&id);
                    turn += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        (Outcome::Failed(last), attempts)
    }
}

/// Checks an echo reply for invocation `id` with input `x`.
fn check_echo(reply: &InvokeReply, id: &str, x: u64) {
    let v: Value = serde_json::from_str(&reply.result_json)
        .unwrap_or_else(|e| panic!("{id}: result {:?} is not JSON: {e}", reply.result_json));
    assert_eq!(
        v,
        json!({"id": id, "x2": 2 * x}),
        "{id}: wrong result from node {}",
        reply.node_id
    );
    assert_eq!(reply.invocation_id, id, "reply for another invocation");
}

/// Waits until every node that is up reports no active task; returns the
/// status nodes as `(node_id, up)`.
async fn wait_no_active_tasks(c: &ComposeCluster, via: u64, timeout: Duration) {
    wait_for("no active task on any node", timeout, || async {
        let s = c.status(via).await.ok()?;
        s.nodes
            .iter()
            .all(|n| n.active_tasks == 0 && n.n_alloc == 0)
            .then_some(())
    })
    .await;
}

/// Waits until both agents are up (after controller faults an agent may
/// have been marked down and be registering again); returns how long it took.
async fn wait_agents_up(c: &ComposeCluster, timeout: Duration) -> Duration {
    let t = Instant::now();
    wait_for("both agents up", timeout, || async {
        let leader = c.agreed_leader(&CONTROLLERS, Duration::from_secs(30)).await;
        let s = c.status(leader).await.ok()?;
        AGENTS
            .iter()
            .all(|a| s.nodes.iter().any(|n| n.node_id == *a && n.up))
            .then_some(())
    })
    .await;
    t.elapsed()
}

/// Waits until every member in `members` has the same applied index and
/// state as `leader` (and they agree on it as leader).
async fn wait_caught_up(c: &ComposeCluster, members: &[u64], timeout: Duration) -> u64 {
    let leader = c.agreed_leader(members, timeout).await;
    wait_for(
        "every member caught up with the leader",
        timeout,
        || async {
            let want = c.dump(leader).await.ok()?;
            for &id in members {
                let d = c.dump(id).await.ok()?;
                if d.last_applied_index != want.last_applied_index
                    || d.state_json != want.state_json
                    || d.leader_id != leader
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    leader
}

fn state_of(json: &str) -> Value {
    serde_json::from_str(json).expect("Dump state is JSON")
}

/// Invokes the echo function once through `members`, retrying; returns when
/// it succeeded.
async fn probe(c: &ComposeCluster, members: &[u64], id: &str) -> InvokeReply {
    let mut clients = Clients::new(c);
    let deadline = Instant::now() + RETRY_FOR;
    let mut turn = 0;
    loop {
        let via = members[turn % members.len()];
        let req = request("echo", id, json!({"id": id, "x": 7}));
        match clients
            .invoke(
                CONTROLLERS.iter().position(|m| *m == via).unwrap_or(0),
                &req,
            )
            .await
        {
            (Outcome::Acked(r), _) => {
                check_echo(&r, id, 7);
                return r;
            }
            (other, _) => assert!(
                Instant::now() < deadline,
                "probe {id} through {members:?} kept failing: {other:?}"
            ),
        }
        turn += 1;
    }
}

// ------------------------------------------------------------------ a

async fn up_from_nothing(c: &ComposeCluster) -> String {
    deploy(c, "io", &example("io_heavy"), "128MiB", 60);
    deploy(c, "cpu", &example("cpu_heavy"), "128MiB", 60);
    deploy(c, "echo", &fixture("echo"), "64MiB", 30);
    deploy(c, "noop", &fixture("noop"), "64MiB", 30);
    deploy(c, "slow", &fixture("slow"), "64MiB", 10);

    // Through the CLI, once each.
    let v = cli_invoke_details(c, 2, "cpu", r#"{"n": 1000}"#, false);
    check_cpu(&v["result"], 1000);
    let cli_node = v["node_id"].as_str().unwrap_or_default().to_string();
    assert!(
        AGENTS.contains(&cli_node.as_str()),
        "node_id {cli_node:?} in {v}"
    );
    let out = c
        .cli(
            3,
            &[
                "invoke",
                &format!("{TENANT}/io"),
                "--input",
                r#"{"files": 2, "size_kib": 256, "reads": 16}"#,
            ],
        )
        .unwrap_or_else(|e| panic!("ephemera invoke io: {e}"));
    check_io(&serde_json::from_str(&out).expect("invoke prints JSON"));

    // Concurrent rounds of both until both agents have served.
    let leader = c.agreed_leader(&CONTROLLERS, Duration::from_secs(30)).await;
    let mut served: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let busy_seen = Arc::new(std::sync::Mutex::new(BTreeSet::<String>::new()));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (busy_seen, sampling) = (busy_seen.clone(), sampling.clone());
        let endpoint_client = c.client(leader).await.expect("client");
        tokio::spawn(async move {
            let mut client = endpoint_client;
            while sampling.load(Ordering::SeqCst) {
                if let Ok(s) = client
                    .status(ephemera_proto::v1::StatusRequest {
                        tenant: String::new(),
                    })
                    .await
                {
                    let mut seen = busy_seen.lock().unwrap();
                    for n in s.into_inner().nodes.iter().filter(|n| n.active_tasks > 0) {
                        seen.insert(n.node_id.clone());
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let mut rounds = 0;
    while served.len() < AGENTS.len() {
        rounds += 1;
        assert!(
            rounds <= 10,
            "after 10 rounds only {served:?} served invocations"
        );
        let mut tasks = Vec::new();
        for i in 0..6u64 {
            let mut client = c
                .client_with_timeout(leader, Duration::from_secs(60))
                .await
                .unwrap();
            tasks.push(tokio::spawn(async move {
                let (name, input) = if i % 2 == 0 {
                    (
                        "io",
                        json!({"files": 2, "size_kib": 256, "reads": 16, "seed": i + 1}),
                    )
                } else {
                    ("cpu", json!({"n": 300 + 100 * i}))
                };
                let r = client
                    .invoke(request(name, &format!("a{rounds}-{i}"), input.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("invoking {name}: {e}"))
                    .into_inner();
                (name, input, r)
            }));
        }
        for t in tasks {
            let (name, input, r) = t.await.expect("invocation task");
            let v: Value = serde_json::from_str(&r.result_json).expect("result JSON");
            if name == "io" {
                check_io(&v);
            } else {
                check_cpu(&v, input["n"].as_u64().unwrap());
            }
            served
                .entry(r.node_id)
                .or_default()
                .insert(name.to_string());
        }
    }
    sampling.store(false, Ordering::SeqCst);
    sampler.await.expect("sampler");
    // Placements visible in `ephemera status`: warm instances on both nodes.
    let out = c
        .cli(1, &["status", "--json"])
        .expect("ephemera status --json");
    let s: Value = serde_json::from_str(&out).expect("status JSON");
    let instance_nodes: BTreeSet<&str> = s["instances"]
        .as_array()
        .map(|a| a.iter().filter_map(|i| i["node_id"].as_str()).collect())
        .unwrap_or_default();
    for node in AGENTS {
        assert!(
            instance_nodes.contains(node),
            "`ephemera status` shows no instance on {node}: {out}"
        );
    }
    // Every instance is a Docker container of its own (a sibling of the
    // agents on the host engine) whose memory limit is the instance's.
    let mut containers = 0;
    for i in s["instances"].as_array().into_iter().flatten() {
        let id = i["instance_id"].as_str().expect("instance id");
        let name = format!("ephemera-{id}");
        let inspect = c
            .docker(&[
                "inspect",
                "--format",
                "{{.State.Running}} {{.HostConfig.Memory}} {{.HostConfig.MemorySwap}} {{.Config.Image}}",
                &name,
            ])
            .unwrap_or_else(|e| panic!("instance {id} has no container {name}: {e}"));
        let limit = i["limit_bytes"].as_u64().expect("limit");
        assert_eq!(
            inspect.trim(),
            format!(
                "true {limit} {limit} ephemera/python:{}",
                compose::image_tag()
            ),
            "container {name} of instance {i}"
        );
        containers += 1;
    }
    wait_no_active_tasks(c, leader, Duration::from_secs(30)).await;
    let busy = busy_seen.lock().unwrap().clone();
    format!(
        "a. up from nothing: deployed io, cpu (+ echo, noop, slow fixtures); CLI invoke → {cli_node}; \
         {rounds} concurrent round(s): served by {served:?}; nodes seen with active tasks in status: {busy:?}; \
         instances in `ephemera status` on {instance_nodes:?}, each a running container with \
         memory == memory_swap == its limit ({containers} checked with docker inspect)\n"
    )
}

/// Checks cpu_heavy's result for `n`: digits and trailing zeros of n!.
fn check_cpu(v: &Value, n: u64) {
    let digits = (2..=n).map(|k| (k as f64).log10()).sum::<f64>().floor() as u64 + 1;
    let mut zeros = 0;
    let mut p = 5;
    while p <= n {
        zeros += n / p;
        p *= 5;
    }
    assert_eq!(v["n"], json!(n), "cpu result {v}");
    assert_eq!(v["digits"], json!(digits), "cpu result {v}");
    assert_eq!(v["trailing_zeros"], json!(zeros), "cpu result {v}");
}

/// Checks io_heavy's result for files=2, size_kib=256, reads=16, block 8 KiB.
fn check_io(v: &Value) {
    assert!(v.get("error").is_none(), "io result {v}");
    assert_eq!(v["files"], json!(2), "io result {v}");
    assert_eq!(v["bytes_written"], json!(2 * 256 * 1024), "io result {v}");
    assert_eq!(
        v["bytes_read"],
        json!(2 * (256 * 1024 + 16 * 8192)),
        "io result {v}"
    );
    assert_eq!(
        v["sha256"].as_str().map(str::len),
        Some(64),
        "io result {v}"
    );
}

// ------------------------------------------------------------------ e

async fn noop_latency(c: &ComposeCluster) -> String {
    let leader = c.agreed_leader(&CONTROLLERS, Duration::from_secs(30)).await;
    let follower = *CONTROLLERS.iter().find(|id| **id != leader).unwrap();
    let mut out = String::new();
    for (label, via) in [("leader", leader), ("follower", follower)] {
        let mut client = c
            .client_with_timeout(via, Duration::from_secs(30))
            .await
            .unwrap();
        let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
        for i in 0..(20 + LATENCY_SAMPLES) {
            let id = format!("e-{label}-{i}");
            let t = Instant::now();
            let r = client
                .invoke(request("noop", &id, json!({})))
                .await
                .unwrap_or_else(|e| panic!("no-op invocation {id}: {e}"))
                .into_inner();
            let d = t.elapsed();
            assert_eq!(r.result_json.trim(), "{}", "{id}");
            if i >= 20 {
                samples.push(d);
            }
        }
        samples.sort();
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        let line = format!(
            "e. no-op invocation latency via the {label} (controller {via}), {} sequential gRPC invocations: \
             p50 {}, p99 {}, mean {}, max {}\n",
            samples.len(),
            ms(quantile(&samples, 0.5)),
            ms(quantile(&samples, 0.99)),
            ms(mean),
            ms(*samples.last().unwrap())
        );
        eprint!("{line}");
        out += &line;
    }
    out
}

// ------------------------------------------------------------------ b

struct Record {
    id: String,
    x: u64,
    outcome: Outcome,
}

async fn leader_kills(c: &ComposeCluster) -> String {
    let mut failovers = Vec::new();
    // From `docker kill` returning (the process is dead by then) instead.
    let mut failovers_after_docker = Vec::new();
    let mut elections = Vec::new();
    let mut totals = (0usize, 0usize, 0usize, 0usize); // invocations, acked, already completed, retried
    for round in 0..KILLS {
        wait_agents_up(c, Duration::from_secs(60)).await;
        let leader = wait_caught_up(c, &CONTROLLERS, Duration::from_secs(60)).await;
        let survivors: Vec<u64> = CONTROLLERS
            .iter()
            .copied()
            .filter(|i| *i != leader)
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for w in 0..CLIENTS {
            let (stop, acks) = (stop.clone(), acks.clone());
            let mut clients = Clients::new(c);
            workers.push(tokio::spawn(async move {
                let mut records = Vec::new();
                let mut retried = 0;
                for i in 0..MAX_PER_CLIENT {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let id = format!("b{round}-w{w}-{i}");
                    let x = (round * 1_000_000 + w * 10_000 + i) as u64;
                    let req = request("echo", &id, json!({"id": id, "x": x}));
                    let (outcome, attempts) = clients.invoke(w + i, &req).await;
                    if attempts > 1 {
                        retried += 1;
                    }
                    if matches!(outcome, Outcome::Acked(_)) {
                        acks.fetch_add(1, Ordering::SeqCst);
                    }
                    records.push(Record { id, x, outcome });
                }
                (records, retried)
            }));
        }
        let stream_ok = |n: usize| {
            let acks = acks.clone();
            async move {
                wait_for(
                    "acknowledged invocations",
                    Duration::from_secs(60),
                    || async { (acks.load(Ordering::SeqCst) >= n).then_some(()) },
                )
                .await
            }
        };
        stream_ok(10).await;
        let mut prober = Prober::connect(c, &survivors).await;
        let victim = c.controller_container(leader);
        let t_kill = Instant::now();
        c.kill(&victim);
        let t_docker = t_kill.elapsed();
        let t_killed = Instant::now();
        let t_failover = prober
            .first_success(&format!("b{round}-first"), t_kill)
            .await;
        failovers_after_docker.push(t_killed.elapsed());
        let new_leader = c.agreed_leader(&survivors, Duration::from_secs(30)).await;
        let t_elected = t_kill.elapsed();
        probe(c, &[new_leader], &format!("b{round}-probe")).await;
        let acks_then = acks.load(Ordering::SeqCst);
        stream_ok(acks_then + 10).await;
        stop.store(true, Ordering::SeqCst);
        let mut records = Vec::new();
        for w in workers {
            let (r, retried) = w.await.expect("stream client");
            records.extend(r);
            totals.3 += retried;
        }
        // Every invocation is accounted for.
        let mut acked = BTreeSet::new();
        let mut already = BTreeSet::new();
        let mut failed = Vec::new();
        for r in &records {
            match &r.outcome {
                Outcome::Acked(reply) => {
                    check_echo(reply, &r.id, r.x);
                    acked.insert(r.id.clone());
                }
                Outcome::AlreadyCompleted => {
                    already.insert(r.id.clone());
                }
                Outcome::Failed(e) => failed.push(format!("{}: {e}", r.id)),
            }
        }
        assert!(
            failed.is_empty(),
            "round {round}: {} invocation(s) never succeeded: {failed:?}",
            failed.len()
        );
        // No placement left active; every acknowledged id is recorded as completed.
        wait_no_active_tasks(c, new_leader, Duration::from_secs(30)).await;
        let state = state_of(&c.dump(new_leader).await.expect("dump").state_json);
        let completed: BTreeSet<&str> = state["completed"]
            .as_array()
            .expect("completed ids in the state")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for id in acked.iter().chain(already.iter()) {
            assert!(
                completed.contains(id.as_str()),
                "round {round}: {id} acknowledged but not completed"
            );
        }
        assert_eq!(
            state["tasks"],
            json!({}),
            "round {round}: tasks left: {}",
            state["tasks"]
        );
        // The killed member comes back and catches up.
        let t_restart = Instant::now();
        c.start(&victim);
        wait_caught_up(c, &CONTROLLERS, Duration::from_secs(60)).await;
        let t_catch_up = t_restart.elapsed();
        eprintln!(
            "b. kill {}/{KILLS}: leader {leader} killed (docker kill took {}); first invocation \
             through a survivor succeeded after {}; new leader {new_leader} agreed (polled) after {}; \
             {} invocations ({} acked, {} found already completed); \
             restarted member caught up in {:.1?}",
            round + 1,
            ms(t_docker),
            ms(t_failover),
            ms(t_elected),
            records.len(),
            acked.len(),
            already.len(),
            t_catch_up
        );
        totals.0 += records.len();
        totals.1 += acked.len();
        totals.2 += already.len();
        failovers.push(t_failover);
        elections.push(t_elected);
    }
    failovers.sort();
    failovers_after_docker.sort();
    elections.sort();
    format!(
        "b. leader SIGKILL x{KILLS} under {CLIENTS} clients: fail-over (SIGKILL sent → first invocation \
         through a survivor succeeded) p50 {}, p95 {}, p99 {} (min {}, max {}); from `docker kill` \
         returning: p50 {}, p95 {}, p99 {}; survivors agreeing on \
         a leader (polled by Dump) p50 {}, p99 {}; \
         {} invocations, {} acked with correct results, {} found already completed on retry, \
         {} needed retries, 0 failed, no placement left, restarted member caught up every time\n",
        ms(quantile(&failovers, 0.5)),
        ms(quantile(&failovers, 0.95)),
        ms(quantile(&failovers, 0.99)),
        ms(failovers[0]),
        ms(*failovers.last().expect("kills")),
        ms(quantile(&failovers_after_docker, 0.5)),
        ms(quantile(&failovers_after_docker, 0.95)),
        ms(quantile(&failovers_after_docker, 0.99)),
        ms(quantile(&elections, 0.5)),
        ms(quantile(&elections, 0.99)),
        totals.0,
        totals.1,
        totals.2,
        totals.3
    )
}

/// Invokes the echo function through the survivors of a kill, on
/// connections made before it, until one invocation succeeds.
struct Prober {
    clients: Vec<(u64, Client)>,
}

impl Prober {
    /// How long one attempt may take before the next survivor is tried.
    const ATTEMPT: Duration = Duration::from_millis(500);

    async fn connect(c: &ComposeCluster, survivors: &[u64]) -> Prober {
        let mut clients = Vec::new();
        for &id in survivors {
            let client = c
                .client_with_timeout(id, Self::ATTEMPT)
                .await
                .unwrap_or_else(|e| panic!("connecting to survivor {id}: {e}"));
            clients.push((id, client));
        }
        Prober { clients }
    }

    /// Time from `since` until an invocation `id` (one id for every
    /// attempt, so at most one placement) succeeded through a survivor.
    async fn first_success(&mut self, id: &str, since: Instant) -> Duration {
        let deadline = Instant::now() + RETRY_FOR;
        let mut last = String::new();
        for turn in 0.. {
            assert!(
                Instant::now() < deadline,
                "{id}: no invocation succeeded through a survivor after the kill; last: {last}"
            );
            let n = self.clients.len();
            let (via, client) = &mut self.clients[turn % n];
            let req = request("echo", id, json!({"id": id, "x": 1}));
            match client.invoke(req).await {
                Ok(reply) => {
                    check_echo(&reply.into_inner(), id, 1);
                    return since.elapsed();
                }
                Err(s) if s.message().contains("already completed") => return since.elapsed(),
                Err(s) => {
                    last = format!("controller {via}: {:?}: {}", s.code(), s.message());
                    // Refused at once (no leader yet): a short pause, not a spin.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        unreachable!("the loop returns or panics")
    }
}

// ------------------------------------------------------------------ c

async fn pause_and_partition(c: &ComposeCluster) -> String {
    // Pause.
    wait_agents_up(c, Duration::from_secs(60)).await;
    let leader = wait_caught_up(c, &CONTROLLERS, Duration::from_secs(60)).await;
    let survivors: Vec<u64> = CONTROLLERS
        .iter()
        .copied()
        .filter(|i| *i != leader)
        .collect();
    let victim = c.controller_container(leader);
    let t0 = Instant::now();
    c.pause(&victim);
    let new_leader = c.agreed_leader(&survivors, Duration::from_secs(30)).await;
    let t_elected = t0.elapsed();
    for i in 0..10 {
        probe(c, &survivors, &format!("c-pause-{i}")).await;
    }
    let t_ten = t0.elapsed();
    c.unpause(&victim);
    let t1 = Instant::now();
    let after = wait_caught_up(c, &CONTROLLERS, Duration::from_secs(60)).await;
    let t_rejoin = t1.elapsed();
    let mut report = format!(
        "c. pause leader {leader}: leader {new_leader} agreed by the others after {}, 10 invocations done after {}; \
         unpaused, it rejoined (leader {after}, identical state) in {:.1?}\n",
        ms(t_elected),
        ms(t_ten),
        t_rejoin
    );

    // Partition: the leader off the cluster network; its own port still answers.
    wait_agents_up(c, Duration::from_secs(60)).await;
    let leader = wait_caught_up(c, &CONTROLLERS, Duration::from_secs(60)).await;
    let survivors: Vec<u64> = CONTROLLERS
        .iter()
        .copied()
        .filter(|i| *i != leader)
        .collect();
    let before = c.dump(leader).await.expect("dump").last_applied_index;
    let t0 = Instant::now();
    c.disconnect_controller(leader);
    let new_leader = c.agreed_leader(&survivors, Duration::from_secs(30)).await;
    let t_elected = t0.elapsed();
    // A write sent to the isolated one is not committed.
    let isolated_id = "c-isolated-place";
    let mut client = c
        .client_with_timeout(leader, Duration::from_secs(8))
        .await
        .expect("the isolated controller's published port answers");
    let t_write = Instant::now();
    let write = client
        .place(PlaceRequest {
            tenant: TENANT.into(),
            name: "echo".into(),
            invocation_id: isolated_id.into(),
        })
        .await;
    let write = match write {
        Ok(r) => panic!(
            "the isolated controller {leader} acknowledged a placement: {:?}",
            r.into_inner()
        ),
        Err(s) => format!(
            "{:?} after {}: {}",
            s.code(),
            ms(t_write.elapsed()),
            s.message()
        ),
    };
    // The majority goes on.
    for i in 0..10 {
        probe(c, &survivors, &format!("c-part-{i}")).await;
    }
    let majority = c.dump(new_leader).await.expect("dump").last_applied_index;
    let isolated = c
        .dump(leader)
        .await
        .expect("the isolated controller's Dump");
    assert_eq!(
        isolated.last_applied_index, before,
        "the isolated controller applied entries ({} → {})",
        before, isolated.last_applied_index
    );
    assert!(
        majority > before,
        "the majority committed nothing ({before} → {majority})"
    );
    let s = state_of(&isolated.state_json);
    assert!(
        s["tasks"].get(isolated_id).is_none(),
        "the isolated placement was applied"
    );
    let s = state_of(&c.dump(new_leader).await.expect("dump").state_json);
    assert!(
        s["tasks"].get(isolated_id).is_none(),
        "the majority applied the placement sent to the isolated controller"
    );
    c.reconnect_controller(leader);
    let t1 = Instant::now();
    let after = wait_caught_up(c, &CONTROLLERS, Duration::from_secs(60)).await;
    let t_rejoin = t1.elapsed();
    // The Place timed out at the client: its outcome is unknown, and the
    // controller may still forward it once the partition heals. Releasing it
    // (idempotent, and remembered) settles it either way.
    let s = state_of(&c.dump(after).await.expect("dump").state_json);
    let late = if s["tasks"].get(isolated_id).is_some() {
        "was committed after the partition healed (the controller kept retrying the timed-out write and forwarded it)"
    } else {
        "was never committed"
    };
    c.client(after)
        .await
        .expect("client")
        .release(ReleaseRequest {
            invocation_id: isolated_id.into(),
        })
        .await
        .expect("release the isolated placement");
    wait_no_active_tasks(c, after, Duration::from_secs(30)).await;
    report += &format!(
        "c. disconnect leader {leader} from the network: leader {new_leader} agreed by the majority after {}; \
         a Place sent to the isolated one failed ({write}); its applied index stayed {before} while the \
         majority reached {majority}; reconnected, it caught up (leader {after}) in {:.1?}; the timed-out Place {late}\n",
        ms(t_elected),
        t_rejoin
    );
    report
}

// ------------------------------------------------------------------ d

async fn agent_kill(c: &ComposeCluster) -> String {
    let settle = wait_agents_up(c, Duration::from_secs(60)).await;
    let leader = wait_caught_up(c, &CONTROLLERS, Duration::from_secs(60)).await;
    let mut client = c
        .client_with_timeout(leader, Duration::from_secs(90))
        .await
        .unwrap();
    let mut slow = tokio::spawn(async move {
        let t = Instant::now();
        let r = client
            .invoke(request("slow", "d-slow", json!({"secs": 5})))
            .await;
        (r, t.elapsed())
    });
    // Mid-invocation: the agent reports the instance busy.
    let deadline = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        if slow.is_finished() {
            let (r, d) = (&mut slow).await.expect("slow invocation task");
            panic!("the slow invocation ended after {d:?}, before its agent was killed: {r:?}");
        }
        if let Ok(s) = c.status(leader).await {
            if let Some(i) = s
                .instances
                .iter()
                .find(|i| i.function == "slow" && i.state == "busy")
            {
                break i.node_id.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the slow instance busy on an agent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let other = AGENTS.iter().find(|n| **n != victim).unwrap().to_string();
    let t_kill = Instant::now();
    c.kill(&c.agent_container(&victim));
    let (result, _) = slow.await.expect("slow invocation task");
    let t_error = t_kill.elapsed();
    let error = match result {
        Ok(r) => panic!(
            "the invocation on the killed agent {victim} succeeded: {:?}",
            r.into_inner()
        ),
        Err(s) => format!("{:?}: {}", s.code(), s.message()),
    };
    assert!(
        error.contains(&victim) && error.contains("d-slow"),
        "the error does not name the node and the invocation: {error}"
    );
    // Marked down after the node timeout; its tasks released.
    let node_timeout = Duration::from_secs(ComposeOptions::default().node_timeout_secs);
    wait_for(
        "the killed agent marked down",
        node_timeout + Duration::from_secs(20),
        || async {
            let s = c.status(leader).await.ok()?;
            let n = s.nodes.iter().find(|n| n.node_id == victim)?;
            (!n.up && n.active_tasks == 0 && n.n_alloc == 0).then_some(())
        },
    )
    .await;
    let t_down = t_kill.elapsed();
    // New invocations go to the other agent.
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let mut client = c
            .client_with_timeout(leader, Duration::from_secs(60))
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let id = format!("d-after-{i}");
            let r = client
                .invoke(request("echo", &id, json!({"id": id, "x": i})))
                .await
                .unwrap_or_else(|e| panic!("{id} after the agent died: {e}"))
                .into_inner();
            (id, i, r)
        }));
    }
    let mut nodes = BTreeSet::new();
    for t in tasks {
        let (id, x, r) = t.await.expect("invocation");
        check_echo(&r, &id, x);
        nodes.insert(r.node_id);
    }
    assert_eq!(
        nodes,
        BTreeSet::from([other.clone()]),
        "invocations after the kill"
    );
    wait_no_active_tasks(c, leader, Duration::from_secs(30)).await;
    // The agent comes back (not part of the acceptance: reported only).
    c.start(&c.agent_container(&victim));
    let t0 = Instant::now();
    let mut rejoined = None;
    while t0.elapsed() < Duration::from_secs(60) {
        if let Ok(s) = c.status(leader).await {
            if s.nodes.iter().any(|n| n.node_id == victim && n.up) {
                rejoined = Some(t0.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rejoined = match rejoined {
        Some(d) => format!("restarted, it registered again in {d:.1?}"),
        None => {
            eprintln!("WARNING: the restarted agent {victim} did not register again within 60 s");
            "WARNING: restarted, it did not register again within 60 s".into()
        }
    };
    format!(
        "d. SIGKILL agent {victim} mid-invocation: the invocation failed after {} with \"{error}\"; \
         marked down (tasks released) {:.1?} after the kill (node timeout {node_timeout:?}); \
         8 new invocations all on {other}; {rejoined} (both agents were up {settle:.1?} after section c)\n",
        ms(t_error),
        t_down
    )
}
