//! Memory cgroups for function instances, v1 and v2.
//!
//! v1: `/sys/fs/cgroup/memory/ephemera/<node>/<instance>` with
//! `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes` when swap
//! accounting exists, kept equal so the instance cannot swap).
//! v2: `/sys/fs/cgroup/ephemera/<node>/<instance>` with `+memory` enabled down
//! the subtree, `memory.max` and `memory.swap.max = 0`.
//! Without either, instances run unlimited and the agent says so once.
//!
//! All calls here are small blocking file writes; they are fast enough to make
//! from the tenant actor, except [`Cgroup::kill_and_remove`], which waits.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a cgroup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// An I/O error on a cgroup file.
    #[error("cgroup: {what} {path}: {source}")]
    Io {
        /// What we were doing.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A new limit below what the instance uses now.
    #[error("cgroup {path}: refusing to set the limit to {limit} bytes, below current usage {usage} bytes")]
    BelowUsage {
        /// The cgroup.
        path: PathBuf,
        /// The requested limit.
        limit: u64,
        /// Its usage.
        usage: u64,
    },
    /// Processes were still in the cgroup at the deadline.
    #[error("cgroup {path}: processes still running after {waited:?}; left in place")]
    Busy {
        /// The cgroup.
        path: PathBuf,
        /// How long we tried.
        waited: Duration,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a containerised agent finds the host's cgroup tree (mounted
/// read-only, e.g. `-v /sys/fs/cgroup:/host/sys/fs/cgroup:ro`) to read the
/// usage of its sibling instance containers; `EPHEMERA_HOST_CGROUP` names
/// another place.
pub const HOST_CGROUP_ROOTS: &[&str] = &["/host/sys/fs/cgroup"];

/// Which cgroup hierarchy this node uses for its instances.
#[derive(Debug, Clone)]
pub enum Driver {
    /// cgroup v1; instances live under `base`.
    V1 {
        /// `.../memory/ephemera/<node>`.
        base: PathBuf,
    },
    /// cgroup v2; instances live under `base`.
    V2 {
        /// `.../ephemera/<node>`.
        base: PathBuf,
    },
    /// No usable memory cgroup: instances run unlimited.
    Unavailable {
        /// Why, for the log.
        reason: String,
    },
}

impl Driver {
    /// Finds a writable memory cgroup hierarchy under `/sys/fs/cgroup`.
    /// Logs a warning when there is none.
    pub fn detect(node_id: &str) -> Driver {
        let d = Self::detect_at(Path::new("/sys/fs/cgroup"), node_id);
        match &d {
            Driver::Unavailable { reason } => tracing::warn!(
                node = node_id,
                "no memory cgroup available ({reason}): function instances run WITHOUT memory limits"
            ),
            Driver::V1 { base } | Driver::V2 { base } => {
                tracing::info!(node = node_id, base = %base.display(), "instances get memory cgroups")
            }
        }
        d
    }

    /// As [`Driver::detect`], with the cgroup mount at `root`.
    pub fn detect_at(root: &Path, node_id: &str) -> Driver {
        let v1 = root.join("memory");
        if v1.join("memory.limit_in_bytes").exists() {
            let base = v1.join("ephemera").join(node_id);
            return match fs::create_dir_all(&base) {
                Ok(()) => Driver::V1 { base },
                Err(e) => Driver::Unavailable {
                    reason: format!("cgroup v1 at {} is not writable: {e}", v1.display()),
                },
            };
        }
        let controllers = root.join("cgroup.controllers");
        match fs::read_to_string(&controllers) {
            Ok(c) if c.split_whitespace().any(|w| w == "memory") => {
                let eph = root.join("ephemera");
                let base = eph.join(node_id);
                let setup = || -> io::Result<()> {
                    fs::create_dir_all(&base)?;
                    for dir in [root, eph.as_path(), base.as_path()] {
                        fs::write(dir.join("cgroup.subtree_control"), "+memory")?;
                    }
                    Ok(())
                };
                match setup() {
                    Ok(()) => Driver::V2 { base },
                    Err(e) => Driver::Unavailable {
                        reason: format!("cannot set up {} with +memory: {e}", base.display()),
                    },
                }
            }
            Ok(_) => Driver::Unavailable {
                reason: "cgroup v2 without the memory controller".into(),
            },
            Err(_) => Driver::Unavailable {
                reason: format!("no cgroup v1 memory or v2 hierarchy at {}", root.display()),
            },
        }
    }

    /// Creates the cgroup of a new instance with `limit` bytes; `None` when
    /// cgroups are unavailable.
    pub fn create(&self, instance_id: &str, limit: u64) -> Result<Option<Cgroup>, CgroupError> {
        let (base, v2) = match self {
            Driver::V1 { base } => (base, false),
            Driver::V2 { base } => (base, true),
            Driver::Unavailable { .. } => return Ok(None),
        };
        let path = base.join(instance_id);
        fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        // An instance may read its own limits (runtimes size their heaps
        // from them, whatever uid they run as): its directory is readable,
        // the ones above it only traversable, so no instance lists the others.
        for dir in [base.parent(), Some(base.as_path())].into_iter().flatten() {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
                .map_err(io_err("setting the mode of", dir))?;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
            .map_err(io_err("setting the mode of", &path))?;
        let cg = Cgroup {
            has_memsw: !v2 && path.join("memory.memsw.limit_in_bytes").exists(),
            path,
            v2,
        };
        let applied = if v2 {
            cg.write("memory.max", limit)
                .and_then(|_| match cg.write("memory.swap.max", 0) {
                    // No swap controller: nothing can swap anyway.
                    Err(CgroupError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        Ok(())
                    }
                    other => other,
                })
        } else {
            cg.set_limit_v1(limit)
        };
        if let Err(e) = applied {
            let _ = fs::remove_dir(&cg.path);
            return Err(e);
        }
        Ok(Some(cg))
    }

    /// Kills and removes instance cgroups left by an earlier run of this node.
    pub fn cleanup_stale(&self) {
        let base = match self {
            Driver::V1 { base } | Driver::V2 { base } => base,
            Driver::Unavailable { .. } => return,
        };
        let Ok(entries) = fs::read_dir(base) else {
            return;
        };
        for e in entries.flatten() {
            if e.path().is_dir() {
                let cg = Cgroup {
                    path: e.path(),
                    v2: matches!(self, Driver::V2 { .. }),
                    has_memsw: false,
                };
                tracing::warn!(cgroup = %cg.path.display(), "removing a stale instance cgroup");
                if let Err(err) = cg.kill_and_remove(Duration::from_secs(5)) {
                    tracing::warn!("{err}");
                }
            }
        }
    }

    /// Removes the node's (empty) cgroup directory.
    pub fn remove_base(&self) {
        if let Driver::V1 { base } | Driver::V2 { base } = self {
            let _ = fs::remove_dir(base);
        }
    }
}

/// One instance's memory cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    /// Its directory.
    path: PathBuf,
    /// v2 (else v1).
    v2: bool,
    /// v1 swap accounting present.
    has_memsw: bool,
}

impl Cgroup {
    /// The cgroup a process is in (for containers a runtime created), from
    /// `/proc/<pid>/cgroup`: the v1 memory controller's, else the v2 one.
    pub fn of_pid(pid: u32) -> Option<Cgroup> {
        let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let mut v2 = None;
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let path = path.trim_start_matches('/');
            if ctrls.split(',').any(|c| c == "memory") {
                let dir = Path::new("/sys/fs/cgroup/memory").join(path);
                return dir.is_dir().then(|| Cgroup {
                    has_memsw: dir.join("memory.memsw.limit_in_bytes").exists(),
                    path: dir,
                    v2: false,
                });
            }
            if ctrls.is_empty() {
                v2 = Some(Path::new("/sys/fs/cgroup").join(path));
            }
        }
        let dir = v2?;
        dir.join("memory.max").exists().then_some(Cgroup {
            path: dir,
            v2: true,
            has_memsw: false,
        })
    }

    /// The memory cgroup of docker container `id` (the full id), seen from
    /// wherever the agent runs. Never trusts a pid alone: a pid from `docker
    /// inspect` is a host pid, which names another process (or none) when the
    /// agent runs in its own pid namespace, so `/proc/<pid>/cgroup` is only
    /// used when the path it names holds the container id. Otherwise the
    /// usual layouts (cgroupfs `docker/<id>`, systemd
    /// `system.slice/docker-<id>.scope`) are looked up under `/sys/fs/cgroup`
    /// and under [`HOST_CGROUP_ROOTS`] (where a containerised agent gets the
    /// host's cgroup tree mounted read-only).
    pub fn of_container(id: &str, pid: Option<u32>) -> Option<Cgroup> {
        if id.is_empty() {
            return None;
        }
        if let Some(cg) = pid.and_then(Cgroup::of_pid) {
            if cg.path.to_string_lossy().contains(id) {
                return Some(cg);
            }
        }
        let mut roots: Vec<PathBuf> = vec![PathBuf::from("/sys/fs/cgroup")];
        if let Some(extra) = std::env::var_os("EPHEMERA_HOST_CGROUP") {
            roots.push(PathBuf::from(extra));
        }
        roots.extend(HOST_CGROUP_ROOTS.iter().map(PathBuf::from));
        Cgroup::of_container_in(id, &roots)
    }

    /// As [`Cgroup::of_container`] without the pid, under cgroup mounts `roots`.
    pub fn of_container_in(id: &str, roots: &[PathBuf]) -> Option<Cgroup> {
        if id.is_empty() {
            return None;
        }
        let rels = [
            format!("docker/{id}"),
            format!("system.slice/docker-{id}.scope"),
        ];
        for root in roots {
            for rel in &rels {
                let v1 = root.join("memory").join(rel);
                if v1.join("memory.limit_in_bytes").exists() {
                    return Some(Cgroup {
                        has_memsw: v1.join("memory.memsw.limit_in_bytes").exists(),
                        path: v1,
                        v2: false,
                    });
                }
                let v2 = root.join(rel);
                if v2.join("memory.max").exists() {
                    return Some(Cgroup {
                        path: v2,
                        v2: true,
                        has_memsw: false,
                    });
                }
            }
        }
        None
    }

    /// Times the kernel's OOM killer fired in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        fs::read_to_string(self.path.join(file))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == "oom_kill").then(|| v.trim().parse().ok()).flatten()
                })
            })
            .unwrap_or(0)
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file a process writes `0` into to join.
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    fn write(&self, file: &'static str, value: u64) -> Result<(), CgroupError> {
        let path = self.path.join(file);
        fs::write(&path, value.to_string()).map_err(|source| CgroupError::Io {
            what: "writing",
            path,
            source,
        })
    }

    fn read(&self, file: &str) -> Option<u64> {
        fs::read_to_string(self.path.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn stat(&self, key: &str) -> Option<u64> {
        let text = fs::read_to_string(self.path.join("memory.stat")).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    }

    fn set_limit_v1(&self, limit: u64) -> Result<(), CgroupError> {
        if !self.has_memsw {
            return self.write("memory.limit_in_bytes", limit);
        }
        // memsw must stay >= the memory limit: raise it first, lower it last.
        let old = self.read("memory.limit_in_bytes").unwrap_or(u64::MAX);
        if limit >= old {
            self.write("memory.memsw.limit_in_bytes", limit)?;
            self.write("memory.limit_in_bytes", limit)
        } else {
            self.write("memory.limit_in_bytes", limit)?;
            self.write("memory.memsw.limit_in_bytes", limit)
        }
    }

    /// Sets the memory limit, refusing to go below what the instance really
    /// uses (usage minus reclaimable inactive file pages).
    pub fn set_limit(&self, limit: u64) -> Result<(), CgroupError> {
        if let Some(usage) = self.usage() {
            if limit < usage {
                return Err(CgroupError::BelowUsage {
                    path: self.path.clone(),
                    limit,
                    usage,
                });
            }
        }
        if self.v2 {
            self.write("memory.max", limit)
        } else {
            self.set_limit_v1(limit)
        }
    }

    /// Memory in use that cannot simply be dropped: usage minus inactive
    /// file pages (what `docker stats` reports).
    pub fn usage(&self) -> Option<u64> {
        let (raw, inactive) = if self.v2 {
            (self.read("memory.current")?, self.stat("inactive_file"))
        } else {
            (
                self.read("memory.usage_in_bytes")?,
                self.stat("total_inactive_file"),
            )
        };
        Some(raw.saturating_sub(inactive.unwrap_or(0)))
    }

    /// Peak usage (v1 `memory.max_usage_in_bytes`, v2 `memory.peak`).
    pub fn max_usage(&self) -> Option<u64> {
        if self.v2 {
            self.read("memory.peak")
        } else {
            self.read("memory.max_usage_in_bytes")
        }
    }

    /// Pids in the cgroup.
    fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.procs_file())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// SIGKILLs every process in the cgroup and removes it, waiting at most
    /// `within` for the processes to go. Blocking.
    pub fn kill_and_remove(&self, within: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + within;
        if self.v2 {
            let _ = fs::write(self.path.join("cgroup.kill"), "1");
        }
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                match fs::remove_dir(&self.path) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                    Err(_) if Instant::now() < deadline => {}
                    Err(source) => {
                        return Err(CgroupError::Io {
                            what: "removing",
                            path: self.path.clone(),
                            source,
                        })
                    }
                }
            }
            for pid in pids {
                // Gone already is fine: it is what we wait for.
                let _ = crate::process::kill(pid, libc::SIGKILL);
            }
            if Instant::now() >= deadline {
                return Err(CgroupError::Busy {
                    path: self.path.clone(),
                    waited: within,
                });
            }
            // Exiting processes leave the cgroup within milliseconds.
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_v1_tree_limits_and_refusal() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory");
        fs::create_dir_all(&mem).unwrap();
        fs::write(mem.join("memory.limit_in_bytes"), "0").unwrap();
        let d = Driver::detect_at(root.path(), "n1");
        let Driver::V1 { base } = &d else {
            panic!("expected v1, got {d:?}")
        };
        assert!(base.ends_with("memory/ephemera/n1"));
        // A plain directory does not create cgroup files; pre-create them.
        let dir = base.join("i1");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("memory.usage_in_bytes"), "1000").unwrap();
        fs::write(
            dir.join("memory.stat"),
            "cache 5\ntotal_inactive_file 100\n",
        )
        .unwrap();
        let cg = d.create("i1", 5000).unwrap().unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap(),
            "5000"
        );
        assert_eq!(cg.usage(), Some(900));
        assert!(matches!(
            cg.set_limit(800),
            Err(CgroupError::BelowUsage { .. })
        ));
        cg.set_limit(950).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("memory.limit_in_bytes")).unwrap(),
            "950"
        );
    }

    #[test]
    fn container_cgroup_found_by_id_under_a_host_mount() {
        let own = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        let id = "4d8d38f7260834f4858272f67986110e1fd7db481e31e131718c451a44ca3546";
        let dir = host.path().join("memory/docker").join(id);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("memory.limit_in_bytes"), "100").unwrap();
        fs::write(dir.join("memory.usage_in_bytes"), "70").unwrap();
        let roots = [own.path().to_path_buf(), host.path().to_path_buf()];
        let cg = Cgroup::of_container_in(id, &roots).expect("found");
        assert_eq!(cg.path(), dir);
        assert_eq!(cg.usage(), Some(70));
        assert!(Cgroup::of_container_in("other", &roots).is_none());
        assert!(Cgroup::of_container_in("", &roots).is_none());
        // systemd layout, v2
        let v2 = host.path().join(format!("system.slice/docker-{id}.scope"));
        fs::remove_dir_all(host.path().join("memory")).unwrap();
        fs::create_dir_all(&v2).unwrap();
        fs::write(v2.join("memory.max"), "max").unwrap();
        assert_eq!(Cgroup::of_container_in(id, &roots).unwrap().path(), v2);
    }

    #[test]
    fn nothing_mounted_is_unavailable() {
        let root = tempfile::tempdir().unwrap();
        let d = Driver::detect_at(root.path(), "n1");
        assert!(matches!(d, Driver::Unavailable { .. }));
        assert!(d.create("i", 1).unwrap().is_none());
    }
}
