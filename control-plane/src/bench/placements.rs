//! `ephemera bench placements`: committed placements per second through a
//! real Raft group, for each group size asked (by default one controller and
//! three, in the same run, so their ratio is measured on the same machine at
//! the same time). Each size starts its own controller processes (this
//! binary) with durable storage and mutual TLS on loopback, registers
//! simulated nodes, deploys one function, then C concurrent clients each
//! commit `Place` + `Release` pairs through all the controllers in turn
//! (followers forward to the leader). Prints throughput and the latency of
//! each `Place`.

use std::time::{Duration, Instant};

use anyhow::Context;
use ephemera_proto::v1 as pb;
use serde_json::{json, Value};

use super::group::{percentile, start_group};

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct PlacementBench {
    /// Group sizes to measure, one after the other.
    pub controllers: Vec<u64>,
    /// Concurrent clients.
    pub clients: usize,
    /// How long to run each size.
    pub duration: Duration,
    /// Simulated nodes.
    pub nodes: usize,
}

/// Runs the benchmark for each group size and prints its figures.
pub async fn run(cfg: PlacementBench, as_json: bool) -> anyhow::Result<()> {
    if cfg.controllers.is_empty() || cfg.controllers.contains(&0) {
        anyhow::bail!("--controllers must list group sizes of at least 1");
    }
    if cfg.clients == 0 || cfg.nodes == 0 {
        anyhow::bail!("--clients and --nodes must be at least 1");
    }
    let mut rows = Vec::new();
    for &n in &cfg.controllers {
        let row = run_one(n, &cfg).await?;
        if !as_json {
            print_row(&row);
        }
        rows.push(row);
    }
    let rate = |n: u64| {
        rows.iter()
            .find(|r| r["controllers"] == n)
            .and_then(|r| r["placements_per_sec"].as_f64())
    };
    let ratio = match (rate(1), rate(3)) {
        (Some(one), Some(three)) if three > 0.0 => Some(one / three),
        _ => None,
    };
    if as_json {
        let out = json!({ "runs": rows, "one_over_three": ratio });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if let Some(r) = ratio {
        println!("one controller / three controllers: {r:.2}x placements/s");
    }
    Ok(())
}

fn print_row(row: &Value) {
    let f = |k: &str| row[k].as_f64().unwrap_or(0.0);
    println!(
        "{} controller(s) (sled, fsync), {} clients, {:.1} s: {} placements = {:.0} placements/s ({:.0} commits/s); Place latency p50 {:.2} ms, p99 {:.2} ms; {} errors",
        row["controllers"],
        row["clients"],
        f("seconds"),
        row["placements"],
        f("placements_per_sec"),
        f("commands_per_sec"),
        f("place_p50_ms"),
        f("place_p99_ms"),
        row["errors"]
    );
}

async fn run_one(controllers: u64, cfg: &PlacementBench) -> anyhow::Result<Value> {
    let group = start_group(controllers, &[])?;
    group.wait_ready().await?;
    for i in 1..=cfg.nodes {
        group.register(&format!("sim-{i}")).await?;
    }
    group.deploy("f", "true", 128 << 20, ("f", b"x")).await?;

    let mut clients = Vec::new();
    for e in &group.endpoints {
        clients.push(group.client(e).await?);
    }
    let deadline = Instant::now() + cfg.duration;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..cfg.clients {
        let mut client = clients[c % clients.len()].clone();
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
    Ok(json!({
        "controllers": controllers,
        "clients": cfg.clients,
        "seconds": elapsed,
        "placements": latencies.len(),
        "placements_per_sec": placements / elapsed,
        "commands_per_sec": 2.0 * placements / elapsed,
        "place_p50_ms": percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        "place_p99_ms": percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        "errors": errors,
    }))
}
