//! Confining function instances: function code is untrusted, so each
//! instance runs under a uid of its own tenant (`ephemera-sandbox`'s
//! persisted map), owns only its instance directory, tier directory and
//! control block, and reads its code, which it cannot change.
//!
//! Process runtime: a [`SandboxPolicy`] — cleared environment,
//! `no_new_privs`, a pids cgroup, a Landlock view of its own files and the
//! runtime's libraries, a seccomp filter — applied between fork and exec.
//! Docker runtime: [`DockerHardening`] — the tenant's uid, no capabilities,
//! `no-new-privileges`, a pids limit, a read-only root file system and a
//! private pid namespace. Without `Confinement` (only with `--insecure`)
//! instances run as the agent's uid, as before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ephemera_sandbox::{
    dirs, DockerHardening, Ids, PidsCgroup, PidsController, SandboxPolicy, TenantUids, UidRange,
    DEFAULT_PIDS_MAX,
};

use super::{InstanceSpec, RuntimeError};

/// The environment an instance's proxy (and through it the launcher)
/// starts with: nothing of the agent's.
const PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// How this node confines its instances.
#[derive(Debug)]
pub struct Confinement {
    /// Tenant → uid, persisted beside the agent's state.
    uids: TenantUids,
    /// The pids cgroup hierarchy of this node's instances.
    pids: PidsController,
}

fn sandbox_err(what: &str) -> impl FnOnce(ephemera_sandbox::SandboxError) -> RuntimeError + '_ {
    move |e| RuntimeError::Io {
        what: what.to_string(),
        source: std::io::Error::other(e.to_string()),
    }
}

impl Confinement {
    /// Confinement with the uid map in `state_dir` and the pids cgroups of
    /// `cgroup_name`; removes what a previous run of this agent left.
    /// Refused unless the agent is root: switching uids needs it.
    pub fn new(state_dir: &Path, cgroup_name: &str) -> Result<Confinement, RuntimeError> {
        if !ephemera_sys::process::is_root() {
            return Err(RuntimeError::Io {
                what: "confining instances under per-tenant uids".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the agent is not root; run it as root, or with --insecure to run \
                     functions unconfined as the agent's own user",
                ),
            });
        }
        let uids = TenantUids::open(state_dir, UidRange::default())
            .map_err(sandbox_err("opening the tenant uid map"))?;
        let pids = PidsController::detect(cgroup_name);
        for e in pids.cleanup_stale() {
            tracing::warn!("{e}");
        }
        Ok(Confinement { uids, pids })
    }

    /// The uid and gid instances of `tenant` run under.
    pub fn ids(&self, tenant: &str) -> Result<Ids, RuntimeError> {
        self.uids
            .ids(tenant)
            .map_err(sandbox_err("assigning the tenant's uid"))
    }

    /// Hands the instance's directories to its tenant's uid and makes its
    /// code readable and unwritable by instances.
    pub fn prepare(
        &self,
        spec: &InstanceSpec,
        dir: &Path,
        tier: &Path,
        control: &Path,
    ) -> Result<Ids, RuntimeError> {
        let ids = self.ids(&spec.tenant)?;
        dirs::prepare_instance(ids, dir, tier, control)
            .map_err(sandbox_err("giving the instance its directories"))?;
        dirs::prepare_code_dir(&spec.code_dir)
            .map_err(sandbox_err("making the code read-only for instances"))?;
        Ok(ids)
    }

    /// Checks `ids` can reach `paths` on this host (every directory above
    /// must be searchable): what the process runtime's instances need.
    pub fn check_reachable(&self, ids: Ids, paths: &[&Path]) -> Result<(), RuntimeError> {
        for path in paths {
            dirs::check_reachable(path, ids)
                .map_err(sandbox_err("checking the instance can reach its files"))?;
        }
        Ok(())
    }

    /// The process runtime's policy for one instance, with its pids cgroup.
    /// `read_exec` are the proxy, intercept and launcher directory.
    pub fn policy(
        &self,
        ids: Ids,
        spec: &InstanceSpec,
        dir: &Path,
        tier: &Path,
        control: &Path,
        read_exec: &[PathBuf],
    ) -> Result<(SandboxPolicy, Option<PidsCgroup>), RuntimeError> {
        let mut policy = SandboxPolicy::new(ids)
            .code_dir(&spec.code_dir)
            .instance_dir(dir)
            .tier_dir(tier)
            .control_block(control)
            .env("PATH", PATH)
            .env("HOME", tier)
            .env("TMPDIR", tier)
            .env("LANG", "C.UTF-8");
        for path in read_exec {
            policy = policy.read_exec(path);
        }
        let pids = self
            .pids
            .create(&spec.instance_id, DEFAULT_PIDS_MAX)
            .map_err(sandbox_err("creating the instance's pids cgroup"))?;
        if let Some(p) = &pids {
            policy = policy.pids_cgroup(p);
        }
        Ok((policy, pids))
    }

    /// The docker runtime's hardening of one instance container.
    pub fn docker(&self, ids: Ids, dir: &Path) -> DockerHardening {
        DockerHardening::new(ids, dir)
    }

    /// Removes this node's pids cgroup subtree (at shutdown).
    pub fn remove_base(&self) {
        self.pids.remove_base();
    }
}

/// Kills what is left in an instance's pids cgroup and removes it.
pub async fn remove_pids(pids: Option<PidsCgroup>) {
    let Some(p) = pids else { return };
    match tokio::task::spawn_blocking(move || p.kill_and_remove(Duration::from_secs(5))).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("{e}"),
        Err(e) => tracing::warn!("pids cgroup cleanup task failed: {e}"),
    }
}
