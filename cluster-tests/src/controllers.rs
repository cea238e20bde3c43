//! Controller processes of one Raft group on loopback ports: started from
//! the workspace's `ephemera` binary with the test admin token and their
//! own certificates of the group's CA (mutual TLS between members, TLS for
//! clients), killed, restarted on their data dirs, asked for their applied
//! state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ephemera_proto::v1::controller_client::ControllerClient;
use ephemera_proto::v1::node_registry_client::NodeRegistryClient;
use ephemera_trust::{
    anonymous_endpoint, member_endpoint, ClusterCa, Credentials, Expect, Identity,
};

/// A channel to the client API at `endpoint` (TLS checked against `ca_pem`,
/// no client certificate); `timeout` per call.
pub async fn api_channel(
    ca_pem: &str,
    endpoint: &str,
    timeout: Duration,
) -> anyhow::Result<Channel> {
    Ok(anonymous_endpoint(ca_pem, endpoint, &Expect::ClientApi)?
        .connect_timeout(Duration::from_millis(500))
        .timeout(timeout)
        .connect()
        .await?)
}
use ephemera_proto::v1::{DumpReply, DumpRequest};
use tonic::transport::Channel;

use crate::{binary, free_ports, wait_for};

/// The admin token the test controllers are started with.
pub const ADMIN_TOKEN: &str = "cluster-tests-admin-token";

/// `msg` as a request carrying the admin token.
pub fn authed<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let value = format!("Bearer {ADMIN_TOKEN}")
        .parse()
        .expect("ascii token");
    req.metadata_mut().insert("authorization", value);
    req
}

/// Controller processes of one Raft group, on loopback.
pub struct Controllers {
    data: tempfile::TempDir,
    /// Member id → `127.0.0.1:port`.
    pub addrs: BTreeMap<u64, String>,
    procs: BTreeMap<u64, Child>,
    snapshot_logs: u64,
    /// `--node-timeout-secs` (and `--lease-secs`) of every controller
    /// started from now on: long by default, since these tests place
    /// invocations on simulated nodes that never vouch for them.
    pub node_timeout_secs: u64,
    /// The group's cluster CA.
    ca: ClusterCa,
}

impl Controllers {
    /// Starts `n` controllers bootstrapped as one group.
    pub fn start(n: u64, snapshot_logs: u64) -> Controllers {
        Self::start_with(n, snapshot_logs, 3600)
    }

