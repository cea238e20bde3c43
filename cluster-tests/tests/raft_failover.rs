//! Three controller processes on loopback: concurrent clients place and
//! release thousands of invocations while the leader is SIGKILLed; nothing
//! acknowledged is lost, nothing is counted twice, every replica agrees, and
//! restarts (including after snapshot + purge) give back identical state.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ephemera_cluster_tests::controllers::api_channel;
use ephemera_cluster_tests::{authed, wait_for, Controllers};
use ephemera_proto::v1::{
    CodeFile, DeployRequest, FunctionSpec, PlaceRequest, RegisterNodeRequest, ReleaseRequest,
    SetQuotaRequest,
};
use serde_json::Value;

const TENANT: &str = "acme";
const FUNCTION: &str = "f";
const NODES: usize = 4;

/// Registers fake nodes and deploys one function, through member `via`.
async fn setup(cluster: &Controllers, via: u64) {
    for i in 1..=NODES {
        // Each node speaks with its own certificate.
        let mut registry = cluster
            .registry_as(via, &format!("node-{i}"))
            .await
            .expect("a registry client");
        registry
            .register_node(RegisterNodeRequest {
                node_id: format!("node-{i}"),
                addr: format!("sim://node-{i}"),
                memory_bytes: 1 << 40,
                resumed: false,
            })
            .await
            .expect("register a node through a follower");
    }
    let spec = FunctionSpec {
        tenant: TENANT.into(),
        name: FUNCTION.into(),
        cmd: "true".into(),
        memory_bytes: 256 << 20,
        ..Default::default()
    };
    // These tests hold thousands of placements: room for all of them.
    cluster
        .client(via)
        .await
        .unwrap()
        .set_quota(authed(SetQuotaRequest {
            tenant: TENANT.into(),
            memory_bytes: 1 << 50,
            invocations: 1_000_000,
        }))
        .await
        .expect("the admin raises the tenant's quota");
    let code = vec![CodeFile {
        path: "main.sh".into(),
        mode: 0o755,
        data: b"true\n".to_vec(),
    }];
    cluster
        .client(via)
        .await
        .unwrap()
        .deploy_function(authed(DeployRequest {
            spec: Some(spec),
            code,
        }))
        .await
        .unwrap();
}

/// What the churning clients were acknowledged, shared between them.
#[derive(Clone, Default)]
struct Acked {
    /// Invocation id → the node it was placed on.
    placed: Arc<Mutex<BTreeMap<String, String>>>,
    /// Invocation ids whose release was acknowledged.
    released: Arc<Mutex<BTreeSet<String>>>,
    /// Acknowledged commands (placements and releases).
    acks: Arc<AtomicUsize>,
}

impl Acked {
    /// Starts `clients` concurrent [`churn`]s of `each` ids through `endpoints`.
    fn churn(
        &self,
        ca_pem: &str,
        endpoints: &Arc<Mutex<Vec<String>>>,
        clients: usize,
        each: usize,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..clients)
            .map(|w| {
                let ca = ca_pem.to_string();
                tokio::spawn(churn(ca, endpoints.clone(), w, each, self.clone()))
            })
            .collect()
    }

    /// The placements and releases acknowledged so far.
    fn snapshot(&self) -> (BTreeMap<String, String>, BTreeSet<String>) {
        (
            self.placed.lock().unwrap().clone(),
            self.released.lock().unwrap().clone(),
        )
    }
}

