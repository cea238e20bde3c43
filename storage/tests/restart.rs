//! Durability across restarts: snapshot + purge + reopen gives back the same cluster state,
//! directly through the storage traits and through a real (single-node) openraft `Raft`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ephemera_storage::{
    open_store, ClusterState, Command, Entry, FunctionRecord, LogId, Membership, Node, NodeId,
    Policy, Raft, Response, TypeConfig, Vote,
};
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader, RaftSnapshotBuilder};

const MIB: u64 = 1 << 20;

/// A workload: two nodes, a function, placements and completions.
fn commands(n: usize) -> Vec<Command> {
    let mut cmds = vec![
        Command::RegisterNode {
            node_id: "n1".into(),
            addr: "n1:1".into(),
            memory_bytes: 64 * 1024 * MIB,
        },
        Command::RegisterNode {
            node_id: "n2".into(),
            addr: "n2:1".into(),
            memory_bytes: 64 * 1024 * MIB,
        },
        Command::DeployFunction {
            function: FunctionRecord {
                tenant: "t".into(),
                name: "f".into(),
                memory_bytes: 128 * MIB,
                ..FunctionRecord::default()
            },
        },
    ];
    for i in 0..n {
        cmds.push(Command::Schedule {
            invocation_id: format!("i{i}"),
            tenant: "t".into(),
            function: "f".into(),
            t_lim: 128 * MIB,
            t_mem: (i as u64 % 300) * MIB,
            policy: Policy::ALL[i % 3],
        });
        if i % 3 == 0 {
            cmds.push(Command::Complete {
                invocation_id: format!("i{}", i / 2),
            });
        }
    }
    cmds
}

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 1), index)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_snapshot_and_purge_restores_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let cmds = commands(200);
    let membership = Membership::new(vec![BTreeSet::from([1])], None);
    let mut entries = vec![Entry {
        log_id: log_id(1),
        payload: EntryPayload::Membership(membership.clone()),
    }];
    for (i, c) in cmds.iter().enumerate() {
        entries.push(Entry {
            log_id: log_id(i as u64 + 2),
            payload: EntryPayload::Normal(c.clone()),
        });
    }
    let last = entries.len() as u64;
    let snap_at = last / 2;

    let (at_snapshot, at_end) = {
        let (mut log, mut sm) = open_store(dir.path()).await.unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        log.blocking_append(entries.clone()).await.unwrap();
        let before: Vec<Entry> = entries[..snap_at as usize].to_vec();
        let after: Vec<Entry> = entries[snap_at as usize..].to_vec();
        sm.apply(before).await.unwrap();
        let snap = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .unwrap();
        assert_eq!(snap.meta.last_log_id, Some(log_id(snap_at)));
        let at_snapshot = sm.state().read().unwrap().clone();
        log.purge(log_id(snap_at)).await.unwrap();
        let responses = sm.apply(after).await.unwrap();
        assert!(responses.iter().all(Response::is_accepted), "{responses:?}");
        log.save_committed(Some(log_id(last))).await.unwrap();
        let at_end = sm.state().read().unwrap().clone();
        at_end.check_invariants().unwrap();
        (at_snapshot, at_end)
    };

    let (mut log, mut sm) = open_store(dir.path()).await.unwrap();
    assert_eq!(*sm.state().read().unwrap(), at_snapshot);
    let (applied, stored) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(snap_at)));
    assert_eq!(stored.membership(), &membership);
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(last)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(snap_at)));
    assert_eq!(state.last_log_id, Some(log_id(last)));

    // What openraft does on startup: re-apply the log after the snapshot up to committed.
    let rest = log.try_get_log_entries(snap_at + 1..=last).await.unwrap();
    assert_eq!(rest.len() as u64, last - snap_at);
    assert!(log
        .try_get_log_entries(..=snap_at)
        .await
        .unwrap()
        .is_empty());
    sm.apply(rest).await.unwrap();
    assert_eq!(*sm.state().read().unwrap(), at_end);
    assert_eq!(sm.last_applied(), Some(log_id(last)));
}

/// The network of a single-node cluster: never used; every peer is unreachable.
struct NoNetwork;

fn unreachable<E: std::error::Error>() -> RPCError<NodeId, Node, E> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("single-node test")))
}

impl RaftNetworkFactory<TypeConfig> for NoNetwork {
    type Network = NoNetwork;
    async fn new_client(&mut self, _target: NodeId, _node: &Node) -> NoNetwork {
        NoNetwork
    }
}

impl RaftNetwork<TypeConfig> for NoNetwork {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        Err(unreachable())
    }
}

fn config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    };
    Arc::new(config.validate().unwrap())
}

