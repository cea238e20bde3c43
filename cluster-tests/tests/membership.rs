//! Controllers join and leave a running Raft group through the CLI: a fourth
//! controller is added (asking a follower, which points at the leader), catches
//! up, and the leader itself is removed; the group keeps committing.

use std::time::Duration;

use ephemera_cluster_tests::{authed, Controllers};
use ephemera_proto::v1::{CodeFile, DeployRequest, FunctionSpec, PlaceRequest};

fn cli(cluster: &Controllers, endpoint: &str, args: &[&str]) -> String {
    let out = cluster
        .cli(endpoint)
        .args(args)
        .output()
        .expect("run the CLI");
    assert!(
        out.status.success(),
        "ephemera {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_controller_then_remove_the_leader() {
    let mut cluster = Controllers::start(3, 100);
    let leader = cluster.leader(Duration::from_secs(30)).await;
    let follower = cluster.follower_of(leader);
    let spec = FunctionSpec {
        tenant: "acme".into(),
        name: "f".into(),
        cmd: "true".into(),
        memory_bytes: 64 << 20,
        ..Default::default()
    };
    let code = vec![CodeFile {
        path: "f".into(),
        mode: 0o644,
        data: b"x".to_vec(),
    }];
    let mut client = cluster.client(leader).await.unwrap();
    client
        .deploy_function(authed(DeployRequest {
            spec: Some(spec),
            code,
        }))
        .await
        .unwrap();
    // Enough entries that the newcomer gets a snapshot, not just the log.
    for i in 0..300 {
        let r = client
            .place(authed(PlaceRequest {
                tenant: "acme".into(),
                name: "f".into(),
                invocation_id: format!("p{i}"),
            }))
            .await;
        // No node is registered: every placement is refused, and committed.
        assert_eq!(r.unwrap_err().code(), tonic::Code::ResourceExhausted);
    }

    cluster.spawn_joining(4);
    let addr4 = cluster.addrs[&4].clone();
    let out = cli(
        &cluster,
        &cluster.endpoint(follower),
        &["cluster", "add-member", "--id", "4", "--addr", &addr4],
    );
    assert!(out.contains("voters: [1, 2, 3, 4]"), "{out}");
    cluster.converged().await;

    let out = cli(
        &cluster,
        &cluster.endpoint(4),
        &["cluster", "remove-member", "--id", &leader.to_string()],
    );
    let voters = out
        .split("voters: [")
        .nth(1)
        .and_then(|r| r.split(']').next())
        .unwrap()
        .to_string();
    assert!(
        !voters.split(", ").any(|v| v == leader.to_string()),
        "leader still a voter: {out}"
    );
    cluster.kill(leader);
    let new_leader = cluster.leader(Duration::from_secs(30)).await;
    assert_ne!(new_leader, leader);

    // The new group of three commits.
    let mut client = cluster.client(4).await.unwrap();
    let r = client
        .place(authed(PlaceRequest {
            tenant: "acme".into(),
            name: "f".into(),
            invocation_id: "after".into(),
        }))
        .await;
    assert_eq!(
        r.unwrap_err().code(),
        tonic::Code::ResourceExhausted,
        "a committed refusal, not an outage"
    );
    cluster.converged().await;
}
