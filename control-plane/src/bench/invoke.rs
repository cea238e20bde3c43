//! `ephemera bench invoke`: the latency of a warm no-op invocation, end to
//! end, and where it goes. Starts N controller processes and one real
//! `ephemera agent` process (this binary; process runtime, confined
//! instances, mutual TLS everywhere), deploys a Python no-op function, warms
//! it, then C clients in this process invoke it back to back through the
//! leader or a follower. The latency is the client's own clock around the
//! gRPC call (no process start). Each reply carries the stages the
//! controller and the agent timed (`ephemera_domain::stages`), so the time
//! is split into:
//!
//! - `client↔controller`: what the client waited beyond the controller's
//!   handler (TLS, HTTP/2, encoding, the client's runtime);
//! - `auth`, `lookup`, `spawn`: the token check, the function's record, the
//!   invocation's own task;
//! - `schedule`: the Raft `Schedule` commit (forwarding from a follower,
//!   batching, replication, fsync, apply);
//! - `controller→agent`: the agent RPC beyond the agent's handler;
//! - `agent.prepare`: checks and the code cache; `tenant actor`: the tenant's
//!   actor, its worker and the instance's proxy socket, beyond the launcher;
//! - `launcher`: the function in the warm launcher, as the proxy timed it;
//! - `release`: queueing the `Complete` (it commits after the reply).

use std::time::{Duration, Instant};

use anyhow::Context;
use ephemera_domain::stages::Stages;
use ephemera_proto::v1 as pb;
use serde_json::{json, Value};

use super::group::{percentile, start_group, Group};

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct InvokeBench {
    /// Controllers in the Raft group.
    pub controllers: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Invoke through a follower instead of the leader.
    pub via_follower: bool,
    /// Measured invocations per client (after the warm-up).
    pub invocations: usize,
    /// Unmeasured invocations per client first.
    pub warmup: usize,
    /// Releases commit before the reply (the old path), for A/B runs.
    pub inline_release: bool,
}

/// The no-op function.
const HANDLER: &str = "def main(args):\n    return {}\n";

/// One measured invocation: the client's latency and the server's stages, µs.
struct Sample {
    total_us: u64,
    stages: Stages,
}

/// Runs the benchmark and prints its figures.
pub async fn run(cfg: InvokeBench, as_json: bool) -> anyhow::Result<()> {
    if cfg.controllers == 0 || cfg.clients == 0 || cfg.invocations == 0 {
        anyhow::bail!("--controllers, --clients and --invocations must be at least 1");
    }
    if cfg.via_follower && cfg.controllers < 2 {
        anyhow::bail!("--via follower needs at least 2 controllers");
    }
    let env: &[(&str, &str)] = if cfg.inline_release {
        &[(crate::controller::INLINE_RELEASE_ENV, "1")]
    } else {
        &[]
    };
    let mut group = start_group(cfg.controllers, env)?;
    let leader = group.wait_ready().await?;
    group.start_agent("bench-node")?;
    let via = if cfg.via_follower {
        (1..=cfg.controllers)
            .find(|id| *id != leader)
            .unwrap_or(leader)
    } else {
        leader
    };
    let endpoint = group.endpoints[(via - 1) as usize].clone();
    deploy_noop(&group).await?;
    wait_agent_up(&group, &endpoint).await?;

    let mut tasks = Vec::new();
    for c in 0..cfg.clients {
        let client = group.client(&endpoint).await?;
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(
            async move { client_loop(client, c, &cfg).await },
        ));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.context("a bench client panicked")??);
    }
    let elapsed = started.elapsed();
    let report = report(&cfg, leader, via, &samples, elapsed);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report);
    }
    drop(group);
    Ok(())
}

pub(super) async fn deploy_noop(group: &Group) -> anyhow::Result<()> {
    let handler = ("handler.py", HANDLER.as_bytes());
    group
        .deploy("noop", "ephemera-python handler.py", 64 << 20, handler)
        .await
}