async fn start(dir: &std::path::Path) -> (Raft, Arc<std::sync::RwLock<ClusterState>>) {
    let (log, sm) = open_store(dir).await.unwrap();
    let state = sm.state();
    let raft = Raft::new(1, config(), NoNetwork, log, sm).await.unwrap();
    (raft, state)
}

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_node_restarts_from_snapshot_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let cmds = commands(150);
    let (first, second) = cmds.split_at(cmds.len() / 2);

    let (expected, last_index) = {
        let (raft, state) = start(dir.path()).await;
        raft.initialize(BTreeMap::from([(1, Node::new("127.0.0.1:1"))]))
            .await
            .unwrap();
        raft.wait(WAIT).current_leader(1, "leader").await.unwrap();
        for c in first {
            let r = raft.client_write(c.clone()).await.unwrap();
            assert!(r.data.is_accepted(), "{c:?}: {:?}", r.data);
        }
        raft.trigger().snapshot().await.unwrap();
        let m = raft
            .wait(WAIT)
            .metrics(|m| m.snapshot.is_some(), "snapshot")
            .await
            .unwrap();
        let snap_index = m.snapshot.unwrap().index;
        raft.trigger().purge_log(snap_index).await.unwrap();
        raft.wait(WAIT)
            .metrics(|m| m.purged.map(|p| p.index) == Some(snap_index), "purged")
            .await
            .unwrap();
        let mut last = 0;
        for c in second {
            let r = raft.client_write(c.clone()).await.unwrap();
            assert!(r.data.is_accepted(), "{c:?}: {:?}", r.data);
            last = r.log_id.index;
        }
        raft.shutdown().await.unwrap();
        let expected = state.read().unwrap().clone();
        expected.check_invariants().unwrap();
        (expected, last)
    };

    let (raft, state) = start(dir.path()).await;
    raft.wait(WAIT)
        .applied_index_at_least(Some(last_index), "re-applied")
        .await
        .unwrap();
    assert_eq!(*state.read().unwrap(), expected);
    raft.wait(WAIT)
        .current_leader(1, "leader again")
        .await
        .unwrap();
    let r = raft
        .client_write(Command::Complete {
            invocation_id: "i149".into(),
        })
        .await
        .unwrap();
    assert_eq!(r.data, Response::Ok);
    assert!(!state.read().unwrap().tasks.contains_key("i149"));
    raft.shutdown().await.unwrap();
}

/// Not a check: prints committed `Schedule`s per second through one durable node
/// (`cargo test --release --test restart -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn single_node_commit_throughput() {
    let dir = tempfile::tempdir().unwrap();
    let (raft, _state) = start(dir.path()).await;
    raft.initialize(BTreeMap::from([(1, Node::new("127.0.0.1:1"))]))
        .await
        .unwrap();
    raft.wait(WAIT).current_leader(1, "leader").await.unwrap();
    for c in commands(0) {
        raft.client_write(c).await.unwrap();
    }
    for clients in [1usize, 64] {
        let per_client = 2000 / clients.min(8);
        let t = std::time::Instant::now();
        let mut handles = Vec::new();
        for c in 0..clients {
            let raft = raft.clone();
            handles.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                for i in 0..per_client {
                    let id = format!("c{clients}-{c}-{i}");
                    let t = std::time::Instant::now();
                    let r = raft
                        .client_write(Command::Schedule {
                            invocation_id: id.clone(),
                            tenant: "t".into(),
                            function: "f".into(),
                            t_lim: MIB,
                            t_mem: MIB,
                            policy: Policy::FeatureAware,
                        })
                        .await
                        .unwrap();
                    assert!(r.data.is_accepted());
                    raft.client_write(Command::Complete { invocation_id: id })
                        .await
                        .unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut lat = Vec::new();
        for h in handles {
            lat.extend(h.await.unwrap());
        }
        let secs = t.elapsed().as_secs_f64();
        lat.sort();
        println!(
            "{clients:>4} clients: {:.0} commits/s, schedule+complete p50 {:?} p99 {:?}",
            (lat.len() * 2) as f64 / secs,
            lat[lat.len() / 2],
            lat[lat.len() * 99 / 100]
        );
    }
    for batch in [16usize, 64] {
        let clients = 8;
        let per_client = 20_000 / clients / batch;
        let t = std::time::Instant::now();
        let mut handles = Vec::new();
        for c in 0..clients {
            let raft = raft.clone();
            handles.push(tokio::spawn(async move {
                for i in 0..per_client {
                    let ids: Vec<String> = (0..batch)
                        .map(|j| format!("b{batch}-{c}-{i}-{j}"))
                        .collect();
                    let commands = ids
                        .iter()
                        .map(|id| Command::Schedule {
                            invocation_id: id.clone(),
                            tenant: "t".into(),
                            function: "f".into(),
                            t_lim: MIB,
                            t_mem: MIB,
                            policy: Policy::FeatureAware,
                        })
                        .collect();
                    raft.client_write(Command::Batch { commands })
                        .await
                        .unwrap();
                    let commands = ids
                        .into_iter()
                        .map(|invocation_id| Command::Complete { invocation_id })
                        .collect();
                    raft.client_write(Command::Batch { commands })
                        .await
                        .unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let n = clients * per_client * batch * 2;
        println!(
            "batches of {batch}: {:.0} commands/s",
            n as f64 / t.elapsed().as_secs_f64()
        );
    }
    raft.shutdown().await.unwrap();
}