    /// As [`Controllers::start`], marking silent agents down after `node_timeout_secs`.
    pub fn start_with(n: u64, snapshot_logs: u64, node_timeout_secs: u64) -> Controllers {
        let ports = free_ports(n as usize);
        let addrs: BTreeMap<u64, String> = (1..=n)
            .zip(ports)
            .map(|(id, port)| (id, format!("127.0.0.1:{port}")))
            .collect();
        let data = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::init(&data.path().join("ca")).expect("the cluster CA");
        let mut c = Controllers {
            ca,
            data,
            addrs,
            procs: BTreeMap::new(),
            snapshot_logs,
            node_timeout_secs,
        };
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// Starts a new controller `id` that joins no cluster by itself (no
    /// --bootstrap): it waits to be added with `AddMember`.
    pub fn spawn_joining(&mut self, id: u64) {
        let port = free_ports(1)[0];
        self.addrs.insert(id, format!("127.0.0.1:{port}"));
        self.spawn_with(id, false);
    }

    /// Starts (or restarts) member `id` on its data dir.
    pub fn spawn(&mut self, id: u64) {
        self.spawn_with(id, true);
    }

    fn spawn_with(&mut self, id: u64, bootstrap: bool) {
        let members: Vec<String> = self.addrs.iter().map(|(i, a)| format!("{i}={a}")).collect();
        let addr = &self.addrs[&id];
        let dir = self.data.path().join(format!("c{id}"));
        // Its certificate in `<data-dir>/tls`, where the controller looks by default.
        self.ca
            .ensure_member(
                &Identity::controller(id).expect("id"),
                &[],
                &dir.join("tls"),
            )
            .expect("a controller certificate");
        let child = Command::new(binary("ephemera"))
            .args(["controller", "--id", &id.to_string(), "--listen", addr])
            .arg("--data-dir")
            .arg(&dir)
            .args(if bootstrap {
                vec!["--bootstrap".to_string(), members.join(",")]
            } else {
                vec![]
            })
            .args(["--node-timeout-secs", &self.node_timeout_secs.to_string()])
            .args(["--lease-secs", &self.node_timeout_secs.to_string()])
            .args(["--snapshot-logs", &self.snapshot_logs.to_string()])
            // Replication errors to a killed peer are expected here.
            .env("EPHEMERA_LOG", "warn,openraft=off")
            .env("EPHEMERA_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ephemera controller");
        self.procs.insert(id, child);
    }

    /// Sends `signal` to member `id` and reaps it.
    pub fn signal(&mut self, id: u64, signal: i32) {
        if let Some(mut child) = self.procs.remove(&id) {
            let _ = ephemera_sys::process::kill(child.id() as i32, signal);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILLs member `id`.
    pub fn kill(&mut self, id: u64) {
        self.signal(id, libc::SIGKILL);
    }

    /// Member ids currently running.
    pub fn running(&self) -> Vec<u64> {
        self.procs.keys().copied().collect()
    }

    /// A running member other than `leader`.
    pub fn follower_of(&self, leader: u64) -> u64 {
        self.procs
            .keys()
            .copied()
            .find(|id| *id != leader)
            .unwrap_or_else(|| panic!("no running member besides {leader}"))
    }

    /// Stops every running member with SIGTERM, starts members `ids` again
    /// on their data dirs and waits for a leader.
    pub async fn restart(&mut self, ids: &[u64]) {
        for id in self.running() {
            self.signal(id, libc::SIGTERM);
        }
        for &id in ids {
            self.spawn(id);
        }
        self.leader(Duration::from_secs(30)).await;
    }

    /// The endpoint URL of member `id`.
    pub fn endpoint(&self, id: u64) -> String {
        format!("https://{}", self.addrs[&id])
    }

    /// The CA certificate file clients trust (`--ca`).
    pub fn ca_file(&self) -> PathBuf {
        self.data
            .path()
            .join("ca")
            .join(ephemera_trust::CA_CERT_FILE)
    }

    /// The `ephemera` CLI aimed at `endpoint` as the admin (token and CA
    /// in its environment, as a user would set them).
    pub fn cli(&self, endpoint: &str) -> Command {
        let mut cmd = Command::new(binary("ephemera"));
        cmd.env("EPHEMERA_ENDPOINT", endpoint)
            .env("EPHEMERA_TOKEN", ADMIN_TOKEN)
            .env("EPHEMERA_CA", self.ca_file());
        cmd
    }

    /// The CA certificate clients trust, as PEM.
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_file()).expect("the CA certificate")
    }

    /// A channel to `endpoint` as a client of the API (TLS, no certificate).
    pub async fn channel(&self, endpoint: &str) -> anyhow::Result<Channel> {
        api_channel(&self.ca_pem(), endpoint, Duration::from_secs(10)).await
    }

    /// A client of member `id`.
    pub async fn client(&self, id: u64) -> anyhow::Result<ControllerClient<Channel>> {
        Ok(ControllerClient::new(
            self.channel(&self.endpoint(id)).await?,
        ))
    }

    /// The credentials of agent `node` (made on first use), in their own
    /// directory: an agent's `--tls-dir`.
    pub fn agent_tls(&self, node: &str) -> PathBuf {
        let dir = self.data.path().join(format!("agent-{node}-tls"));
        self.ca
            .ensure_member(&Identity::agent(node).expect("node id"), &[], &dir)
            .expect("an agent certificate");
        dir
    }

    /// A node registry client of member `id` speaking for agent `node`
    /// (its certificate), as a real agent would.
    pub async fn registry_as(
        &self,
        id: u64,
        node: &str,
    ) -> anyhow::Result<NodeRegistryClient<Channel>> {
        let identity = Identity::agent(node)?;
        let creds = Credentials::load(&self.agent_tls(node), &identity)?;
        let channel = member_endpoint(
            &creds,
            &self.addrs[&id],
            &Expect::Identity(Identity::controller(id)?),
        )?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
        Ok(NodeRegistryClient::new(channel))
    }

    /// Member `id`'s applied state.
    pub async fn dump(&self, id: u64) -> anyhow::Result<DumpReply> {
        Ok(self
            .client(id)
            .await?
            .dump(authed(DumpRequest {}))
            .await?
            .into_inner())
    }

    /// Waits until every running member has applied the same state; returns it.
    pub async fn converged(&self) -> String {
        wait_for("replicas to converge", Duration::from_secs(60), || async {
            let mut states = Vec::new();
            for id in self.running() {
                states.push(self.dump(id).await.ok()?.state_json);
            }
            let first = states.first()?.clone();
            states.iter().all(|s| *s == first).then_some(first)
        })
        .await
    }

    /// Waits until the running members agree on one leader; returns it.
    pub async fn leader(&self, timeout: Duration) -> u64 {
        wait_for("an agreed leader", timeout, || async {
            let mut seen = Vec::new();
            for id in self.running() {
                seen.push(self.dump(id).await.ok()?.leader_id);
            }
            let first = *seen.first()?;
            (first != 0 && self.procs.contains_key(&first) && seen.iter().all(|l| *l == first))
                .then_some(first)
        })
        .await
    }
}

impl Drop for Controllers {
    fn drop(&mut self) {
        for id in self.running() {
            self.kill(id);
        }
    }
}
