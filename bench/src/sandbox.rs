//! What confining an instance costs (`ephemera bench sandbox`): the same
//! agent code with and without [`Confinement`] (tenant uid, cleared
//! environment, Landlock, seccomp, pids cgroup), measured interleaved.
//!
//! Two in-process agents (the real `Run` handler, tenant actor, process
//! runtime, proxy and launcher, with the intercept preloaded) run the same
//! no-op Python function. Each round, in an order that alternates, each
//! agent starts a new instance (a function it has not seen: its first
//! invocation is the instance start, proxy and launcher included) and then
//! runs `warm` invocations of it; a round yields the confined − plain
//! difference of the start time and of the median warm invocation. The
//! report gives the medians and their spread over the rounds.
//!
//! Both run the same interpreter: a confined instance's `PATH` is the
//! system's (`/usr/local/bin:/usr/bin:/bin`), so the plain agent's `bin/`
//! (first on its instances' `PATH`) gets a `python3` link to the one found
//! there, not whatever the bench's own `PATH` finds first (a pyenv shim
//! costs ~200 ms per start).
//!
//! Confinement needs root, and instance directories every tenant uid can
//! reach: the bench works under `/var/tmp/ephemera-bench-sandbox-<pid>`
//! (0711), removed at the end.

use std::fmt;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use ephemera_node_agent::agent::install_launcher;
use ephemera_node_agent::runtime::confine::Confinement;
use ephemera_node_agent::runtime::process::{ProcessOptions, ProcessRuntime};
use ephemera_node_agent::service::{AgentService, ServiceParts};
use ephemera_node_agent::SharingScope;
use ephemera_proto::v1::{CodeFile, FunctionSpec};
use ephemera_sys::Driver;

use crate::error::{io_err, BenchError};
use crate::node::run_one;
use crate::stats::{median, spread};
use crate::workload::{MIB, WORKLOAD_PY};

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxOptions {
    /// The `ephemera-proxy` executable.
    pub proxy_bin: PathBuf,
    /// `libephemera_intercept.so`, preloaded in both agents' instances.
    pub intercept_lib: PathBuf,
    /// Rounds (one instance start per agent per round).
    pub rounds: usize,
    /// Warm invocations per instance per round.
    pub warm: usize,
}

/// Per-round `confined − plain` differences.
#[derive(Debug, Clone, Serialize)]
pub struct Delta {
    /// Median of the plain agent's values (µs).
    pub plain_us: f64,
    /// Median of the confined agent's values (µs).
    pub confined_us: f64,
    /// `confined − plain` per round (µs).
    pub per_round_us: Vec<f64>,
    /// Their median, lowest and highest.
    pub median_us: f64,
    /// See `median_us`.
    pub min_us: f64,
    /// See `median_us`.
    pub max_us: f64,
}

impl Delta {
    fn new(plain: &[f64], confined: &[f64]) -> Delta {
        let per_round_us: Vec<f64> = plain.iter().zip(confined).map(|(p, c)| c - p).collect();
        let (median_us, min_us, max_us) = spread(&per_round_us);
        Delta {
            plain_us: spread(plain).0,
            confined_us: spread(confined).0,
            median_us,
            min_us,
            max_us,
            per_round_us,
        }
    }
}

/// What [`sandbox_cost`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxReport {
    /// Rounds run.
    pub rounds: usize,
    /// Warm invocations per instance per round.
    pub warm: usize,
    /// Instance start: the first invocation of a new function, end to end
    /// through the agent (spawn, sandbox, proxy, launcher, the no-op).
    pub start: Delta,
    /// A warm no-op invocation (the median of each round's).
    pub warm_invocation: Delta,
}

