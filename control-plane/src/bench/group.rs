//! What the controller benches share: a group of controller processes (this
//! binary, durable storage, mutual TLS on loopback), simulated or real
//! agents, and percentiles.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use ephemera_proto::v1 as pb;
use ephemera_proto::v1::node_registry_client::NodeRegistryClient;
use tonic::transport::Channel;

use ephemera_trust::{anonymous_endpoint, member_endpoint, ClusterCa, Expect, Identity, Role};

use crate::client::{self, Client};

/// Controller (and agent) processes that are killed, and whose data is
/// removed, on drop.
pub(super) struct Group {
    /// Controller `id` is `procs[id - 1]`; agents follow.
    procs: Vec<std::process::Child>,
    /// How controller `id` was started (`controllers[id - 1]`), to restart it.
    controllers: Vec<std::process::Command>,
    data: tempfile::TempDir,
    /// `https://` endpoint of each controller, by id order (id = index + 1).
    pub(super) endpoints: Vec<String>,
    /// The group's CA: controllers' certificates, and the nodes'.
    ca: ClusterCa,
    /// The admin token.
    pub(super) token: String,
}

impl Drop for Group {
    /// SIGTERM first, so an agent removes its instances, cgroups and
    /// instance root; SIGKILL whatever is still running after 10 s.
    fn drop(&mut self) {
        for p in &mut self.procs {
            // Only the running: a reaped child's pid may be someone else's.
            if matches!(p.try_wait(), Ok(None)) {
                let _ = ephemera_sys::process::kill(p.id() as i32, libc::SIGTERM);
            }
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        for p in &mut self.procs {
            while matches!(p.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

/// Starts `n` controllers (ids 1..=n) bootstrapped as one group, with a
/// fresh admin token and `env` in their environment.
pub(super) fn start_group(n: u64, env: &[(&str, &str)]) -> anyhow::Result<Group> {
    let token = crate::auth::new_token();
    let data = tempfile::tempdir().context("creating a temp dir for the controllers")?;
    let exe = std::env::current_exe().context("locating the ephemera binary")?;
    let ports = ephemera_sys::net::free_ports(n as usize)?;
    let addrs: BTreeMap<u64, String> = (1..=n)
        .zip(ports)
        .map(|(id, port)| (id, format!("127.0.0.1:{port}")))
        .collect();
    let members: Vec<String> = addrs.iter().map(|(i, a)| format!("{i}={a}")).collect();
    let ca = ClusterCa::init(&data.path().join("ca"))?;
    let mut group = Group {
        procs: Vec::new(),
        controllers: Vec::new(),
        endpoints: addrs.values().map(|a| format!("https://{a}")).collect(),
        data,
        ca,
        token,
    };
    for (id, addr) in &addrs {
        let dir = group.data.path().join(format!("c{id}"));
        group
            .ca
            .ensure_member(&Identity::controller(*id)?, &[], &dir.join("tls"))?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["controller", "--id", &id.to_string(), "--listen", addr])
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--bootstrap",
                &members.join(","),
                "--node-timeout-secs",
                "3600",
            ])
            .env("EPHEMERA_LOG", "error,openraft=off")
            .env(crate::auth::ADMIN_TOKEN_ENV, &group.token)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null());
        let child = cmd.spawn().context("starting a controller process")?;
        group.procs.push(child);
        group.controllers.push(cmd);
    }
    Ok(group)
}

impl Group {
    /// A client channel to `endpoint` (TLS against the group's CA).
    pub(super) async fn connect(&self, endpoint: &str) -> anyhow::Result<Channel> {
        Ok(
            anonymous_endpoint(self.ca.cert_pem(), endpoint, &Expect::ClientApi)?
                .tcp_nodelay(true)
                .connect()
                .await?,
        )
    }

    /// A token-carrying client of `endpoint`.
    pub(super) async fn client(&self, endpoint: &str) -> anyhow::Result<Client> {
        Ok(client::with_token(
            self.connect(endpoint).await?,
            Some(&self.token),
        )?)
    }

