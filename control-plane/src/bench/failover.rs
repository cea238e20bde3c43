//! `ephemera bench failover`: how long a leader's SIGKILL interrupts
//! invocations. Three controller processes and a real agent (as in
//! [`invoke`](super::invoke)); each round SIGKILLs the leader, then invokes
//! the no-op function through the survivors, on connections made before the
//! kill, until one invocation succeeds: the time from the signal to that
//! reply is the round's fail-over. The killed controller is restarted on
//! its data and every controller agrees on a leader before the next round.

use std::time::{Duration, Instant};

use anyhow::Context;
use ephemera_proto::v1 as pb;
use serde_json::json;

use super::group::{percentile, start_group};
use super::invoke::{deploy_noop, wait_agent_up};

/// How long one attempt through a survivor may take before the next is tried.
const ATTEMPT: Duration = Duration::from_millis(500);
/// How long one round may look for a successful invocation.
const ROUND_FOR: Duration = Duration::from_secs(60);

/// Runs `kills` rounds and prints the fail-over percentiles.
pub async fn run(kills: usize, as_json: bool) -> anyhow::Result<()> {
    if kills == 0 {
        anyhow::bail!("--kills must be at least 1");
    }
    let mut group = start_group(3, &[])?;
    group.wait_ready().await?;
    group.start_agent("bench-node")?;
    deploy_noop(&group).await?;
    wait_agent_up(&group, &group.endpoints[0]).await?;
    let mut times = Vec::new();
    for round in 0..kills {
        let leader = group.wait_ready().await?;
        let mut survivors = Vec::new();
        for id in (1..=3u64).filter(|id| *id != leader) {
            survivors.push((id, group.client(&group.endpoints[(id - 1) as usize]).await?));
        }
        // Warm: each survivor has served one invocation on its connection.
        for (id, client) in &mut survivors {
            client
                .invoke(invoke_request(&format!("warm-{round}-{id}")))
                .await
                .with_context(|| format!("warming controller {id}"))?;
        }
        let mut watchers = Vec::new();
        for (id, client) in &survivors {
            watchers.push(tokio::spawn(new_leader_seen(client.clone(), *id, leader)));
        }
        let t = Instant::now();
        group.kill_controller(leader)?;
        let id = format!("failover-{round}");
        let mut turn = 0usize;
        let mut last = String::new();
        loop {
            if t.elapsed() > ROUND_FOR {
                anyhow::bail!(
                    "round {round}: no invocation succeeded within {ROUND_FOR:?}; last: {last}"
                );
            }
            let (via, client) = &mut survivors[turn % 2];
            turn += 1;
            let mut call = tonic::Request::new(invoke_request(&id));
            call.set_timeout(ATTEMPT);
            match client.invoke(call).await {
                Ok(_) => break,
                Err(s) if s.message().contains("already completed") => break,
                Err(s) => {
                    last = format!("controller {via}: {:?}: {}", s.code(), s.message());
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        let took = t.elapsed();
        times.push(took);
        let mut seen = Vec::new();
        for w in watchers {
            seen.push(match w.await {
                Ok(Some(d)) => format!("{:.0} ms", d.as_secs_f64() * 1e3),
                _ => "?".into(),
            });
        }
        if !as_json {
            println!(
                "kill {}/{kills}: leader {leader} SIGKILLed; an invocation succeeded through a survivor after {:.1} ms; survivors saw a new leader after {}",
                round + 1,
                took.as_secs_f64() * 1e3,
                seen.join(", ")
            );
        }
        group.restart_controller(leader)?;
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let out = json!({
        "kills": kills,
        "p50_ms": ms(percentile(&times, 0.5)),
        "p95_ms": ms(percentile(&times, 0.95)),
        "p99_ms": ms(percentile(&times, 0.99)),
        "min_ms": ms(times[0]),
        "max_ms": ms(*times.last().unwrap_or(&Duration::ZERO)),
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "leader SIGKILL → first successful invocation through a survivor, {kills} kills: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms (min {:.1}, max {:.1})",
            out["p50_ms"].as_f64().unwrap_or(0.0),
            out["p95_ms"].as_f64().unwrap_or(0.0),
            out["p99_ms"].as_f64().unwrap_or(0.0),
            out["min_ms"].as_f64().unwrap_or(0.0),
            out["max_ms"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// How long after this is called controller `id` (through `client`) first
/// names a leader other than `old`, polling every 5 ms (up to [`ROUND_FOR`]).
async fn new_leader_seen(mut client: crate::client::Client, id: u64, old: u64) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < ROUND_FOR {
        if let Ok(d) = client.dump(pb::DumpRequest {}).await {
            let leader = d.into_inner().leader_id;
            if leader != 0 && leader != old {
                return Some(t.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = id;
    None
}

fn invoke_request(id: &str) -> pb::InvokeRequest {
    pb::InvokeRequest {
        tenant: "bench".into(),
        name: "noop".into(),
        input_json: "{}".into(),
        invocation_id: id.to_string(),
    }
}
