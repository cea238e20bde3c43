//! The CPU task's latency, measured interleaved (the CLI's `ephemera bench
//! cpu`, and part of [`sharing_mix`](crate::sharing_mix)): does Ephemera slow a
//! CPU-heavy function down, by its preload or by lending its memory?
//!
//! Between separate runs the CPU task's time varies by ±25 % on a shared
//! machine, far more than the 2 % the issue asks about. So the three
//! conditions run in rounds, one invocation of each per round, in an order
//! that rotates from round to round, on instances that stay warm throughout:
//!
//! - `disk`: no preload, nothing borrowing (its own agent);
//! - `tier`: the intercept preloaded, nothing borrowing (tenant scope);
//! - `lending`: the same instance as `tier` while an I/O instance of the
//!   tenant holds an idle invocation and borrows from it.
//!
//! A round yields two ratios, `tier / disk` and `lending / tier`; drift over
//! the run affects both sides of a ratio alike. The report gives their
//! median and spread.

use std::fmt;

use serde::Serialize;

use ephemera_node_agent::SharingScope;
use ephemera_proto::v1::CodeFile;

use crate::error::BenchError;
use crate::node::{cpu_next_to_idle_io, run_one, Node};
use crate::options::MixOptions;
use crate::stats::{median, pct, spread};
use crate::workload::{cpu_input, prepare, spec, MIB};

/// One ratio over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct RatioSummary {
    /// `(b / a − 1)·100` per round.
    pub change_pct: Vec<f64>,
    /// Their median.
    pub median_pct: f64,
    /// The lowest and highest.
    pub min_pct: f64,
    /// See `min_pct`.
    pub max_pct: f64,
}

impl RatioSummary {
    fn new(a: &[f64], b: &[f64]) -> RatioSummary {
        let change_pct: Vec<f64> = a.iter().zip(b).map(|(a, b)| pct(*b, *a)).collect();
        let (median_pct, min_pct, max_pct) = spread(&change_pct);
        RatioSummary {
            median_pct,
            min_pct,
            max_pct,
            change_pct,
        }
    }
}

/// What [`cpu_interleaved`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct CpuAbReport {
    /// Rounds run.
    pub rounds: usize,
    /// Factorials per CPU invocation.
    pub cpu_rounds: u64,
    /// CPU latency without the preload (ms, one per round).
    pub disk_ms: Vec<f64>,
    /// CPU latency with the preload, lending nothing (ms).
    pub tier_ms: Vec<f64>,
    /// CPU latency with the preload while lending (ms).
    pub lending_ms: Vec<f64>,
    /// The CPU instance's highest limit while lending (MiB): below its
    /// T_lim in every round, or the round did not lend.
    pub lending_limit_mib: f64,
    /// `tier` against `disk`: the preload's cost.
    pub preload: RatioSummary,
    /// `lending` against `tier`: lending's cost.
    pub lending: RatioSummary,
}

impl fmt::Display for CpuAbReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cpu task, interleaved ({} rounds of disk / tier / tier while lending, {} factorials each; lender's limit at most {:.0} MiB):",
            self.rounds, self.cpu_rounds, self.lending_limit_mib
        )?;
        let median_of = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            median(&v)
        };
        writeln!(
            f,
            "  median ms: disk {:.1}, tier {:.1}, lending {:.1}",
            median_of(&self.disk_ms),
            median_of(&self.tier_ms),
            median_of(&self.lending_ms)
        )?;
        for (what, r) in [
            ("preload (tier vs disk)", &self.preload),
            ("lending (lending vs tier)", &self.lending),
        ] {
            writeln!(
                f,
                "  {what:<28} median {:+.2}% (rounds: {:+.2}% .. {:+.2}%){}",
                r.median_pct,
                r.min_pct,
                r.max_pct,
                if r.median_pct.abs() <= 2.0 {
                    "  within 2%"
                } else {
                    "  NOT within 2%"
                }
            )?;
        }
        Ok(())
    }
}

/// Only the interleaved CPU measurement ([`CpuAbReport`]), with
/// `opts.cpu_ab_rounds` rounds (at least 1).
pub async fn cpu_interleaved(opts: MixOptions) -> Result<CpuAbReport, BenchError> {
    let (mut opts, work, code, digest) = prepare(opts)?;
    opts.cpu_ab_rounds = opts.cpu_ab_rounds.max(1);
    cpu_ab(&opts, &work.path, &code, &digest).await
}

