//! Three in-process controllers over the sled store, wired by an in-memory router: a member
//! that joins after the log was purged catches up by snapshot (streamed in small chunks), the
//! leader is lost and a new one takes over, the old leader restarts from disk, and every
//! replica ends with the same, consistent cluster state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ephemera_storage::{
    open_store, ClusterState, Command, FunctionRecord, Node, NodeId, Policy, Raft, Response,
    TypeConfig,
};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

const MIB: u64 = 1 << 20;
const WAIT: Option<Duration> = Some(Duration::from_secs(20));

/// Delivers RPCs by calling the target's `Raft` directly.
#[derive(Clone, Default)]
struct Router {
    /// Running members.
    nodes: Arc<Mutex<BTreeMap<NodeId, Raft>>>,
}

impl Router {
    fn get(&self, id: NodeId) -> Option<Raft> {
        self.nodes.lock().unwrap().get(&id).cloned()
    }
}

fn down<E: std::error::Error>(id: NodeId) -> RPCError<NodeId, Node, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other(format!(
        "node {id} is down"
    ))))
}

struct Conn {
    router: Router,
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Conn;
    async fn new_client(&mut self, target: NodeId, _node: &Node) -> Conn {
        Conn {
            router: self.clone(),
            target,
        }
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let raft = self
            .router
            .get(self.target)
            .ok_or_else(|| down(self.target))?;
        raft.append_entries(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        let raft = self
            .router
            .get(self.target)
            .ok_or_else(|| down(self.target))?;
        raft.install_snapshot(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let raft = self
            .router
            .get(self.target)
            .ok_or_else(|| down(self.target))?;
        raft.vote(rpc)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

type State = Arc<RwLock<ClusterState>>;

async fn start(router: &Router, id: NodeId, dir: &Path) -> (Raft, State) {
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(40),
        max_in_snapshot_log_to_keep: 0,
        snapshot_max_chunk_size: 1024,
        ..Default::default()
    };
    let config = Arc::new(config.validate().unwrap());
    let (log, sm) = open_store(dir).await.unwrap();
    let state = sm.state();
    let raft = Raft::new(id, config, router.clone(), log, sm)
        .await
        .unwrap();
    router.nodes.lock().unwrap().insert(id, raft.clone());
    (raft, state)
}

fn node(id: NodeId) -> Node {
    Node::new(format!("in-process:{id}"))
}

/// Writes through whichever member leads.
async fn write(rafts: &[&Raft], cmd: Command) -> Response {
    for _ in 0..100 {
        for raft in rafts {
            if let Ok(r) = raft.client_write(cmd.clone()).await {
                return r.data;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no member accepted {cmd:?}");
}

fn schedule(i: usize) -> Command {
    Command::Schedule {
        invocation_id: format!("i{i}"),
        tenant: "t".into(),
        function: "f".into(),
        t_lim: 64 * MIB,
        t_mem: (i as u64 % 200) * MIB,
        policy: Policy::ALL[i % 3],
    }
}

async fn wait_applied(raft: &Raft, index: u64) {
    raft.wait(WAIT)
        .applied_index_at_least(Some(index), "applied")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_catch_up_by_snapshot_survive_the_leader_and_agree() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let router = Router::default();
    let (r1, s1) = start(&router, 1, dirs[0].path()).await;
    let (r2, s2) = start(&router, 2, dirs[1].path()).await;
    r1.initialize(BTreeMap::from([(1, node(1)), (2, node(2))]))
        .await
        .unwrap();
    r1.wait(WAIT).current_leader(1, "1 leads").await.unwrap();

    for (i, n) in ["a1", "a2", "a3"].into_iter().enumerate() {
        let r = write(
            &[&r1],
            Command::RegisterNode {
                node_id: n.into(),
                addr: format!("10.0.0.{i}:7000"),
                memory_bytes: 8192 * MIB,
            },
        )
        .await;
        assert_eq!(r, Response::Ok);
    }
    write(
        &[&r1],
        Command::DeployFunction {
            function: FunctionRecord {
                tenant: "t".into(),
                name: "f".into(),
                memory_bytes: 64 * MIB,
                ..FunctionRecord::default()
            },
        },
    )
    .await;
    for i in 0..200 {
        assert!(write(&[&r1], schedule(i)).await.is_accepted());
        if i % 2 == 0 {
            write(
                &[&r1],
                Command::Complete {
                    invocation_id: format!("i{}", i / 2),
                },
            )
            .await;
        }
    }
    // The leader has snapshotted and purged: a newcomer cannot be fed from the log.
    r1.wait(WAIT)
        .metrics(|m| m.purged.is_some_and(|p| p.index > 100), "purged")
        .await
        .unwrap();

    let (r3, s3) = start(&router, 3, dirs[2].path()).await;
    r1.add_learner(3, node(3), true).await.unwrap();
    r1.change_membership(BTreeSet::from([1, 2, 3]), false)
        .await
        .unwrap();
    let m3 = r3
        .wait(WAIT)
        .metrics(|m| m.snapshot.is_some(), "3 installed a snapshot")
        .await
        .unwrap();
    assert!(m3.snapshot.unwrap().index > 100);

    // Lose the leader.
    router.nodes.lock().unwrap().remove(&1);
    r1.shutdown().await.unwrap();
    drop(r1);
    let m = r2
        .wait(WAIT)
        .metrics(
            |m| matches!(m.current_leader, Some(2) | Some(3)),
            "a new leader",
        )
        .await
        .unwrap();
    tracing::info!(leader = ?m.current_leader, "new leader");
    let mut last = 0;
    for i in 200..300 {
        assert!(write(&[&r2, &r3], schedule(i)).await.is_accepted());
        // A retried Schedule (as after a lost reply) is answered, not placed twice.
        let again = write(&[&r2, &r3], schedule(i)).await;
        assert!(matches!(again, Response::Placed { .. }), "{again:?}");
    }
    let leader = if r2.metrics().borrow().current_leader == Some(2) {
        &r2
    } else {
        &r3
    };
    if let Some(l) = leader.metrics().borrow().last_applied {
        last = l.index;
    }

    // The old leader comes back from its disk and catches up.
    let (r1, s1_new) = start(&router, 1, dirs[0].path()).await;
    drop(s1);
    for r in [&r1, &r2, &r3] {
        wait_applied(r, last).await;
    }
    let states: Vec<ClusterState> = [&s1_new, &s2, &s3]
        .iter()
        .map(|s| s.read().unwrap().clone())
        .collect();
    states[0].check_invariants().unwrap();
    assert_eq!(states[0].tasks.len(), 300 - 100);
    assert_eq!(states[0], states[1]);
    assert_eq!(states[1], states[2]);
    for r in [r1, r2, r3] {
        r.shutdown().await.unwrap();
    }
}
