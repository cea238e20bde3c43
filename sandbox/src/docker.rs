//! [`DockerHardening`]: the Docker runtime's share of the sandbox, as plain
//! data. The Docker runtime translates it into bollard's `ContainerCreateBody`
//! (`user`) and `HostConfig` (everything else); each field names its bollard
//! counterpart. This crate does not depend on bollard.
//!
//! What it gives a container, and what it replaces in today's runtime:
//!
//! - a non-root user (`uid:gid` of the tenant, the same ids as the process
//!   runtime, so files in the instance directory have one owner whichever
//!   runtime ran it);
//! - every capability dropped, and `no-new-privileges` (setuid binaries in a
//!   bind-mounted `/usr` stay inert);
//! - a pids limit;
//! - a read-only root file system: the only writable place is the instance
//!   directory, bind-mounted read-write at the same path (the tier directory
//!   and control block are inside it). The tier must stay a bind of a real
//!   disk directory, not a tmpfs: its point is page cache the kernel can
//!   write back and reclaim under the memory limit, which tmpfs pages are not;
//! - a private pid namespace (today's `pid_mode: "host"` goes away: a
//!   function must not see or signal the node's processes);
//! - a private IPC namespace, no privileged mode, no core dumps, and the
//!   engine's default seccomp profile (never `seccomp=unconfined`; that
//!   profile refuses `unshare`, so the intercept's adapter keeps a shared fd
//!   table there, as documented in `intercept/`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::pids::DEFAULT_PIDS_MAX;
use crate::policy::DEFAULT_RLIMIT_NPROC;
use crate::uids::Ids;

/// One ulimit (bollard `ResourcesUlimits`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    /// `nproc`, `core`, ...
    pub name: String,
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// Hardening of one instance container; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerHardening {
    /// `ContainerCreateBody::user`: `"uid:gid"`, never root.
    pub user: String,
    /// `HostConfig::cap_drop`: `["ALL"]`.
    pub cap_drop: Vec<String>,
    /// `HostConfig::cap_add`: empty.
    pub cap_add: Vec<String>,
    /// `HostConfig::security_opt`: `["no-new-privileges:true"]`.
    pub security_opt: Vec<String>,
    /// `HostConfig::pids_limit`.
    pub pids_limit: i64,
    /// `HostConfig::readonly_rootfs`: `true`.
    pub readonly_rootfs: bool,
    /// `HostConfig::binds` to add for the writable part: the instance
    /// directory (holding the tier directory and control block) read-write
    /// at the same path, `"<dir>:<dir>:rw"`.
    pub writable_binds: Vec<String>,
    /// `HostConfig::tmpfs`: empty by default (the function's scratch space
    /// is the tier, through `TMPDIR`); a runtime that needs a writable `/run`
    /// or `/home` adds small `nosuid,nodev,noexec` entries here.
    pub tmpfs: BTreeMap<String, String>,
    /// `HostConfig::pid_mode`: `None`, Docker's default private pid
    /// namespace. Never `"host"`.
    pub pid_mode: Option<String>,
    /// `HostConfig::ipc_mode`: `"private"`.
    pub ipc_mode: String,
    /// `HostConfig::privileged`: `false`.
    pub privileged: bool,
    /// `HostConfig::ulimits`: `core` 0 and `nproc` (per uid, like the
    /// process runtime's `RLIMIT_NPROC`).
    pub ulimits: Vec<Ulimit>,
}

impl DockerHardening {
    /// The defaults for an instance of the tenant with `ids` whose instance
    /// directory (tier directory and control block inside) is `instance_dir`.
    pub fn new(ids: Ids, instance_dir: &Path) -> DockerHardening {
        let dir = instance_dir.display();
        DockerHardening {
            user: ids.docker_user(),
            cap_drop: vec!["ALL".into()],
            cap_add: Vec::new(),
            security_opt: vec!["no-new-privileges:true".into()],
            pids_limit: DEFAULT_PIDS_MAX as i64,
            readonly_rootfs: true,
            writable_binds: vec![format!("{dir}:{dir}:rw")],
            tmpfs: BTreeMap::new(),
            pid_mode: None,
            ipc_mode: "private".into(),
            privileged: false,
            ulimits: vec![
                Ulimit {
                    name: "core".into(),
                    soft: 0,
                    hard: 0,
                },
                Ulimit {
                    name: "nproc".into(),
                    soft: DEFAULT_RLIMIT_NPROC as i64,
                    hard: DEFAULT_RLIMIT_NPROC as i64,
                },
            ],
        }
    }

    /// With another pids limit.
    #[must_use]
    pub fn pids_limit(mut self, limit: i64) -> Self {
        self.pids_limit = limit;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_hardened_ones() {
        let h = DockerHardening::new(
            Ids {
                uid: 2_000_123,
                gid: 2_000_123,
            },
            Path::new("/var/lib/ephemera/instances/i1"),
        );
        assert_eq!(h.user, "2000123:2000123");
        assert_eq!(h.cap_drop, ["ALL"]);
        assert!(h.cap_add.is_empty());
        assert_eq!(h.security_opt, ["no-new-privileges:true"]);
        assert!(h.readonly_rootfs && !h.privileged);
        assert_eq!(h.pid_mode, None);
        assert_eq!(
            h.writable_binds,
            ["/var/lib/ephemera/instances/i1:/var/lib/ephemera/instances/i1:rw"]
        );
        assert_eq!(h.pids_limit(64).pids_limit, 64);
    }
}