/// The three conditions of a round.
#[derive(Debug, Clone, Copy)]
enum Condition {
    Disk,
    Tier,
    Lending,
}

/// Runs `opts.cpu_ab_rounds` rounds (see the module doc), each CPU
/// invocation lasting about `opts.cpu_ab_ms`. `dir` is the bench's work
/// directory.
pub(crate) async fn cpu_ab(
    o: &MixOptions,
    dir: &std::path::Path,
    code: &[CodeFile],
    digest: &str,
) -> Result<CpuAbReport, BenchError> {
    let disk = Node::start(o, dir, "ab-disk", false, SharingScope::None)?;
    let tier = match Node::start(o, dir, "ab-tier", true, SharingScope::Tenant) {
        Ok(n) => n,
        Err(e) => {
            disk.stop().await;
            return Err(e);
        }
    };
    let result = run_rounds(o, &disk, &tier, code, digest).await;
    disk.stop().await;
    tier.stop().await;
    result
}

async fn run_rounds(
    o: &MixOptions,
    disk: &Node,
    tier: &Node,
    code: &[CodeFile],
    digest: &str,
) -> Result<CpuAbReport, BenchError> {
    const NAME: &str = "cpu-ab";
    let cpu = spec(o, "cpu_task", true, false, digest);
    let io = spec(o, "io_task", false, false, digest);
    // Warm both CPU instances and the I/O instance (not measured).
    let warm = cpu_input(o, 1);
    run_one(&disk.service, NAME, &cpu, code, warm.clone()).await?;
    run_one(&tier.service, NAME, &cpu, code, warm).await?;
    let tiny = serde_json::json!({ "size_mib": 1, "ops": 10 });
    run_one(&tier.service, NAME, &io, &[], tiny).await?;
    const PROBE: u64 = 10;
    let (_, t) = run_one(&tier.service, NAME, &cpu, &[], cpu_input(o, PROBE)).await?;
    let per_round_ms = t.as_secs_f64() * 1e3 / PROBE as f64;
    let cpu_rounds = ((o.cpu_ab_ms as f64 / per_round_ms.max(1e-6)).ceil() as u64).max(1);

    let order = [Condition::Disk, Condition::Tier, Condition::Lending];
    let (mut disk_ms, mut tier_ms, mut lending_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut lending_limit = 0u64;
    let rounds = o.cpu_ab_rounds;
    for round in 0..rounds {
        for k in 0..order.len() {
            let input = cpu_input(o, cpu_rounds);
            match order[(round + k) % order.len()] {
                Condition::Disk => {
                    let (_, t) = run_one(&disk.service, NAME, &cpu, &[], input).await?;
                    disk_ms.push(t.as_secs_f64() * 1e3);
                }
                Condition::Tier => {
                    let (_, t) = run_one(&tier.service, NAME, &cpu, &[], input).await?;
                    tier_ms.push(t.as_secs_f64() * 1e3);
                }
                Condition::Lending => {
                    let (t, limit) = cpu_next_to_idle_io(tier, NAME, &cpu, &io, input).await?;
                    lending_ms.push(t.as_secs_f64() * 1e3);
                    lending_limit = lending_limit.max(limit);
                }
            }
        }
    }
    Ok(CpuAbReport {
        rounds,
        cpu_rounds,
        lending_limit_mib: lending_limit as f64 / MIB as f64,
        preload: RatioSummary::new(&disk_ms, &tier_ms),
        lending: RatioSummary::new(&tier_ms, &lending_ms),
        disk_ms,
        tier_ms,
        lending_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_per_round_with_their_median() {
        let r = RatioSummary::new(&[100.0, 200.0, 100.0], &[110.0, 200.0, 95.0]);
        assert_eq!(r.change_pct.len(), 3);
        assert!((r.change_pct[0] - 10.0).abs() < 1e-9);
        assert!((r.median_pct - 0.0).abs() < 1e-9);
        assert!((r.min_pct + 5.0).abs() < 1e-9 && (r.max_pct - 10.0).abs() < 1e-9);
    }
}
