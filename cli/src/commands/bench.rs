//! `ephemera bench …`: each arm runs one benchmark and prints its report.

use anyhow::Context;
use ephemera_control_plane::bench;

use crate::args::BenchCmd;
use crate::artifacts;

/// The node-agent benches' options, with the proxy and the intercept
/// library found next to this binary.
fn mix_options(bench: &str) -> anyhow::Result<ephemera_bench::MixOptions> {
    let lib = artifacts::intercept_lib()
        .with_context(|| format!("{bench} needs libephemera_intercept.so next to this binary"))?;
    Ok(ephemera_bench::MixOptions::new(
        artifacts::proxy_bin()?,
        lib,
    ))
}

/// Prints a bench report as JSON or as its text (which ends in a newline).
fn print_report(
    report: &(impl serde::Serialize + std::fmt::Display),
    json: bool,
) -> anyhow::Result<()> {
    if json {
        crate::output::json(report)
    } else {
        crate::output::line(format_args!("{}", report.to_string().trim_end()));
        Ok(())
    }
}

/// Runs one bench.
pub async fn run(command: BenchCmd) -> anyhow::Result<()> {
    match command {
        BenchCmd::Sharing(a) => {
            let mut opts = mix_options("bench sharing")?;
            opts.io_ops = a.io_ops;
            opts.io_file_mib = a.io_file_mib;
            opts.repetitions = a.repetitions.max(1);
            opts.cpu_ab_rounds = a.cpu_ab_rounds;
            let report = ephemera_bench::sharing_mix(opts).await?;
            print_report(&report, a.json)
        }
        BenchCmd::Cpu(a) => {
            let mut opts = mix_options("bench cpu")?;
            opts.cpu_ab_rounds = a.rounds;
            opts.cpu_ab_ms = a.ms;
            let report = ephemera_bench::cpu_interleaved(opts).await?;
            print_report(&report, a.json)
        }
        BenchCmd::Sandbox(a) => {
            let mix = mix_options("bench sandbox")?;
            let report = ephemera_bench::sandbox_cost(ephemera_bench::SandboxOptions {
                proxy_bin: mix.proxy_bin,
                intercept_lib: mix.intercept_lib,
                rounds: a.rounds,
                warm: a.warm,
            })
            .await?;
            print_report(&report, a.json)
        }
        BenchCmd::Tier(a) => {
            let bench = artifacts::tool("tier-bench")?;
            let status = std::process::Command::new(&bench)
                .args(&a.args)
                .status()
                .with_context(|| format!("running {}", bench.display()))?;
            if !status.success() {
                anyhow::bail!("{} failed: {status}", bench.display());
            }
            Ok(())
        }
        BenchCmd::Placements(a) => {
            let cfg = bench::placements::PlacementBench {
                controllers: a.controllers,
                clients: a.clients,
                duration: std::time::Duration::from_secs(a.seconds),
                nodes: a.nodes,
            };
            bench::placements::run(cfg, a.json).await
        }
        BenchCmd::Invoke(a) => {
            let cfg = bench::invoke::InvokeBench {
                controllers: a.controllers,
                clients: a.clients,
                via_follower: a.via == "follower",
                invocations: a.invocations,
                warmup: a.warmup,
                inline_release: a.inline_release,
            };
            bench::invoke::run(cfg, a.json).await
        }
        BenchCmd::Failover(a) => bench::failover::run(a.kills, a.json).await,
        BenchCmd::Scheduler(a) => match a.trace {
            Some(trace) => bench::replay(a.policy, a.nodes, a.node_memory, &trace, a.json),
            None => bench::time_decisions(a.policy, &[10, 100, 1_000, 10_000], a.json),
        },
    }
}
