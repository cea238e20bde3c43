//! What [`sharing_mix`](super::sharing_mix) measured, as data (serialised
//! to JSON by the CLI's `--json`) and as the text table it prints.

use std::fmt;

use ephemera_node_agent::SharingScope;
use serde::Serialize;

use crate::cpu::CpuAbReport;
use crate::decision::DecisionTime;
use crate::options::MixOptions;
use crate::stats::pct;

/// One scenario's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// `disk`, `none`, `function`, `workflow`, `workflow-seq`, `tenant`.
    pub name: String,
    /// The intercept was preloaded.
    pub tier: bool,
    /// The sharing scope.
    pub scope: SharingScope,
    /// I/O task latency per invocation (ms).
    pub io_ms: Vec<f64>,
    /// CPU task latency per invocation (ms).
    pub cpu_ms: Vec<f64>,
    /// Invocations where the CPU task ended before the I/O task (its loans
    /// were then rolled back while the I/O task still ran).
    pub cpu_ended_first: usize,
    /// CPU task latency while the I/O instance is busy but idle (it holds
    /// its loan and uses no CPU): the effect of lending alone (ms).
    pub cpu_idle_partner_ms: Vec<f64>,
    /// Mean of `cpu_idle_partner_ms`, if measured.
    pub cpu_idle_partner_mean_ms: Option<f64>,
    /// The CPU instance's lowest limit then (MiB): below T_lim when it lent.
    pub cpu_limit_idle_partner_mib: f64,
    /// Mean of `io_ms`.
    pub io_mean_ms: f64,
    /// The I/O task's own timing of its phases, mean over its invocations
    /// (ms): sequential write, random writes, random reads.
    pub io_phases_ms: [f64; 3],
    /// Mean of `cpu_ms`.
    pub cpu_mean_ms: f64,
    /// Largest memory limit the I/O instance had at the end of a run (MiB).
    pub io_limit_mib: f64,
    /// Bytes the I/O instance's tier served (cumulative over its runs).
    pub io_tier_bytes: u64,
    /// Tier evictions in the I/O instance (cumulative).
    pub io_evictions: u64,
    /// Files the I/O instance's tier mapped (cumulative).
    pub io_files_mapped: u64,
}

/// Everything [`sharing_mix`](super::sharing_mix) measured.
#[derive(Debug, Clone, Serialize)]
pub struct MixReport {
    /// The options used.
    pub options: MixOptions,
    /// 1-minute load average when the bench started (other work on the
    /// machine skews latencies).
    pub load_before: f64,
    /// 1-minute load average when it ended.
    pub load_after: f64,
    /// CPU factorials per invocation (given or calibrated).
    pub cpu_rounds: u64,
    /// Memory cgroups were available (limits enforced by the kernel).
    pub cgroups: bool,
    /// Built without optimisations: decision times are not meaningful.
    pub debug_build: bool,
    /// One row per scenario.
    pub scenarios: Vec<ScenarioReport>,
    /// The interleaved CPU measurement, unless skipped.
    pub cpu_ab: Option<CpuAbReport>,
    /// Decision time at 1 and 10 instances.
    pub decision: Vec<DecisionTime>,
}

impl MixReport {
    /// The scenario called `name`.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioReport> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// `(a / b − 1)·100` of two scenarios' mean I/O latency.
    pub fn io_change_pct(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.scenario(a)?, self.scenario(b)?);
        Some(pct(a.io_mean_ms, b.io_mean_ms))
    }

    /// `(a / b − 1)·100` of two scenarios' CPU latency next to an idle
    /// borrower.
    pub fn cpu_alone_change_pct(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.scenario(a)?, self.scenario(b)?);
        Some(pct(
            a.cpu_idle_partner_mean_ms?,
            b.cpu_idle_partner_mean_ms?,
        ))
    }

    /// `(a / b − 1)·100` of two scenarios' mean CPU latency.
    pub fn cpu_change_pct(&self, a: &str, b: &str) -> Option<f64> {
        let (a, b) = (self.scenario(a)?, self.scenario(b)?);
        Some(pct(a.cpu_mean_ms, b.cpu_mean_ms))
    }
}