/// Places (and, for two ids in three, releases) until acknowledged, trying
/// the members in turn; retries reuse the id, which Raft applies once.
async fn churn(
    ca_pem: String,
    cluster: Arc<Mutex<Vec<String>>>,
    worker: usize,
    count: usize,
    acked: Acked,
) {
    let mut turn = worker;
    let mut clients: BTreeMap<
        String,
        ephemera_proto::v1::controller_client::ControllerClient<tonic::transport::Channel>,
    > = BTreeMap::new();
    for i in 0..count {
        let id = format!("w{worker}-{i}");
        let release = i % 3 != 0;
        for step in 0..2 {
            if step == 1 && !release {
                break;
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "{id}: no controller acknowledged step {step} within 60 s"
                );
                let endpoints = cluster.lock().unwrap().clone();
                let endpoint = endpoints[turn % endpoints.len()].clone();
                let client = match clients.get(&endpoint) {
                    Some(c) => c.clone(),
                    None => match api_channel(&ca_pem, &endpoint, Duration::from_secs(5)).await {
                        Ok(ch) => {
                            let c =
                                ephemera_proto::v1::controller_client::ControllerClient::new(ch);
                            clients.insert(endpoint.clone(), c.clone());
                            c
                        }
                        Err(_) => {
                            turn += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                };
                let mut client = client;
                let result = if step == 0 {
                    client
                        .place(authed(PlaceRequest {
                            tenant: TENANT.into(),
                            name: FUNCTION.into(),
                            invocation_id: id.clone(),
                        }))
                        .await
                        .map(|r| Some(r.into_inner().node_id))
                } else {
                    client
                        .release(authed(ReleaseRequest {
                            invocation_id: id.clone(),
                        }))
                        .await
                        .map(|_| None)
                };
                match result {
                    Ok(Some(node)) => {
                        let prev = acked
                            .placed
                            .lock()
                            .unwrap()
                            .insert(id.clone(), node.clone());
                        assert!(
                            prev.is_none() || prev == Some(node),
                            "{id} placed on two nodes"
                        );
                        break;
                    }
                    Ok(None) => {
                        acked.released.lock().unwrap().insert(id.clone());
                        break;
                    }
                    Err(status) => {
                        assert!(
                            matches!(
                                status.code(),
                                tonic::Code::Unavailable
                                    | tonic::Code::Unknown
                                    | tonic::Code::Cancelled
                                    | tonic::Code::DeadlineExceeded
                                    | tonic::Code::Internal
                            ),
                            "{id}: unexpected error {status:?}"
                        );
                        clients.remove(&endpoint);
                        turn += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            acked.acks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Checks one replica's state: aggregates equal sums over its tasks, and the
/// task set is exactly what clients were told is placed and not released.
fn check_replica(
    id: u64,
    state: &Value,
    placed: &BTreeMap<String, String>,
    released: &BTreeSet<String>,
) {
    let tasks = state["tasks"].as_object().expect("tasks map");
    let mut alloc: BTreeMap<String, u64> = BTreeMap::new();
    let mut req: BTreeMap<String, u64> = BTreeMap::new();
    for (tid, t) in tasks {
        let node = t["node_id"].as_str().unwrap().to_string();
        *alloc.entry(node.clone()).or_default() += t["t_lim"].as_u64().unwrap();
        *req.entry(node).or_default() += t["t_mem"].as_u64().unwrap();
        assert_eq!(
            placed.get(tid).map(String::as_str),
            t["node_id"].as_str(),
            "controller {id}: task {tid}"
        );
    }
    for (nid, n) in state["nodes"].as_object().unwrap() {
        assert_eq!(
            n["n_alloc"].as_u64().unwrap(),
            alloc.get(nid).copied().unwrap_or(0),
            "controller {id}: {nid} N_alloc"
        );
        assert_eq!(
            n["n_req"].as_u64().unwrap(),
            req.get(nid).copied().unwrap_or(0),
            "controller {id}: {nid} N_req"
        );
        assert_eq!(
            n["tasks"].as_array().unwrap().len(),
            tasks
                .values()
                .filter(|t| t["node_id"] == nid.as_str())
                .count()
        );
    }
    let expected: BTreeSet<&String> = placed.keys().filter(|k| !released.contains(*k)).collect();
    let actual: BTreeSet<&String> = tasks.keys().collect();
    assert_eq!(
        actual, expected,
        "controller {id}: active tasks differ from acknowledged placements"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leader_sigkill_under_load_loses_and_doubles_nothing() {
    let mut cluster = Controllers::start(3, 10_000);
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let follower = cluster.follower_of(leader);
    setup(&cluster, follower).await;

    let endpoints = Arc::new(Mutex::new(
        cluster
            .running()
            .iter()
            .map(|id| cluster.endpoint(*id))
            .collect::<Vec<_>>(),
    ));
    let acked = Acked::default();
    let workers = acked.churn(&cluster.ca_pem(), &endpoints, 6, 450);

    // Kill the leader mid-stream.
    wait_for(
        "1,500 acknowledged commands",
        Duration::from_secs(120),
        || async { (acked.acks.load(Ordering::Relaxed) >= 1500).then_some(()) },
    )
    .await;
    let killed_at = Instant::now();
    cluster.kill(leader);
    let new_leader = cluster.leader(Duration::from_secs(30)).await;
    let failover = killed_at.elapsed();
    assert_ne!(new_leader, leader);
    eprintln!("new leader {new_leader} agreed {failover:?} after SIGKILL of {leader}");

    for w in workers {
        w.await.expect("client worker");
    }
    let (placed, released) = acked.snapshot();
    assert_eq!(placed.len(), 6 * 450);
    let state = cluster.converged().await;
    for id in cluster.running() {
        let s: Value = serde_json::from_str(&cluster.dump(id).await.unwrap().state_json).unwrap();
        check_replica(id, &s, &placed, &released);
    }

    // The killed leader comes back and catches up.
    cluster.spawn(leader);
    let caught_up = cluster.converged().await;
    assert_eq!(caught_up, state);

    // All three restart: identical state.
    cluster.restart(&[1, 2, 3]).await;
    let restarted = cluster.converged().await;
    assert_eq!(restarted, state, "state after restarting all three");
    let s: Value = serde_json::from_str(&restarted).unwrap();
    check_replica(0, &s, &placed, &released);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_follower_catches_up_by_snapshot_and_restart_after_purge_keeps_state() {
    let mut cluster = Controllers::start(3, 200);
    let leader = cluster.leader(Duration::from_secs(30)).await;
    setup(&cluster, leader).await;
    let lagging = cluster.follower_of(leader);
    cluster.kill(lagging);

    let endpoints = Arc::new(Mutex::new(vec![cluster.endpoint(leader)]));
    let acked = Acked::default();
    let workers = acked.churn(&cluster.ca_pem(), &endpoints, 4, 300);
    for w in workers {
        w.await.expect("client worker");
    }
    let purged = wait_for(
        "the leader to snapshot and purge its log",
        Duration::from_secs(30),
        || async {
            let d = cluster.dump(leader).await.ok()?;
            (d.purged_index > 0).then_some(d.purged_index)
        },
    )
    .await;

    cluster.spawn(lagging);
    let state = cluster.converged().await;
    let d = cluster.dump(lagging).await.unwrap();
    assert!(
        d.snapshot_index >= purged,
        "the lagging follower must have installed a snapshot covering the purged log (snapshot {} < purged {purged})",
        d.snapshot_index
    );
    let (placed, released) = acked.snapshot();
    let s: Value = serde_json::from_str(&state).unwrap();
    check_replica(lagging, &s, &placed, &released);

    cluster.restart(&[1, 2, 3]).await;
    assert_eq!(
        cluster.converged().await,
        state,
        "state after restarting all three after purge"
    );
}

/// An agent that registers again after losing its controller (`resumed`)
/// keeps its running placements; a restarted agent (not resumed) has them
/// released, since its instances died with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_registration_keeps_placements_and_a_fresh_one_releases_them() {
    let cluster = Controllers::start(1, 10_000);
    let leader = cluster.leader(Duration::from_secs(60)).await;
    setup(&cluster, leader).await;
    let node = cluster
        .client(leader)
        .await
        .unwrap()
        .place(authed(PlaceRequest {
            tenant: TENANT.into(),
            name: FUNCTION.into(),
            invocation_id: "running".into(),
        }))
        .await
        .expect("place")
        .into_inner()
        .node_id;
    let register = |resumed: bool| {
        let (cluster, node) = (&cluster, node.clone());
        async move {
            let addr = format!("sim://{node}");
            cluster
                .registry_as(leader, &node)
                .await
                .expect("a registry client")
                .register_node(RegisterNodeRequest {
                    node_id: node,
                    addr,
                    memory_bytes: 1 << 40,
                    resumed,
                })
                .await
                .expect("register again");
        }
    };
    let tasks_of = |state: &Value| -> Vec<String> {
        state["nodes"][node.as_str()]["tasks"]
            .as_array()
            .expect("the node's tasks")
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect()
    };
    let state = |d: ephemera_proto::v1::DumpReply| -> Value {
        serde_json::from_str(&d.state_json).expect("state JSON")
    };

    register(true).await;
    let s = state(cluster.dump(leader).await.unwrap());
    assert_eq!(tasks_of(&s), ["running"], "resumed: kept: {s}");
    assert_eq!(s["nodes"][node.as_str()]["up"], true, "{s}");

    register(false).await;
    let s = state(cluster.dump(leader).await.unwrap());
    assert!(tasks_of(&s).is_empty(), "fresh start: released: {s}");
    assert_eq!(s["nodes"][node.as_str()]["up"], true, "{s}");
    assert_eq!(s["tasks"], serde_json::json!({}), "{s}");
}
