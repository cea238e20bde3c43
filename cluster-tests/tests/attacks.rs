//! The attacker's view of the embedded cluster (`ephemera dev`): someone
//! with a tenant token, or nothing but a local socket, tries each attack
//! the trust issue lists. Every test asserts the attack is refused by its
//! effect: the token does not work, the node is not listed, the marker file
//! is not written, the agent is still alive, the reservation comes back.

use std::path::Path;
use std::time::Duration;

use ephemera_cluster_tests::dev::DevCluster;
use ephemera_cluster_tests::wait_for;
use ephemera_control_plane::client::{self, Client};
use ephemera_domain::Reason;
use ephemera_proto::raft::raft_service_client::RaftServiceClient;
use ephemera_proto::raft::RaftPayload;
use ephemera_proto::v1 as pb;
use ephemera_proto::v1::agent_client::AgentClient;
use ephemera_proto::v1::node_registry_client::NodeRegistryClient;
use ephemera_trust::{anonymous_endpoint, member_endpoint, Credentials, Expect, Identity};
use serde_json::{json, Value};
use tonic::transport::Channel;
use tonic::Code;

/// The admin token `ephemera dev` saved for its endpoint.
fn admin_token(dev: &DevCluster) -> String {
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&dev.credentials).unwrap()).unwrap();
    saved[dev.endpoint.as_str()]["token"]
        .as_str()
        .expect("the saved admin token")
        .to_string()
}

fn ca(dev: &DevCluster) -> String {
    std::fs::read_to_string(&dev.ca).unwrap()
}

/// The admin's API client.
async fn admin(dev: &DevCluster) -> Client {
    client::connect(
        &dev.endpoint,
        Some(&ca(dev)),
        Some(&admin_token(dev)),
        Some(Duration::from_secs(30)),
    )
    .await
    .unwrap()
}

