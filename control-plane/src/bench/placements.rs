//! `ephemera bench placements`: committed placements per second through a
//! real Raft group. Starts N controller processes (this binary) with durable
//! storage on loopback, registers simulated nodes, deploys one function, then
//! C concurrent clients each commit `Place` + `Release` pairs through all the
//! controllers in turn (followers forward to the leader). Prints throughput
//! and the latency of each `Place`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use ephemera_proto::v1 as pb;
use ephemera_proto::v1::node_registry_client::NodeRegistryClient;
use serde_json::json;
use tonic::transport::Channel;

use ephemera_trust::{anonymous_endpoint, member_endpoint, ClusterCa, Expect, Identity, Role};

use crate::client::{self, Client};

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct PlacementBench {
    /// Controllers in the Raft group.
    pub controllers: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// How long to run.
    pub duration: Duration,
    /// Simulated nodes.
    pub nodes: usize,
}

/// Controller processes that are killed and whose data is removed on drop.
struct Group {
    procs: Vec<std::process::Child>,
    data: tempfile::TempDir,
    endpoints: Vec<String>,
    /// The group's CA: controllers' certificates, and the simulated nodes'.
    ca: ClusterCa,
}

impl Drop for Group {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn start_group(n: u64, token: &str) -> anyhow::Result<Group> {
    let data = tempfile::tempdir().context("creating a temp dir for the controllers")?;
    let exe = std::env::current_exe().context("locating the ephemera binary")?;
    let ports = ephemera_sys::net::free_ports(n as usize)?;
    let addrs: BTreeMap<u64, String> = (1..=n)
        .zip(ports)
        .map(|(id, port)| (id, format!("127.0.0.1:{port}")))
        .collect();
    let members: Vec<String> = addrs.iter().map(|(i, a)| format!("{i}={a}")).collect();
    let ca = ClusterCa::init(&data.path().join("ca"))?;
    let mut procs = Vec::new();
    for (id, addr) in &addrs {
        let dir = data.path().join(format!("c{id}"));
        ca.ensure_member(&Identity::controller(*id)?, &[], &dir.join("tls"))?;
        let child = std::process::Command::new(&exe)
            .args(["controller", "--id", &id.to_string(), "--listen", addr])
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--bootstrap",
                &members.join(","),
                "--node-timeout-secs",
                "3600",
            ])
            .env("EPHEMERA_LOG", "error,openraft=off")
            .env(crate::auth::ADMIN_TOKEN_ENV, token)
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting a controller process")?;
        procs.push(child);
    }
    let endpoints = addrs.values().map(|a| format!("https://{a}")).collect();
    Ok(Group {
        procs,
        data,
        endpoints,
        ca,
    })
}

impl Group {
    /// A client channel to `endpoint` (TLS against the group's CA).
    async fn connect(&self, endpoint: &str) -> anyhow::Result<Channel> {
        Ok(
            anonymous_endpoint(self.ca.cert_pem(), endpoint, &Expect::ClientApi)?
                .tcp_nodelay(true)
                .connect()
                .await?,
        )
    }

    /// Registers simulated node `node` with its own certificate.
    async fn register(&self, node: &str) -> anyhow::Result<()> {
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
}

fn client(channel: Channel, token: &str) -> anyhow::Result<Client> {
    Ok(client::with_token(channel, Some(token))?)
}

async fn wait_ready(group: &Group, token: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = Vec::new();
        for e in &group.endpoints {
            if let Ok(ch) = group.connect(e).await {
                if let Ok(d) = client(ch, token)?.dump(pb::DumpRequest {}).await {
                    leaders.push(d.into_inner().leader_id);
                }
            }
        }
        if leaders.len() == group.endpoints.len()
            && leaders[0] != 0
            && leaders.iter().all(|l| *l == leaders[0])
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("the controllers elected no leader within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the benchmark and prints its figures.
pub async fn run(cfg: PlacementBench, as_json: bool) -> anyhow::Result<()> {
    if cfg.controllers == 0 || cfg.clients == 0 || cfg.nodes == 0 {
        anyhow::bail!("--controllers, --clients and --nodes must be at least 1");
    }
    let token = crate::auth::new_token();
    let group = start_group(cfg.controllers, &token)?;
    wait_ready(&group, &token).await?;
    let first = group.connect(&group.endpoints[0]).await?;
    for i in 1..=cfg.nodes {
        group.register(&format!("sim-{i}")).await?;
    }
    let spec = pb::FunctionSpec {
        tenant: "bench".into(),
        name: "f".into(),
        cmd: "true".into(),
        memory_bytes: 128 << 20,
        ..Default::default()
    };
    let code = vec![pb::CodeFile {
        path: "f".into(),
        mode: 0o644,
        data: b"x".to_vec(),
    }];
    client(first, &token)?
        .deploy_function(pb::DeployRequest {
            spec: Some(spec),
            code,
        })
        .await
        .context("deploying the bench function")?;

    let mut channels = Vec::new();
    for e in &group.endpoints {
        channels.push(group.connect(e).await?);
    }
    let deadline = Instant::now() + cfg.duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..cfg.clients {
        let mut client = client(channels[c % channels.len()].clone(), &token)?;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let id = format!("c{c}-{i}");
                i += 1;
                let t = Instant::now();
                let placed = client
                    .place(pb::PlaceRequest {
                        tenant: "bench".into(),
                        name: "f".into(),
                        invocation_id: id.clone(),
                    })
                    .await;
                if placed.is_err() {
                    errors += 1;
                    continue;
                }
                latencies.push(t.elapsed());
                if client
                    .release(pb::ReleaseRequest { invocation_id: id })
                    .await
                    .is_err()
                {
                    errors += 1;
                }
            }
            (latencies, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.context("a bench client failed")?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let placements = latencies.len() as f64;
    // Every placement is two committed commands: Schedule and Complete.
    let out = json!({
        "controllers": cfg.controllers,
        "clients": cfg.clients,
        "seconds": elapsed,
        "placements": latencies.len(),
        "placements_per_sec": placements / elapsed,
        "commands_per_sec": 2.0 * placements / elapsed,
        "place_p50_ms": percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        "place_p99_ms": percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        "errors": errors,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} controllers (sled, fsync), {} clients, {:.1} s: {} placements = {:.0} placements/s ({:.0} commits/s); Place latency p50 {:.2} ms, p99 {:.2} ms; {} errors",
            cfg.controllers,
            cfg.clients,
            elapsed,
            latencies.len(),
            placements / elapsed,
            2.0 * placements / elapsed,
            out["place_p50_ms"].as_f64().unwrap_or(0.0),
            out["place_p99_ms"].as_f64().unwrap_or(0.0),
            errors
        );
    }
    drop(group);
    Ok(())
}
