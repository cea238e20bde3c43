//! The thesis's mixed trace in every sharing scope (issue 5; the CLI's
//! `ephemera bench sharing`).
//!
//! [`sharing_mix`] reproduces the thesis's mixed trace (§5.4, §5.5;
//! `shared/traces/input_manager_mix_*.txt`): one tenant, a CPU task
//! (`create cpu_task 300 100`: T_lim 300 MiB, U_max 100 MiB; big-integer
//! factorial of 5000) and an I/O task (`create io_task 150 128 5000`: T_lim
//! 150 MiB, U_max 128 MiB, F_max 5000 MiB; a 128 MiB file, 500 000 random
//! 8 KiB `lseek`+`write`, then 500 000 random 8 KiB `lseek`+`read`, as in
//! thesis §5.3.1), each invoked twice, concurrently: the CPU invocation starts
//! first and runs longer than the I/O one, so it is a running harvest-pool
//! instance while the I/O task needs memory. Both tasks are in
//! `workloads/mix.py`.
//!
//! Everything is real: the process runtime (memory cgroups when the host
//! has them), `ephemera-proxy`, the Python launcher and, except in the disk
//! baseline, `libephemera_intercept.so` preloaded; invocations go through the
//! agent's `Run` handler and its tenant actor. Latency is the wall time of
//! `Run` on a warm instance.
//!
//! Scenarios, each on a fresh agent (fresh instances and pool):
//!
//! | name | tier | scope | what it shows |
//! |---|---|---|---|
//! | `disk` | no preload, tmp dir on disk | none | the baseline (thesis: OverlayFS) |
//! | `none` | yes | none | the tier alone |
//! | `function` | yes | function | CPU and I/O are different functions: nothing to share |
//! | `workflow` | yes | workflow | both in one workflow, running concurrently: they share |
//! | `workflow-seq` | yes | workflow | the thesis's Fig. 5.9 workflow: CPU *then* I/O, never concurrent, so no lender is running when the I/O task needs memory |
//! | `tenant` | yes | tenant | any two instances of the tenant share |
//!
//! Plus the CPU task's latency measured interleaved ([`crate::cpu`]: the
//! preload's and lending's cost, each as a median ratio), and the tenant
//! actor's decision time per event ([`crate::decision`], pure pool code;
//! meaningful only in a release build).

mod report;

pub use report::{MixReport, ScenarioReport};

use std::path::Path;

use ephemera_node_agent::SharingScope;
use ephemera_proto::v1::CodeFile;
use ephemera_sys::Driver;

use crate::cpu;
use crate::decision::{decision_time, DecisionTime};
use crate::error::BenchError;
use crate::node::{cpu_next_to_idle_io, run_one, wait_busy, Node};
use crate::options::MixOptions;
use crate::stats::{loadavg, mean};
use crate::workload::{cpu_input, io_input, prepare, spec, MIB};

/// One scenario's setup.
#[derive(Debug, Clone)]
struct Scenario {
    /// Its row in the report.
    name: &'static str,
    /// The intercept is preloaded (`false`: the disk baseline).
    tier: bool,
    /// Which instances may share.
    scope: SharingScope,
    /// Both functions belong to the workflow `mix`.
    workflow: bool,
    /// The CPU task runs before the I/O task instead of beside it.
    sequential: bool,
    /// Also time the CPU task next to an idle borrower.
    cpu_probe: bool,
}

/// The `phases` of an I/O task's result, in ms.
fn phase_ms(result_json: &str) -> Option<[f64; 3]> {
    let v: serde_json::Value = serde_json::from_str(result_json).ok()?;
    let p = v.get("phases")?.as_array()?;
    let at = |i: usize| p.get(i)?.as_f64().map(|s| s * 1e3);
    Some([at(0)?, at(1)?, at(2)?])
}

