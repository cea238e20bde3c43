//! Agents as separate processes on loopback: an agent that dies mid-invocation
//! fails that invocation with a clear error, is marked down after the
//! controller's timeout (which releases its placements), and new invocations
//! go to the other agent. A controller SIGKILLed between placing an
//! invocation and completing it leaves no placement behind: the agent stops
//! vouching for it when it ends, and the new leader lets its lease expire.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ephemera_cluster_tests::{authed, binary, free_ports, wait_for, Controllers};
use ephemera_proto::v1::{InvokeRequest, PlaceRequest, StatusReply, StatusRequest};
use serde_json::Value;

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM lets it remove its cgroups.
        let _ = ephemera_sys::process::kill(self.0.id() as i32, libc::SIGTERM);
        let _ = self.0.wait();
    }
}

fn agent(controllers: &Controllers, node: &str, port: u16, dir: &std::path::Path) -> Agent {
    Agent(
        Command::new(binary("ephemera"))
            .args([
                "agent",
                "--node-id",
                node,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--controller", &endpoints(controllers), "--memory", "2GiB"])
            .arg("--data-dir")
            .arg(dir.join(node))
            .arg("--tls-dir")
            .arg(controllers.agent_tls(node))
            .env("EPHEMERA_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn ephemera agent"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_fails_its_invocation_is_marked_down_and_loses_its_tasks() {
    let controllers = Controllers::start_with(1, 10_000, 2);
    controllers.leader(Duration::from_secs(30)).await;
    let endpoint = controllers.endpoint(1);
    let data = tempfile::tempdir().unwrap();
    let ports = free_ports(2);
    let mut agents = [
        Some(agent(&controllers, "node-a", ports[0], data.path())),
        Some(agent(&controllers, "node-b", ports[1], data.path())),
    ];
    deploy_slow(&controllers, &endpoint, data.path());

    let mut client = controllers.client(1).await.unwrap();
    wait_for("both agents up", Duration::from_secs(30), || {
        let c = client.clone();
        async move {
            let s = status(c).await;
            (s.nodes.len() == 2 && s.nodes.iter().all(|n| n.up)).then_some(())
        }
    })
    .await;

    // One slow invocation in flight, and one placement held on the same node.
    let inflight = spawn_slow(client.clone(), 20, "slow-1");
    let victim = wait_for(
        "the invocation to be placed",
        Duration::from_secs(30),
        || {
            let c = client.clone();
            async move {
                let s = status(c).await;
                s.nodes
                    .iter()
                    .find(|n| n.active_tasks == 1)
                    .map(|n| n.node_id.clone())
            }
        },
    )
    .await;
    // Wait until the instance is running there before killing its agent.
    wait_for("the instance to start", Duration::from_secs(30), || {
        let c = client.clone();
        let victim = victim.clone();
        async move {
            let s = status(c).await;
            s.instances
                .iter()
                .any(|i| i.node_id == victim && i.state == "busy")
                .then_some(())
        }
    })
    .await;
    let held = loop {
        let id = format!("held-{}", uuid_like());
        let r = client
            .place(authed(PlaceRequest {
                tenant: "t".into(),
                name: "slow".into(),
                invocation_id: id.clone(),
            }))
            .await
            .unwrap()
            .into_inner();
        if r.node_id == victim {
            break id;
        }
    };
    let index = if victim == "node-a" { 0 } else { 1 };
    let mut dead = agents[index].take().unwrap();
    dead.0.kill().unwrap();
    dead.0.wait().unwrap();
    // Reaped: its Drop must not signal a pid that may be reused.
    std::mem::forget(dead);

    let err = inflight
        .await
        .unwrap()
        .expect_err("the in-flight invocation must fail");
    assert!(
        err.message().contains(&victim) && err.message().contains("slow-1"),
        "the error names the node and the invocation: {err:?}"
    );

    // After the timeout the node is down and its placements are released.
    let s = wait_node(&client, &victim, false).await;
    let dead = s.nodes.iter().find(|n| n.node_id == victim).unwrap();
    assert_eq!(
        (dead.active_tasks, dead.n_alloc, dead.n_req),
        (0, 0, 0),
        "{dead:?} still holds {held}"
    );

    // New invocations go to the survivor.
    for _ in 0..3 {
        let out = controllers
            .cli(&endpoint)
            .args([
                "invoke",
                "t/slow",
                "--input",
                r#"{"sleep": 0}"#,
                "--details",
            ])
            .output()
            .expect("run the CLI");
        succeeded(&out);
        let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_ne!(reply["node_id"], victim.as_str(), "{reply}");
    }

    // The victim restarts on its data dir: it clears what its killed run left
    // (instance processes and cgroups) and rejoins.
    agents[index] = Some(agent(&controllers, &victim, ports[index], data.path()));
    wait_node(&client, &victim, true).await;
}

/// Insists a CLI run succeeded, showing its stderr otherwise.
fn succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every controller's endpoint, comma-separated (the agent's `--controller`).
fn endpoints(controllers: &Controllers) -> String {
    let ids = controllers.running();
    let all: Vec<String> = ids.iter().map(|id| controllers.endpoint(*id)).collect();
    all.join(",")
}

/// Writes the `slow` function (sleeps `args.sleep` seconds) and deploys it as t/slow.
fn deploy_slow(controllers: &Controllers, endpoint: &str, dir: &std::path::Path) {
    let code = dir.join("slow");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(
        code.join("handler.py"),
        "import time\n\ndef main(args):\n    time.sleep(float(args.get('sleep', 0)))\n    return {'slept': args.get('sleep', 0)}\n",
    )
    .unwrap();
    let out = controllers
        .cli(endpoint)
        .args(["fn", "deploy", "--tenant", "t", "--name", "slow", "--dir"])
        .arg(&code)
        .args(["--cmd", "ephemera-python handler.py", "--memory", "64MiB"])
        .output()
        .expect("run the CLI");
    succeeded(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_whose_controller_died_before_complete_expires_with_its_lease() {
    // Leases (and node timeouts) of 3 s.
    let mut controllers = Controllers::start_with(3, 10_000, 3);
    let leader = controllers.leader(Duration::from_secs(30)).await;
    let data = tempfile::tempdir().unwrap();
    let port = free_ports(1)[0];
    let _agent = agent(&controllers, "node-a", port, data.path());
    deploy_slow(&controllers, &controllers.endpoint(leader), data.path());
    let survivor = controllers.follower_of(leader);
    let mut client = controllers.client(survivor).await.unwrap();
    wait_for("the agent up", Duration::from_secs(30), || {
        let c = client.clone();
        async move { status(c).await.nodes.iter().any(|n| n.up).then_some(()) }
    })
    .await;

    // An invocation through the leader, running for 4 s on the agent...
    let invoker = controllers.client(leader).await.unwrap();
    let inflight = spawn_slow(invoker, 4, "orphan-1");
    wait_for("the instance busy", Duration::from_secs(30), || {
        let c = client.clone();
        async move {
            let s = status(c).await;
            s.instances.iter().any(|i| i.state == "busy").then_some(())
        }
    })
    .await;
    let held = status(client.clone()).await;
    assert_eq!(held.nodes[0].active_tasks, 1, "{held:?}");
    // ...whose controller dies before it can commit `Complete`.
    controllers.kill(leader);
    assert!(inflight.await.unwrap().is_err(), "its controller died");

    // The function ends, the agent stops vouching for it, its lease runs
    // out under the new leader: everything is returned, the node stays up.
    let s = wait_for(
        "the orphaned placement released",
        Duration::from_secs(30),
        || {
            let c = client.clone();
            async move {
                // Refusals while a new leader is elected are retried.
                let s = try_status(c).await?;
                let n = s.nodes.first()?;
                (n.active_tasks == 0 && n.n_alloc == 0 && n.n_req == 0).then_some(s)
            }
        },
    )
    .await;
    assert!(s.nodes[0].up, "{s:?}");
    // And the node serves the next invocation through the survivors.
    let out = controllers
        .cli(&controllers.endpoint(survivor))
        .args(["invoke", "t/slow", "--input", r#"{"sleep": 0}"#])
        .output()
        .expect("run the CLI");
    succeeded(&out);
    client = controllers.client(survivor).await.unwrap();
    assert_eq!(status(client).await.nodes[0].active_tasks, 0);
}

/// Invokes t/slow for `secs` seconds as invocation `id`, on a task of its own.
fn spawn_slow(
    mut client: Client,
    secs: u64,
    id: &str,
) -> tokio::task::JoinHandle<Result<tonic::Response<ephemera_proto::v1::InvokeReply>, tonic::Status>>
{
    let req = InvokeRequest {
        tenant: "t".into(),
        name: "slow".into(),
        input_json: format!(r#"{{"sleep": {secs}}}"#),
        invocation_id: id.into(),
    };
    tokio::spawn(async move { client.invoke(authed(req)).await })
}

type Client = ephemera_proto::v1::controller_client::ControllerClient<tonic::transport::Channel>;

async fn status(c: Client) -> StatusReply {
    try_status(c).await.expect("status")
}

async fn try_status(mut c: Client) -> Option<StatusReply> {
    c.status(authed(StatusRequest {
        tenant: String::new(),
    }))
    .await
    .ok()
    .map(|r| r.into_inner())
}

/// Waits until the controller reports `node` up (or down); returns that status.
async fn wait_node(client: &Client, node: &str, up: bool) -> StatusReply {
    let what = format!("{node} marked {}", if up { "up" } else { "down" });
    wait_for(&what, Duration::from_secs(30), || {
        let c = client.clone();
        async move {
            let s = status(c).await;
            s.nodes
                .iter()
                .any(|n| n.node_id == node && n.up == up)
                .then_some(s)
        }
    })
    .await
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}
