//! What the sandbox costs an instance start: spawns `/bin/true` N times in
//! each arm, the arms interleaved (so drift and noise hit them alike), and
//! prints the median per-spawn time in µs with its spread.
//!
//! Arms:
//! - `plain`: `Command::status()` (std uses posix_spawn);
//! - `plain+pre_exec`: with an empty `pre_exec` hook, i.e. fork + exec, which
//!   is what the process runtime pays already (it joins its memory cgroup in
//!   such a hook): the baseline the sandbox adds to;
//! - `sandbox`: `SandboxPolicy::new` + `apply_to` + spawn + wait;
//! - `sandbox+pids cgroup`: the same, creating, joining and removing a
//!   pids cgroup for each spawn;
//! - `apply_to alone`, `prepare_dirs alone`: the parent-side preparation.
//!
//! Run as root: `cargo run --release -p ephemera-sandbox --example sandbox_cost -- 300`

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use ephemera_sandbox::{Ids, PidsController, SandboxPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("sandbox_cost: needs root (it starts children as another uid); nothing measured");
        return Ok(());
    }
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(300);
    let root = tempfile::Builder::new()
        .prefix("ephemera-sandbox-cost-")
        .tempdir()?;
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))?;
    let r = root.path();
    let (code, inst) = (r.join("code"), r.join("instance"));
    let (tier, control) = (inst.join("tmp"), inst.join("control"));
    std::fs::create_dir_all(&code)?;
    std::fs::create_dir_all(&tier)?;
    std::fs::write(code.join("handler.py"), "def main(a):\n    return a\n")?;
    std::fs::write(&control, vec![0u8; 4096])?;
    let ids = Ids {
        uid: 2_199_001,
        gid: 2_199_001,
    };
    let policy = || {
        SandboxPolicy::new(ids)
            .code_dir(&code)
            .instance_dir(&inst)
            .tier_dir(&tier)
            .control_block(&control)
            .env("PATH", "/usr/bin:/bin")
            .env("TMPDIR", &tier)
    };
    policy().prepare_dirs()?;
    let pids = PidsController::detect(&format!("sandbox-cost-{}", std::process::id()));

    let arms = [
        "plain",
        "plain+pre_exec",
        "sandbox",
        "sandbox+pids cgroup",
        "apply_to alone",
        "prepare_dirs alone",
    ];
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(n); arms.len()];
    for i in 0..n {
        for k in 0..arms.len() {
            let arm = (i + k) % arms.len();
            let t0 = Instant::now();
            match arm {
                0 => {
                    let st = Command::new("/bin/true").status()?;
                    assert!(st.success());
                }
                1 => {
                    let mut cmd = Command::new("/bin/true");
                    // SAFETY: an empty hook; nothing runs in the child.
                    unsafe { cmd.pre_exec(|| Ok(())) };
                    assert!(cmd.status()?.success());
                }
                2 => {
                    let mut cmd = Command::new("/bin/true");
                    let applied = policy().apply_to(&mut cmd)?;
                    let st = cmd.status().map_err(|e| applied.explain(e))?;
                    assert!(st.success(), "{st}");
                }
                3 => {
                    let cg = pids.create(&format!("cost-{i}"), 64)?;
                    let mut p = policy();
                    if let Some(cg) = &cg {
                        p = p.pids_cgroup(cg);
                    }
                    let mut cmd = Command::new("/bin/true");
                    let applied = p.apply_to(&mut cmd)?;
                    let st = cmd.status().map_err(|e| applied.explain(e))?;
                    assert!(st.success(), "{st}");
                    if let Some(cg) = cg {
                        cg.kill_and_remove(Duration::from_secs(5))?;
                    }
                }
                4 => {
                    let mut cmd = Command::new("/bin/true");
                    let _applied = policy().apply_to(&mut cmd)?;
                }
                _ => policy().prepare_dirs()?,
            }
            times[arm].push(t0.elapsed());
        }
    }
    pids.remove_base();

    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("sandbox_cost: {n} runs per arm, arms interleaved; µs per run (spawn+wait of /bin/true where it spawns)");
    println!(
        "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "arm", "median", "p10", "p90", "min", "max"
    );
    let mut medians = Vec::new();
    for (arm, t) in arms.iter().zip(times.iter_mut()) {
        t.sort();
        let q = |p: f64| us(t[((t.len() - 1) as f64 * p).round() as usize]);
        medians.push(q(0.5));
        println!(
            "{arm:<22} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            q(0.5),
            q(0.1),
            q(0.9),
            us(t[0]),
            us(t[t.len() - 1])
        );
    }
    println!(
        "sandbox over fork+exec: +{:.1} µs median; with a pids cgroup per spawn: +{:.1} µs; over posix_spawn: +{:.1} µs",
        medians[2] - medians[1],
        medians[3] - medians[1],
        medians[2] - medians[0]
    );
    Ok(())
}