/// Picks the CPU rounds: one CPU invocation lasts 2× an I/O invocation in
/// the tier. Runs on its own agent (tier, no sharing).
async fn calibrate(
    o: &MixOptions,
    dir: &Path,
    code: &[CodeFile],
    digest: &str,
) -> Result<u64, BenchError> {
    let node = Node::start(o, dir, "calibrate", true, SharingScope::None)?;
    let result = async {
        let cpu = spec(o, "cpu_task", true, false, digest);
        let io = spec(o, "io_task", false, false, digest);
        let probe = 20u64;
        run_one(&node.service, "calibrate", &cpu, code, cpu_input(o, 1)).await?;
        let (_, t_cpu) =
            run_one(&node.service, "calibrate", &cpu, &[], cpu_input(o, probe)).await?;
        let (_, t_io) = run_one(&node.service, "calibrate", &io, &[], io_input(o)).await?;
        let per_round = t_cpu.as_secs_f64() / probe as f64;
        let rounds = (2.0 * t_io.as_secs_f64() / per_round.max(1e-9)).ceil() as u64;
        tracing::info!(
            cpu_round_ms = per_round * 1e3,
            io_ms = t_io.as_secs_f64() * 1e3,
            rounds,
            "calibrated the CPU task"
        );
        Ok(rounds.max(1))
    }
    .await;
    node.stop().await;
    result
}

async fn run_scenario(
    o: &MixOptions,
    dir: &Path,
    sc: &Scenario,
    code: &[CodeFile],
    digest: &str,
    cpu_rounds: u64,
) -> Result<(ScenarioReport, bool), BenchError> {
    let mut node = Node::start(o, dir, sc.name, sc.tier, sc.scope)?;
    let cgroups = !matches!(*node.driver, Driver::Unavailable { .. });
    let result = async {
        let cpu = spec(o, "cpu_task", true, sc.workflow, digest);
        let io = spec(o, "io_task", false, sc.workflow, digest);
        // `create`: start both instances (warm-up invocations, not measured).
        let first: &[CodeFile] = if node.code_sent { &[] } else { code };
        run_one(&node.service, sc.name, &cpu, first, cpu_input(o, 1)).await?;
        node.code_sent = true;
        let tiny = serde_json::json!({ "size_mib": 1, "ops": 10 });
        run_one(&node.service, sc.name, &io, &[], tiny).await?;
        let (mut io_ms, mut cpu_ms, mut phase_sum) = (Vec::new(), Vec::new(), [0.0; 3]);
        let (mut limit, mut last_io, mut cpu_first) = (0u64, None, 0usize);
        for _ in 0..o.repetitions {
            let (io_reply, io_t, cpu_t) = if sc.sequential {
                let (_, cpu_t) =
                    run_one(&node.service, sc.name, &cpu, &[], cpu_input(o, cpu_rounds)).await?;
                let (r, io_t) = run_one(&node.service, sc.name, &io, &[], io_input(o)).await?;
                (r, io_t, cpu_t)
            } else {
                let svc = node.service.clone();
                let (name, c, input) = (sc.name.to_string(), cpu.clone(), cpu_input(o, cpu_rounds));
                let cpu_run =
                    tokio::spawn(async move { run_one(&svc, &name, &c, &[], input).await });
                wait_busy(&node.service, "cpu_task").await?;
                let io_res = run_one(&node.service, sc.name, &io, &[], io_input(o)).await;
                if cpu_run.is_finished() {
                    cpu_first += 1;
                }
                let cpu_res = cpu_run
                    .await
                    .map_err(|e| BenchError::Setup(format!("cpu task join: {e}")))?;
                let (r, io_t) = io_res?;
                let (_, cpu_t) = cpu_res?;
                (r, io_t, cpu_t)
            };
            io_ms.push(io_t.as_secs_f64() * 1e3);
            let phases = phase_ms(&io_reply.result_json).ok_or_else(|| {
                BenchError::Setup(format!("io_task result: {}", io_reply.result_json))
            })?;
            for (sum, p) in phase_sum.iter_mut().zip(phases) {
                *sum += p / o.repetitions as f64;
            }
            cpu_ms.push(cpu_t.as_secs_f64() * 1e3);
            if let Some(t) = &io_reply.tier {
                limit = limit.max(t.mem_limit_bytes);
            }
            last_io = io_reply.tier;
        }
        let mut alone_ms = Vec::new();
        let mut cpu_limit = o.cpu_limit_mib * MIB;
        if sc.cpu_probe {
            for _ in 0..o.repetitions {
                let (t, lim) =
                    cpu_next_to_idle_io(&node, sc.name, &cpu, &io, cpu_input(o, cpu_rounds))
                        .await?;
                alone_ms.push(t.as_secs_f64() * 1e3);
                cpu_limit = cpu_limit.min(lim);
            }
        }
        let t = last_io.unwrap_or_default();
        Ok(ScenarioReport {
            name: sc.name.to_string(),
            tier: sc.tier,
            scope: sc.scope,
            cpu_ended_first: cpu_first,
            cpu_idle_partner_mean_ms: (!alone_ms.is_empty()).then(|| mean(&alone_ms)),
            cpu_idle_partner_ms: alone_ms,
            cpu_limit_idle_partner_mib: cpu_limit as f64 / MIB as f64,
            io_mean_ms: mean(&io_ms),
            io_phases_ms: phase_sum,
            cpu_mean_ms: mean(&cpu_ms),
            io_ms,
            cpu_ms,
            io_limit_mib: if limit > 0 {
                limit as f64 / MIB as f64
            } else {
                o.io_limit_mib as f64
            },
            io_tier_bytes: t.bytes_read + t.bytes_written,
            io_evictions: t.evictions,
            io_files_mapped: t.files_mapped,
        })
    }
    .await;
    node.stop().await;
    result.map(|r| (r, cgroups))
}