impl fmt::Display for MixReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        writeln!(
            f,
            "sharing mix: cpu_task {} MiB (U {}), factorial {} x {} rounds; io_task {} MiB (U {}, F {}), {} MiB file, {} random 8 KiB writes + {} reads; {} invocations each{}{}",
            o.cpu_limit_mib,
            o.cpu_u_max_mib,
            o.cpu_n,
            self.cpu_rounds,
            o.io_limit_mib,
            o.io_u_max_mib,
            o.io_f_max_mib,
            o.io_file_mib,
            o.io_ops,
            o.io_ops,
            o.repetitions,
            if self.cgroups { "" } else { "; NO memory cgroups: limits not enforced" },
            if self.debug_build { "; DEBUG build" } else { "" },
        )?;
        writeln!(
            f,
            "{:<13} {:>5} {:>9} {:>10} {:>17} {:>10} {:>11} {:>9} {:>10} {:>14} {:>12}",
            "scenario",
            "tier",
            "scope",
            "io ms",
            "io seq/w/r** ms",
            "cpu ms",
            "io lim MiB",
            "io evict",
            "io mapped",
            "cpu alone* ms",
            "cpu lim MiB"
        )?;
        for s in &self.scenarios {
            writeln!(
                f,
                "{:<13} {:>5} {:>9} {:>10.1} {:>17} {:>10.1} {:>11.0} {:>9} {:>10} {:>14} {:>12}",
                s.name,
                if s.tier { "yes" } else { "no" },
                format!("{:?}", s.scope).to_lowercase(),
                s.io_mean_ms,
                format!(
                    "{:.0}/{:.0}/{:.0}",
                    s.io_phases_ms[0], s.io_phases_ms[1], s.io_phases_ms[2]
                ),
                s.cpu_mean_ms,
                s.io_limit_mib,
                s.io_evictions,
                s.io_files_mapped,
                s.cpu_idle_partner_mean_ms
                    .map_or("-".to_string(), |v| format!("{v:.1}")),
                s.cpu_idle_partner_mean_ms
                    .map_or("-".to_string(), |_| format!(
                        "{:.0}",
                        s.cpu_limit_idle_partner_mib
                    )),
            )?;
        }
        let show = |f: &mut fmt::Formatter<'_>, what: &str, v: Option<f64>| match v {
            Some(v) => writeln!(f, "  {what:<44} {v:+.2}%"),
            None => Ok(()),
        };
        writeln!(
            f,
            "  * cpu alone: the CPU task next to a busy but idle I/O instance (it borrows where the scope allows, uses no CPU)"
        )?;
        writeln!(
            f,
            "  ** the I/O task's own timing: sequential write, random writes, random reads"
        )?;
        writeln!(f, "ratios (this run):")?;
        show(
            f,
            "io: tier, no sharing vs disk",
            self.io_change_pct("none", "disk"),
        )?;
        show(
            f,
            "io: tier, tenant sharing vs disk",
            self.io_change_pct("tenant", "disk"),
        )?;
        show(
            f,
            "io: tier, tenant sharing vs no sharing",
            self.io_change_pct("tenant", "none"),
        )?;
        show(
            f,
            "io: function scope vs no sharing",
            self.io_change_pct("function", "none"),
        )?;
        show(
            f,
            "io: workflow scope vs no sharing",
            self.io_change_pct("workflow", "none"),
        )?;
        show(
            f,
            "io: sequential workflow vs no sharing",
            self.io_change_pct("workflow-seq", "none"),
        )?;
        show(
            f,
            "cpu: tenant sharing vs no sharing",
            self.cpu_change_pct("tenant", "none"),
        )?;
        show(
            f,
            "cpu: tier + tenant sharing vs disk",
            self.cpu_change_pct("tenant", "disk"),
        )?;
        show(
            f,
            "cpu alone*: lending (tenant) vs not (none)",
            self.cpu_alone_change_pct("tenant", "none"),
        )?;
        show(
            f,
            "cpu alone*: Ephemera (none) vs no preload (disk)",
            self.cpu_alone_change_pct("none", "disk"),
        )?;
        for s in self.scenarios.iter().filter(|s| s.cpu_ended_first > 0) {
            writeln!(
                f,
                "  WARNING {}: the CPU task ended before the I/O task in {} run(s): its loans were rolled back early",
                s.name, s.cpu_ended_first
            )?;
        }
        writeln!(
            f,
            "  load average (1 min) before / after:         {:.2} / {:.2}",
            self.load_before, self.load_after
        )?;
        if let Some(ab) = &self.cpu_ab {
            write!(f, "{ab}")?;
        }
        for d in &self.decision {
            writeln!(
                f,
                "  decision time per event, {:>2} instance(s):   {:.0} ns",
                d.instances, d.ns_per_event
            )?;
        }
        Ok(())
    }
}
