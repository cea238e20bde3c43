//! `ephemera run`: any command with its temporary files in the memory tier,
//! outside any cluster. Sets up the preload, a control block for the
//! counters, and (with `--cgroup`) a fresh memory cgroup of the given limit,
//! then runs the command and reports what the tier served.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use anyhow::Context;
use ephemera_control_block::ControlBlock;
use ephemera_sys::Driver;

use ephemera_domain::format_size;

use crate::args::RunArgs;
use crate::artifacts;

/// Runs the command; returns the exit code to exit with.
pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let Some(program) = args.command.first() else {
        anyhow::bail!("no command given: use `ephemera run [OPTIONS] -- CMD ARGS...`");
    };
    let lib = artifacts::intercept_lib().ok_or_else(|| {
        anyhow::anyhow!(
            "libephemera_intercept.so not found next to this binary (build it with `cargo build -p ephemera-intercept`, or set {})",
            artifacts::INTERCEPT_ENV
        )
    })?;
    std::fs::create_dir_all(&args.tier_dir)
        .with_context(|| format!("creating the tier directory {}", args.tier_dir.display()))?;
    let scratch = tempfile::tempdir().context("creating a directory for the control block")?;
    let control_path = scratch.path().join("control");
    let control = ControlBlock::create(&control_path, args.mem_limit.unwrap_or(0), args.mode)
        .with_context(|| format!("creating the control block {}", control_path.display()))?;

    let preload = match std::env::var_os("LD_PRELOAD") {
        Some(existing) if !existing.is_empty() => {
            let mut p = lib.clone().into_os_string();
            p.push(":");
            p.push(existing);
            p
        }
        _ => lib.clone().into_os_string(),
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(&args.command[1..])
        .env("LD_PRELOAD", preload)
        .env("EPHEMERA_TIER_DIR", &args.tier_dir)
        .env("EPHEMERA_MODE", args.mode.as_str())
        .env("EPHEMERA_CONTROL", &control_path);
    if let Some(limit) = args.mem_limit {
        cmd.env("EPHEMERA_MEM_LIMIT", limit.to_string());
    }

    let mut cgroup = None;
    let mut driver = None;
    if args.cgroup {
        let limit = args
            .mem_limit
            .context("--cgroup needs --mem-limit: the cgroup's memory limit")?;
        let d = Driver::detect(&format!("run-{}", std::process::id()));
        if let Driver::Unavailable { reason } = &d {
            anyhow::bail!("--cgroup: no memory cgroup is available here ({reason})");
        }
        let cg = d
            .create("cmd", limit)
            .context("creating the memory cgroup")?
            .context("creating the memory cgroup: cgroups are unavailable")?;
        ephemera_sys::process::join_cgroup_on_exec(&mut cmd, &cg.procs_file())
            .context("preparing to join the memory cgroup")?;
        cgroup = Some(cg);
        driver = Some(d);
    }

    let status = cmd.status().with_context(|| format!("running {program}"))?;
    let oom_kills = cgroup.as_ref().map_or(0, |cg| cg.oom_kills());
    if let Some(cg) = &cgroup {
        if let Err(e) = cg.kill_and_remove(Duration::from_secs(5)) {
            tracing::warn!(error = %e, "could not remove the command's cgroup");
        }
    }
    if let Some(d) = &driver {
        d.remove_base();
    }
    // A process killed mid-write (a signal, the OOM killer) leaves its
    // reservation in the kernel size: trim the tier back to logical sizes.
    repair_tier(&control_path, &args.tier_dir);
    if oom_kills > 0 {
        eprintln!(
            "ephemera run: {program} was OOM-killed in its {} memory cgroup",
            format_size(args.mem_limit.unwrap_or(0))
        );
    }
    if args.stats {
        let mut out =
            ephemera_domain::tier::to_json(&ephemera_domain::tier::to_wire(&control.counters()));
        out["oom_kills"] = oom_kills.into();
        eprintln!("{out}");
    }
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Trims tier files whose owning process is gone back to their logical
/// sizes (see `ControlFile::repair`); a failure is reported, not fatal.
fn repair_tier(control: &std::path::Path, tier: &std::path::Path) {
    let gone = |pid: u64| i32::try_from(pid).is_ok_and(ephemera_sys::process::gone);
    let repaired = ephemera_control_block::ControlFile::open(control)
        .and_then(|c| c.repair(tier, |pid| !gone(pid)));
    match repaired {
        Ok(r) if r.trimmed > 0 => eprintln!(
            "ephemera run: trimmed {} tier file(s) left padded by a killed process ({} bytes)",
            r.trimmed, r.bytes
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not repair the tier directory"),
    }
}