/// A TLS channel to `addr` presenting no certificate: a stranger.
async fn stranger(dev: &DevCluster, addr: &str) -> Result<Channel, tonic::transport::Error> {
    anonymous_endpoint(&ca(dev), addr, &Expect::Name)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

/// A channel to `addr` presenting the certificate of `who` (read from the
/// dev cluster's own credentials, as an attacker who stole them would).
async fn as_member(dev: &DevCluster, who: Identity, addr: &str) -> Channel {
    let creds = Credentials::load(&dev.data_dir.join("tls"), &who).unwrap();
    member_endpoint(&creds, addr, &Expect::Name)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn status(dev: &DevCluster) -> pb::StatusReply {
    admin(dev)
        .await
        .status(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner()
}

async fn term(dev: &DevCluster) -> u64 {
    admin(dev)
        .await
        .dump(pb::DumpRequest {})
        .await
        .unwrap()
        .into_inner()
        .term
}

fn raft_payload(v: &Value) -> RaftPayload {
    RaftPayload {
        data: serde_json::to_vec(v).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_and_the_registry_refuse_strangers_and_impostors() {
    let data = tempfile::tempdir().unwrap();
    let dev = DevCluster::start(data.path(), 2);
    let term_before = term(&dev).await;

    // A stranger writes a tenant token through Raft's ClientWrite.
    let evil = "eph_evil_token_chosen_by_the_attacker";
    let digest = ephemera_control_plane::auth::token_digest(evil);
    let set_token = json!({"SetTenantToken": {"tenant": "acme", "token_sha256": digest}});
    let mut raft = RaftServiceClient::new(stranger(&dev, &dev.endpoint).await.unwrap());
    let err = raft
        .client_write(raft_payload(&set_token))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    let out = dev.cli_with_token(&["fn", "list"], Some(evil));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid token"),
        "the attacker's token does not work: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A forged AppendEntries with a far higher term, from no certificate,
    // from an agent's certificate, and claiming to be another controller
    // under controller 1's own certificate.
    let forged = json!({"vote": {"leader_id": {"term": term_before + 1000, "node_id": 7},
        "committed": true}, "prev_log_id": null, "entries": [], "leader_commit": null});
    let err = raft
        .append_entries(raft_payload(&forged))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let node1 = Identity::agent("node-1").unwrap();
    let mut as_agent = RaftServiceClient::new(as_member(&dev, node1.clone(), &dev.endpoint).await);
    let err = as_agent
        .append_entries(raft_payload(&forged))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let controller1 = Identity::controller(1).unwrap();
    let mut as_c1 = RaftServiceClient::new(as_member(&dev, controller1, &dev.endpoint).await)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    let err = as_c1
        .append_entries(raft_payload(&forged))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        term(&dev).await < term_before + 1000,
        "the term did not move"
    );

    // Raft messages are bounded: 200 MiB, even from a member, is refused
    // and the controller goes on serving.
    let huge = RaftPayload {
        data: vec![b' '; 200 << 20],
    };
    let err = as_c1.client_write(huge).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    assert_eq!(status(&dev).await.nodes.len(), 2, "still serving");

    // A fake 512 TiB node, without a certificate and with node-1's.
    let fake = pb::RegisterNodeRequest {
        node_id: "evil".into(),
        addr: "https://127.0.0.1:1".into(),
        memory_bytes: 512 << 40,
        resumed: false,
    };
    let mut registry = NodeRegistryClient::new(stranger(&dev, &dev.endpoint).await.unwrap());
    let err = registry.register_node(fake.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let mut registry = NodeRegistryClient::new(as_member(&dev, node1, &dev.endpoint).await);
    let err = registry.register_node(fake).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = registry
        .heartbeat(pb::HeartbeatRequest {
            node_id: "node-2".into(),
            running: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "node-1 cannot speak for node-2"
    );
    let nodes: Vec<String> = status(&dev)
        .await
        .nodes
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(nodes, ["node-1", "node-2"], "no fake node is listed");
    dev.stop();
}

/// A `Run` whose function would leave a marker file.
fn marker_run(marker: &Path) -> pb::RunRequest {
    let code = vec![pb::CodeFile {
        path: "run.sh".into(),
        mode: 0o755,
        data: format!("touch {}\n", marker.display()).into_bytes(),
    }];
    pb::RunRequest {
        invocation_id: "attack-1".into(),
        function: Some(pb::FunctionSpec {
            tenant: "evil".into(),
            name: "run".into(),
            cmd: "sh run.sh".into(),
            memory_bytes: 64 << 20,
            code_digest: ephemera_domain::code::digest(&code),
            ..Default::default()
        }),
        input_json: "{}".into(),
        code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_nothing_for_strangers_or_other_agents() {
    let data = tempfile::tempdir().unwrap();
    let dev = DevCluster::start(data.path(), 2);
    let nodes = status(&dev).await.nodes;
    let addr = |n: &str| nodes.iter().find(|x| x.node_id == n).unwrap().addr.clone();
    let marker = data.path().join("agent-ran-it");

    // Without a certificate the agent does not even finish the handshake.
    let attempt = async {
        let ch = stranger(&dev, &addr("node-1")).await?;
        let mut agent = AgentClient::new(ch);
        agent.run(marker_run(&marker)).await?;
        agent.status(pb::AgentStatusRequest {}).await?;
        Ok::<_, Box<dyn std::error::Error>>(())
    };
    assert!(attempt.await.is_err(), "a stranger reached the agent");

    // Another agent's certificate: admitted to the connection, refused the call.
    let node2 = Identity::agent("node-2").unwrap();
    let mut agent = AgentClient::new(as_member(&dev, node2, &addr("node-1")).await);
    let err = agent.run(marker_run(&marker)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let err = agent
        .profile(pb::ProfileRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(!marker.exists(), "the marker was written");
    dev.stop();
}

/// One function for both tenants (so their code has one digest and one
/// cache directory): `keep` leaves a secret in its tier and reports where;
/// `attack` tries to read, write and signal outside its own files.
const PROBE: &str = r#"
import os, signal

def main(args):
    if args.get("role") == "keep":
        path = os.path.join(os.environ["TMPDIR"], "secret.txt")
        with open(path, "w") as f:
            f.write("globex-secret")
        return {"secret": path, "code": os.getcwd(), "uid": os.getuid()}
    out = {"uid": os.getuid(), "env": sorted(os.environ)}
    for name, path in args["read"].items():
        try:
            with open(path) as f:
                out[name] = "READ:" + f.read(64)
        except Exception as e:
            out[name] = type(e).__name__
    for name, path in args["write"].items():
        try:
            with open(path, "a") as f:
                f.write("owned")
            out[name] = "WROTE"
        except Exception as e:
            out[name] = type(e).__name__
    try:
        os.kill(args["agent_pid"], signal.SIGKILL)
        out["kill_agent"] = "KILLED"
    except Exception as e:
        out["kill_agent"] = type(e).__name__
    return out
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_see_only_their_own_files() {
    let data = tempfile::tempdir().unwrap();
    let dev = DevCluster::start(data.path(), 1);
    let code = data.path().join("probe");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("handler.py"), PROBE).unwrap();
    for tenant in ["globex", "acme"] {
        dev.deploy(
            tenant,
            "probe",
            &code,
            "ephemera-python handler.py",
            "64MiB",
        );
    }
    let kept: Value = serde_json::from_str(&dev.ok(&[
        "invoke",
        "globex/probe",
        "--input",
        r#"{"role": "keep"}"#,
    ]))
    .unwrap();
    let secret = kept["secret"].as_str().unwrap();
    let shared_code = kept["code"].as_str().unwrap();
    let marker = "/tmp/ephemera-attack-marker";
    let _ = std::fs::remove_file(marker);
    let controller_dir = dev.data_dir.join("controller");
    let input = json!({
        "read": {
            "admin_token": controller_dir.join("admin-token"),
            "raft_db": controller_dir.join("raft/conf"),
            "ca_key": dev.data_dir.join("tls/ca.key"),
            "cli_credentials": dev.credentials,
            "other_tenant_tier": secret,
            "agent_environ": format!("/proc/{}/environ", dev.pid()),
        },
        "write": {
            "marker": marker,
            "shared_code": Path::new(shared_code).join("handler.py"),
            "new_code_file": Path::new(shared_code).join("planted.py"),
        },
        "agent_pid": dev.pid(),
    });
    let out: Value =
        serde_json::from_str(&dev.ok(&["invoke", "acme/probe", "--input", &input.to_string()]))
            .unwrap();
    for name in [
        "admin_token",
        "raft_db",
        "ca_key",
        "cli_credentials",
        "other_tenant_tier",
        "agent_environ",
    ] {
        let got = out[name].as_str().unwrap_or_default();
        assert!(!got.starts_with("READ"), "{name} was read: {out}");
    }
    for name in ["marker", "shared_code", "new_code_file"] {
        assert_ne!(out[name], "WROTE", "{name} was written: {out}");
    }
    assert_ne!(out["kill_agent"], "KILLED", "{out}");
    assert!(!Path::new(marker).exists());
    assert!(!Path::new(shared_code).join("planted.py").exists());
    assert_eq!(
        std::fs::read_to_string(Path::new(shared_code).join("handler.py")).unwrap(),
        PROBE,
        "the shared code is unchanged"
    );
    // Its own uid, not root, not globex's; and none of the agent's variables.
    let (uid, globex_uid) = (out["uid"].as_u64().unwrap(), kept["uid"].as_u64().unwrap());
    assert!(uid != 0 && uid != globex_uid, "{out}");
    let env: Vec<&str> = out["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for leaked in [
        "EPHEMERA_ADMIN_TOKEN",
        "EPHEMERA_CREDENTIALS",
        "EPHEMERA_TOKEN",
    ] {
        assert!(!env.contains(&leaked), "{leaked} in {env:?}");
    }
    // globex is untouched, and the agent serves on.
    let again: Value = serde_json::from_str(&dev.ok(&[
        "invoke",
        "globex/probe",
        "--input",
        r#"{"role": "keep"}"#,
    ]))
    .unwrap();
    assert_eq!(again["secret"], kept["secret"]);
    dev.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_cannot_take_down_its_agent() {
    let data = tempfile::tempdir().unwrap();
    let dev = DevCluster::start(data.path(), 1);
    // Damages its own control block every way it can, then forks until
    // the kernel says no (shared with the compose test's section g).
    let vandal = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vandal");
    dev.deploy(
        "acme",
        "vandal",
        &vandal,
        "ephemera-python handler.py",
        "128MiB",
    );
    let out: Value = serde_json::from_str(&dev.ok(&["invoke", "acme/vandal"])).unwrap();
    assert_ne!(out["truncate_control"], "ok", "{out}");
    assert_eq!(out["scribble_control"], "ok", "{out}");
    assert_eq!(out["env_tokens"], serde_json::json!([]), "{out}");
    assert_eq!(
        out["fork_error"], "EAGAIN",
        "the pids limit stopped it: {out}"
    );
    assert!(out["children"].as_u64().unwrap() < 1000, "{out}");
    // The agent lives: the same instance (with its damaged block) and a new
    // function both run, and status answers.
    let again: Value = serde_json::from_str(&dev.ok(&["invoke", "acme/vandal"])).unwrap();
    assert_eq!(again["scribble_control"], "ok", "{again}");
    let probe = data.path().join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    std::fs::write(probe.join("handler.py"), PROBE).unwrap();
    dev.deploy(
        "acme",
        "probe",
        &probe,
        "ephemera-python handler.py",
        "64MiB",
    );
    dev.ok(&["invoke", "acme/probe", "--input", r#"{"role": "keep"}"#]);
    assert_eq!(status(&dev).await.nodes.len(), 1);
    dev.stop();
}

/// Σ N_alloc over the nodes.
async fn allocated(dev: &DevCluster) -> u64 {
    status(dev).await.nodes.iter().map(|n| n.n_alloc).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placements_always_come_back_and_quotas_hold() {
    let data = tempfile::tempdir().unwrap();
    let dev = DevCluster::start_with(data.path(), 1, &["--lease-secs", "3"]);
    let slow = data.path().join("slow");
    std::fs::create_dir_all(&slow).unwrap();
    std::fs::write(
        slow.join("handler.py"),
        "import time\n\ndef main(args):\n    time.sleep(args.get('s', 0))\n    return {}\n",
    )
    .unwrap();
    dev.deploy("acme", "slow", &slow, "ephemera-python handler.py", "64MiB");
    dev.ok(&["invoke", "acme/slow"]); // warm
    let token = dev.ok(&["tenant", "token", "acme"]).trim().to_string();
    let acme = |timeout| {
        let (endpoint, ca, token) = (dev.endpoint.clone(), ca(&dev), token.clone());
        async move {
            client::connect(&endpoint, Some(&ca), Some(&token), Some(timeout))
                .await
                .unwrap()
        }
    };

    // A client that gives up: its invocation runs on, its placement comes back.
    let err = acme(Duration::from_millis(300))
        .await
        .invoke(pb::InvokeRequest {
            tenant: "acme".into(),
            name: "slow".into(),
            input_json: r#"{"s": 2}"#.into(),
            invocation_id: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{err:?}"
    );
    assert!(allocated(&dev).await > 0, "held while it runs");
    wait_for(
        "the abandoned invocation's release",
        Duration::from_secs(30),
        || async { (allocated(&dev).await == 0).then_some(()) },
    )
    .await;

    // A bare placement nobody runs: its lease runs out.
    acme(Duration::from_secs(10))
        .await
        .place(pb::PlaceRequest {
            tenant: "acme".into(),
            name: "slow".into(),
            invocation_id: "never-run".into(),
        })
        .await
        .unwrap();
    assert!(allocated(&dev).await > 0);
    wait_for(
        "the unused placement's lease to run out",
        Duration::from_secs(30),
        || async { (allocated(&dev).await == 0).then_some(()) },
    )
    .await;

    // A tenant cannot fill the nodes: its quota refuses more.
    dev.ok(&[
        "tenant",
        "quota",
        "acme",
        "--memory",
        "1GiB",
        "--invocations",
        "1",
    ]);
    let mut c = acme(Duration::from_secs(10)).await;
    let place = |id: &str| pb::PlaceRequest {
        tenant: "acme".into(),
        name: "slow".into(),
        invocation_id: id.into(),
    };
    c.place(place("q1")).await.unwrap();
    let err = c.place(place("q2")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(Reason::of(&err), Some(Reason::Quota), "{err:?}");

    // Profiling is bounded: forty trial inputs are refused up front.
    let mut args = vec![
        "fn", "deploy", "--tenant", "acme", "--name", "many", "--dir",
    ];
    let dir = slow.to_str().unwrap().to_string();
    args.push(&dir);
    args.extend(["--cmd", "ephemera-python handler.py", "--memory", "64MiB"]);
    for _ in 0..40 {
        args.extend(["--profile-input", "{}"]);
    }
    let err = dev.fails(&args);
    assert!(err.contains("at most 8"), "{err}");
    dev.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_tokens_and_keys_are_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let data = tempfile::tempdir().unwrap();
    let dev = DevCluster::start(data.path(), 1);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let root = &dev.data_dir;
    for dir in [
        root.to_path_buf(),
        root.join("controller"),
        root.join("controller/raft"),
        root.join("tls"),
        root.join("agents/node-1/ledger"),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    let mut files = vec![
        root.join("controller/admin-token"),
        root.join("tls/ca.key"),
        root.join("tls/controller-1.key"),
        root.join("tls/agent-node-1.key"),
        dev.credentials.clone(),
    ];
    for e in std::fs::read_dir(root.join("controller/raft")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            files.push(p);
        }
    }
    for f in files {
        assert_eq!(mode(&f) & 0o077, 0, "{} is readable by others", f.display());
    }
    dev.stop();
}