impl fmt::Display for SandboxReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sandbox cost, interleaved ({} rounds; per round one new instance and {} warm no-op invocations on each agent):",
            self.rounds, self.warm
        )?;
        for (what, d) in [
            ("instance start", &self.start),
            ("warm invocation", &self.warm_invocation),
        ] {
            writeln!(
                f,
                "  {what:<16} plain {:>9.0} µs, confined {:>9.0} µs; confined − plain: median {:+.0} µs (rounds {:+.0} .. {:+.0})",
                d.plain_us, d.confined_us, d.median_us, d.min_us, d.max_us
            )?;
        }
        Ok(())
    }
}

/// Removes the bench's root (and what the agents left) when dropped.
struct Root(PathBuf);

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One agent of the comparison.
struct Agent {
    service: AgentService,
    driver: Arc<Driver>,
    confinement: Option<Arc<Confinement>>,
}

impl Agent {
    fn start(
        o: &SandboxOptions,
        root: &Path,
        name: &str,
        confine: bool,
    ) -> Result<Agent, BenchError> {
        let dir = root.join(name);
        let (instances, code, bin) = (dir.join("instances"), dir.join("code"), dir.join("bin"));
        for (d, mode) in [
            (&dir, 0o711),
            (&instances, 0o711),
            (&code, 0o711),
            (&bin, 0o755),
        ] {
            fs::create_dir_all(d).map_err(io_err(format!("creating {}", d.display())))?;
            fs::set_permissions(d, fs::Permissions::from_mode(mode))
                .map_err(io_err(format!("chmod {}", d.display())))?;
        }
        install_launcher(&bin).map_err(io_err(format!(
            "installing the launcher in {}",
            bin.display()
        )))?;
        if !confine {
            let python = system_python()?;
            let link = bin.join("python3");
            std::os::unix::fs::symlink(&python, &link)
                .map_err(io_err(format!("linking {}", link.display())))?;
        }
        let copy = |from: &Path| -> Result<PathBuf, BenchError> {
            let to = bin.join(from.file_name().unwrap_or_default());
            fs::copy(from, &to).map_err(io_err(format!("copying {}", from.display())))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(0o755))
                .map_err(io_err(format!("chmod {}", to.display())))?;
            Ok(to)
        };
        let cgroup_name = format!("bench-sandbox-{}-{name}", std::process::id());
        let confinement = if confine {
            Some(Arc::new(Confinement::new(&dir, &cgroup_name).map_err(
                |e| BenchError::Setup(format!("confinement (needs root): {e}")),
            )?))
        } else {
            None
        };
        let driver = Arc::new(Driver::detect(&cgroup_name));
        let runtime = ProcessRuntime::new(
            ProcessOptions {
                instances_dir: instances,
                proxy_bin: copy(&o.proxy_bin)?,
                intercept_lib: Some(copy(&o.intercept_lib)?),
                bin_dir: Some(bin),
            },
            driver.clone(),
            confinement.clone(),
        );
        let service = AgentService::new(ServiceParts {
            node_id: format!("bench-{name}"),
            runtime: Arc::new(runtime),
            code_dir: code,
            idle_timeout: Duration::from_secs(3600),
            sharing: SharingScope::None,
            ledger_dir: None,
            running: Default::default(),
        });
        Ok(Agent {
            service,
            driver,
            confinement,
        })
    }

    async fn stop(self) {
        self.service.shutdown().await;
        self.driver.remove_base();
        if let Some(c) = self.confinement {
            c.remove_base();
        }
    }

    /// Starts an instance of a new function `name` and runs it `warm`
    /// times: (start µs, median warm µs).
    async fn round(
        &self,
        name: &str,
        warm: usize,
        code: &[CodeFile],
        digest: &str,
    ) -> Result<(f64, f64), BenchError> {
        let f = FunctionSpec {
            tenant: "bench".into(),
            name: name.into(),
            cmd: "ephemera-python fns.py:cpu_task".into(),
            memory_bytes: 64 * MIB,
            timeout_ms: 60_000,
            code_digest: digest.into(),
            ..Default::default()
        };
        let noop = serde_json::json!({ "n": 1, "rounds": 0 });
        let (_, start) = run_one(&self.service, "sandbox", &f, code, noop.clone()).await?;
        let mut times = Vec::with_capacity(warm);
        for _ in 0..warm {
            let (_, t) = run_one(&self.service, "sandbox", &f, &[], noop.clone()).await?;
            times.push(t.as_secs_f64() * 1e6);
        }
        times.sort_by(f64::total_cmp);
        Ok((start.as_secs_f64() * 1e6, median(&times)))
    }
}