pub(super) async fn wait_agent_up(group: &Group, endpoint: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut client = group.client(endpoint).await?;
    loop {
        if let Ok(s) = client.status(pb::StatusRequest::default()).await {
            if s.into_inner().nodes.iter().any(|n| n.up) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("the agent did not register within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn client_loop(
    mut client: crate::client::Client,
    c: usize,
    cfg: &InvokeBench,
) -> anyhow::Result<Vec<Sample>> {
    let mut samples = Vec::with_capacity(cfg.invocations);
    for i in 0..cfg.warmup + cfg.invocations {
        let mut call = tonic::Request::new(pb::InvokeRequest {
            tenant: "bench".into(),
            name: "noop".into(),
            input_json: "{}".into(),
            invocation_id: format!("bench-c{c}-{i}"),
        });
        Stages::ask(call.metadata_mut());
        let t = Instant::now();
        let reply = client
            .invoke(call)
            .await
            .with_context(|| format!("invocation {i} of client {c}"))?;
        let total = t.elapsed();
        if i >= cfg.warmup {
            samples.push(Sample {
                total_us: total.as_micros() as u64,
                stages: Stages::from_metadata(reply.metadata()),
            });
        }
    }
    Ok(samples)
}

/// How to get one row's µs from a sample (`None`: the sample lacks a stage).
type Getter = Box<dyn Fn(&Sample) -> Option<i64>>;

/// The rows of the breakdown: a name and how to get its µs from a sample.
fn rows() -> Vec<(&'static str, Getter)> {
    let s = |name: &'static str| -> Getter {
        Box::new(move |x: &Sample| x.stages.get(name).map(|v| v as i64))
    };
    let diff = |a: &'static str, b: &[&'static str]| -> Getter {
        let b = b.to_vec();
        Box::new(move |x: &Sample| {
            let mut v = x.stages.get(a)? as i64;
            for name in &b {
                v -= x.stages.get(name)? as i64;
            }
            Some(v)
        })
    };
    vec![
        (
            "client↔controller (gRPC, TLS)",
            Box::new(|x: &Sample| Some(x.total_us as i64 - x.stages.get("controller")? as i64)),
        ),
        ("auth", s("auth")),
        ("spawn", s("spawn")),
        ("lookup", s("lookup")),
        ("schedule (Raft commit)", s("schedule")),
        (
            "controller→agent (gRPC, mTLS)",
            diff("agent_rpc", &["agent.prepare", "agent.tenant"]),
        ),
        ("agent prepare", s("agent.prepare")),
        (
            "tenant actor + worker + proxy",
            diff("agent.tenant", &["launcher"]),
        ),
        ("launcher (function)", s("launcher")),
        ("release (committed inline)", s("release")),
        ("release (queued)", s("release_queued")),
        ("controller handler total", s("controller")),
    ]
}

fn report(
    cfg: &InvokeBench,
    leader: u64,
    via: u64,
    samples: &[Sample],
    elapsed: Duration,
) -> Value {
    let mut totals: Vec<u64> = samples.iter().map(|s| s.total_us).collect();
    totals.sort_unstable();
    let ms = |us: u64| us as f64 / 1e3;
    let mut stages = Vec::new();
    for (name, get) in rows() {
        let mut v: Vec<i64> = samples.iter().filter_map(&get).collect();
        if v.is_empty() {
            continue;
        }
        v.sort_unstable();
        let mean = v.iter().sum::<i64>() as f64 / v.len() as f64;
        stages.push(json!({
            "stage": name,
            "p50_ms": percentile(&v, 0.5) as f64 / 1e3,
            "p99_ms": percentile(&v, 0.99) as f64 / 1e3,
            "mean_ms": mean / 1e3,
        }));
    }
    let mean = totals.iter().sum::<u64>() as f64 / totals.len().max(1) as f64;
    json!({
        "controllers": cfg.controllers,
        "clients": cfg.clients,
        "via": if via == leader { "leader" } else { "follower" },
        "via_controller": via,
        "release": if cfg.inline_release { "inline" } else { "after the reply" },
        "leader": leader,
        "invocations": samples.len(),
        "seconds": elapsed.as_secs_f64(),
        "per_sec": samples.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        "p50_ms": ms(percentile(&totals, 0.5)),
        "p95_ms": ms(percentile(&totals, 0.95)),
        "p99_ms": ms(percentile(&totals, 0.99)),
        "mean_ms": mean / 1e3,
        "max_ms": ms(totals.last().copied().unwrap_or(0)),
        "stages": stages,
    })
}

fn print_report(r: &Value) {
    let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
    println!(
        "warm no-op invocation, {} controller(s) via the {} (controller {}), release {}, {} client(s), {} invocations in {:.1} s ({:.0}/s):",
        r["controllers"],
        r["via"].as_str().unwrap_or("?"),
        r["via_controller"],
        r["release"].as_str().unwrap_or("?"),
        r["clients"],
        r["invocations"],
        f("seconds"),
        f("per_sec")
    );
    println!(
        "  client latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, mean {:.2} ms, max {:.2} ms",
        f("p50_ms"),
        f("p95_ms"),
        f("p99_ms"),
        f("mean_ms"),
        f("max_ms")
    );
    println!(
        "  {:<32} {:>9} {:>9} {:>9}",
        "STAGE", "p50 ms", "p99 ms", "mean ms"
    );
    for s in r["stages"].as_array().into_iter().flatten() {
        println!(
            "  {:<32} {:>9.3} {:>9.3} {:>9.3}",
            s["stage"].as_str().unwrap_or(""),
            s["p50_ms"].as_f64().unwrap_or(0.0),
            s["p99_ms"].as_f64().unwrap_or(0.0),
            s["mean_ms"].as_f64().unwrap_or(0.0)
        );
    }
}