/// Runs the thesis's mixed trace in every scenario and measures the pool's
/// decision time. Takes minutes with the default (thesis) sizes.
pub async fn sharing_mix(opts: MixOptions) -> Result<MixReport, BenchError> {
    let load_before = loadavg();
    let (opts, work, code, digest) = prepare(opts)?;
    let dir = work.path.clone();
    let cpu_rounds = match opts.cpu_rounds {
        Some(r) => r,
        None => calibrate(&opts, &dir, &code, &digest).await?,
    };
    let mut scenarios = vec![
        Scenario {
            name: "disk",
            tier: false,
            scope: SharingScope::None,
            workflow: false,
            sequential: false,
            cpu_probe: true,
        },
        Scenario {
            name: "none",
            tier: true,
            scope: SharingScope::None,
            workflow: false,
            sequential: false,
            cpu_probe: true,
        },
        Scenario {
            name: "function",
            tier: true,
            scope: SharingScope::Function,
            workflow: false,
            sequential: false,
            cpu_probe: false,
        },
        Scenario {
            name: "workflow",
            tier: true,
            scope: SharingScope::Workflow,
            workflow: true,
            sequential: false,
            cpu_probe: false,
        },
    ];
    if opts.sequential_workflow {
        scenarios.push(Scenario {
            name: "workflow-seq",
            tier: true,
            scope: SharingScope::Workflow,
            workflow: true,
            sequential: true,
            cpu_probe: false,
        });
    }
    scenarios.push(Scenario {
        name: "tenant",
        tier: true,
        scope: SharingScope::Tenant,
        workflow: false,
        sequential: false,
        cpu_probe: true,
    });
    let mut rows = Vec::new();
    let mut cgroups = true;
    for sc in &scenarios {
        let (row, cg) = run_scenario(&opts, &dir, sc, &code, &digest, cpu_rounds).await?;
        tracing::info!(
            scenario = sc.name,
            io_ms = row.io_mean_ms,
            cpu_ms = row.cpu_mean_ms,
            "scenario done"
        );
        cgroups &= cg;
        rows.push(row);
    }
    let cpu_ab = if opts.cpu_ab_rounds > 0 {
        Some(cpu::cpu_ab(&opts, &dir, &code, &digest).await?)
    } else {
        None
    };
    let rounds = opts.decision_rounds.max(1);
    let decision = [1usize, 10]
        .into_iter()
        .map(|n| DecisionTime {
            instances: n,
            ns_per_event: decision_time(n, rounds).as_nanos() as f64,
        })
        .collect();
    Ok(MixReport {
        options: opts,
        load_before,
        load_after: loadavg(),
        cpu_rounds,
        cgroups,
        debug_build: cfg!(debug_assertions),
        scenarios: rows,
        cpu_ab,
        decision,
    })
}