/// The `python3` a confined instance finds on its `PATH`.
fn system_python() -> Result<PathBuf, BenchError> {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join("python3"))
        .find(|p| p.exists())
        .ok_or_else(|| BenchError::Setup("no python3 in /usr/local/bin, /usr/bin or /bin".into()))
}

/// Runs the comparison (see the module doc).
pub async fn sandbox_cost(mut o: SandboxOptions) -> Result<SandboxReport, BenchError> {
    o.rounds = o.rounds.max(1);
    o.warm = o.warm.max(1);
    for p in [&mut o.proxy_bin, &mut o.intercept_lib] {
        *p = fs::canonicalize(&*p).map_err(io_err(format!("finding {}", p.display())))?;
    }
    let root = Root(PathBuf::from(format!(
        "/var/tmp/ephemera-bench-sandbox-{}",
        std::process::id()
    )));
    fs::create_dir_all(&root.0).map_err(io_err(format!("creating {}", root.0.display())))?;
    fs::set_permissions(&root.0, fs::Permissions::from_mode(0o711))
        .map_err(io_err(format!("chmod {}", root.0.display())))?;
    let src = root.0.join("src");
    fs::create_dir_all(&src).map_err(io_err("creating the code dir"))?;
    fs::write(src.join("fns.py"), WORKLOAD_PY).map_err(io_err("writing fns.py"))?;
    let code = ephemera_domain::code::read_dir(&src)
        .map_err(|e| BenchError::Setup(format!("reading the workload code: {e}")))?;
    let digest = ephemera_domain::code::digest(&code);

    let plain = Agent::start(&o, &root.0, "plain", false)?;
    let confined = match Agent::start(&o, &root.0, "confined", true) {
        Ok(a) => a,
        Err(e) => {
            plain.stop().await;
            return Err(e);
        }
    };
    let result = rounds(&o, &plain, &confined, &code, &digest).await;
    plain.stop().await;
    confined.stop().await;
    let (p_start, c_start, p_warm, c_warm) = result?;
    Ok(SandboxReport {
        rounds: o.rounds,
        warm: o.warm,
        start: Delta::new(&p_start, &c_start),
        warm_invocation: Delta::new(&p_warm, &c_warm),
    })
}

type Series = (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>);

async fn rounds(
    o: &SandboxOptions,
    plain: &Agent,
    confined: &Agent,
    code: &[CodeFile],
    digest: &str,
) -> Result<Series, BenchError> {
    // Warm-up: the first instance of each agent pays for cold caches.
    plain.round("warmup", 3, code, digest).await?;
    confined.round("warmup", 3, code, digest).await?;
    let (mut ps, mut cs, mut pw, mut cw) = (vec![], vec![], vec![], vec![]);
    for r in 0..o.rounds {
        let name = format!("noop-{r}");
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for is_confined in order {
            if is_confined {
                let (s, w) = confined.round(&name, o.warm, &[], digest).await?;
                cs.push(s);
                cw.push(w);
            } else {
                let (s, w) = plain.round(&name, o.warm, &[], digest).await?;
                ps.push(s);
                pw.push(w);
            }
        }
    }
    Ok((ps, cs, pw, cw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_per_round() {
        let d = Delta::new(&[100.0, 200.0, 300.0], &[150.0, 260.0, 290.0]);
        assert_eq!(d.per_round_us, vec![50.0, 60.0, -10.0]);
        assert_eq!(d.median_us, 50.0);
        assert_eq!((d.min_us, d.max_us), (-10.0, 60.0));
        assert_eq!((d.plain_us, d.confined_us), (200.0, 260.0));
    }
}