    /// Registers simulated node `node` with its own certificate.
    /// Deploys `bench/<name>`: `cmd` over one file `file` holding `data`.
    pub(super) async fn deploy(
        &self,
        name: &str,
        cmd: &str,
        memory_bytes: u64,
        (file, data): (&str, &[u8]),
    ) -> anyhow::Result<()> {
        let spec = pb::FunctionSpec {
            tenant: "bench".into(),
            name: name.into(),
            cmd: cmd.into(),
            memory_bytes,
            ..Default::default()
        };
        let code = vec![pb::CodeFile {
            path: file.into(),
            mode: 0o644,
            data: data.to_vec(),
        }];
        self.client(&self.endpoints[0])
            .await?
            .deploy_function(pb::DeployRequest {
                spec: Some(spec),
                code,
            })
            .await
            .with_context(|| format!("deploying bench/{name}"))?;
        Ok(())
    }

    pub(super) async fn register(&self, node: &str) -> anyhow::Result<()> {
        let identity = Identity::agent(node)?;
        let dir = self.data.path().join("nodes");
        let creds = self.ca.ensure_member(&identity, &[], &dir)?;
        let channel = member_endpoint(&creds, &self.endpoints[0], &Expect::Role(Role::Controller))?
            .connect()
            .await?;
        NodeRegistryClient::new(channel)
            .register_node(pb::RegisterNodeRequest {
                node_id: node.to_string(),
                addr: format!("sim://{node}"),
                memory_bytes: 1 << 50,
                resumed: false,
            })
            .await
            .with_context(|| format!("registering the simulated node {node}"))?;
        Ok(())
    }

    /// Starts a real `ephemera agent` process for `node` (process runtime,
    /// its own certificate) talking to every controller.
    pub(super) fn start_agent(&mut self, node: &str) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("locating the ephemera binary")?;
        let tls = self.data.path().join(format!("agent-{node}-tls"));
        self.ca.ensure_member(&Identity::agent(node)?, &[], &tls)?;
        let port = ephemera_sys::net::free_ports(1)?[0];
        let child = std::process::Command::new(&exe)
            .args(["agent", "--node-id", node])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--controller", &self.endpoints.join(",")])
            .args(["--memory", "4GiB"])
            .arg("--data-dir")
            .arg(self.data.path().join(format!("agent-{node}")))
            .arg("--tls-dir")
            .arg(&tls)
            .env("EPHEMERA_LOG", "error")
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting an agent process")?;
        self.procs.push(child);
        Ok(())
    }

    /// SIGKILLs controller `id` and reaps it.
    pub(super) fn kill_controller(&mut self, id: u64) -> anyhow::Result<()> {
        let child = self
            .procs
            .get_mut((id - 1) as usize)
            .with_context(|| format!("no controller {id}"))?;
        child
            .kill()
            .with_context(|| format!("killing controller {id}"))?;
        child
            .wait()
            .with_context(|| format!("reaping controller {id}"))?;
        Ok(())
    }

    /// Starts controller `id` again on its data (after [`Group::kill_controller`]).
    pub(super) fn restart_controller(&mut self, id: u64) -> anyhow::Result<()> {
        let i = (id - 1) as usize;
        let child = self.controllers[i]
            .spawn()
            .with_context(|| format!("restarting controller {id}"))?;
        self.procs[i] = child;
        Ok(())
    }

    /// Waits until every controller answers and names the same leader; returns it.
    pub(super) async fn wait_ready(&self) -> anyhow::Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = Vec::new();
            for e in &self.endpoints {
                if let Ok(mut c) = self.client(e).await {
                    if let Ok(d) = c.dump(pb::DumpRequest {}).await {
                        leaders.push(d.into_inner().leader_id);
                    }
                }
            }
            if leaders.len() == self.endpoints.len()
                && leaders[0] != 0
                && leaders.iter().all(|l| *l == leaders[0])
            {
                return Ok(leaders[0]);
            }
            if Instant::now() > deadline {
                anyhow::bail!("the controllers elected no leader within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The `p` quantile (0..=1) of `sorted`, nearest rank.
pub(super) fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
