//! Pids cgroups: a bound on the tasks (processes and threads) of one instance.
//!
//! v1: `/sys/fs/cgroup/pids/ephemera/<node>/<instance>` with `pids.max`.
//! v2: the instance's one cgroup, `/sys/fs/cgroup/ephemera/<node>/<instance>`
//! (the directory the node agent's memory driver also uses: under v2 a
//! process is in exactly one cgroup), with `+pids` enabled down the subtree
//! and `pids.max`.
//!
//! The child joins between fork and exec ([`crate::SandboxPolicy::pids_cgroup`]),
//! before it drops privileges, so a fork bomb is bounded from its first
//! instruction. Removal first sets `pids.max` to 0, so nothing inside can
//! fork while it is being killed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{io_err, SandboxError};

/// The default bound on one instance's tasks: the proxy, the shell, the
/// runtime and its threads, with room for a function that forks helpers.
pub const DEFAULT_PIDS_MAX: u64 = 512;

/// Which pids hierarchy this node uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidsController {
    /// cgroup v1 pids controller; instances live under `base`.
    V1 {
        /// `.../pids/ephemera/<node>`.
        base: PathBuf,
    },
    /// cgroup v2 with the pids controller; instances live under `base`.
    V2 {
        /// `.../ephemera/<node>`.
        base: PathBuf,
    },
    /// No usable pids controller: only `RLIMIT_NPROC` bounds a fork bomb.
    Unavailable {
        /// Why, for the log.
        reason: String,
    },
}

fn write(path: &Path, value: &str) -> Result<(), SandboxError> {
    fs::write(path, value).map_err(io_err(format!("writing {value:?} to"), path))
}

impl PidsController {
    /// Finds a writable pids hierarchy under `/sys/fs/cgroup` for node `node_id`.
    pub fn detect(node_id: &str) -> PidsController {
        Self::detect_at(Path::new("/sys/fs/cgroup"), node_id)
    }

    /// As [`PidsController::detect`], with the cgroup mount at `root`.
    pub fn detect_at(root: &Path, node_id: &str) -> PidsController {
        let v1 = root.join("pids");
        if v1.join("tasks").exists() {
            let base = v1.join("ephemera").join(node_id);
            return match fs::create_dir_all(&base) {
                Ok(()) => PidsController::V1 { base },
                Err(e) => PidsController::Unavailable {
                    reason: format!("cgroup v1 pids at {} is not writable: {e}", v1.display()),
                },
            };
        }
        let controllers = root.join("cgroup.controllers");
        match fs::read_to_string(&controllers) {
            Ok(c) if c.split_whitespace().any(|w| w == "pids") => {
                let eph = root.join("ephemera");
                let base = eph.join(node_id);
                let setup = || -> Result<(), SandboxError> {
                    fs::create_dir_all(&base).map_err(io_err("creating", &base))?;
                    // Enable pids for the children of each level (the memory
                    // driver enables memory the same way; both may be listed).
                    for dir in [root, eph.as_path(), base.as_path()] {
                        let ctl = dir.join("cgroup.subtree_control");
                        let now = fs::read_to_string(&ctl).unwrap_or_default();
                        if !now.split_whitespace().any(|w| w == "pids") {
                            write(&ctl, "+pids")?;
                        }
                    }
                    Ok(())
                };
                match setup() {
                    Ok(()) => PidsController::V2 { base },
                    Err(e) => PidsController::Unavailable {
                        reason: format!("cannot set up {} with +pids: {e}", base.display()),
                    },
                }
            }
            Ok(_) => PidsController::Unavailable {
                reason: "cgroup v2 without the pids controller".into(),
            },
            Err(_) => PidsController::Unavailable {
                reason: format!("no cgroup v1 pids or v2 hierarchy at {}", root.display()),
            },
        }
    }

    /// Creates (v2: or reuses) the cgroup of instance `instance_id` with at
    /// most `max` tasks; `None` when no pids controller is available.
    pub fn create(&self, instance_id: &str, max: u64) -> Result<Option<PidsCgroup>, SandboxError> {
        let (base, v2) = match self {
            PidsController::V1 { base } => (base, false),
            PidsController::V2 { base } => (base, true),
            PidsController::Unavailable { .. } => return Ok(None),
        };
        if instance_id.is_empty()
            || instance_id.contains('/')
            || instance_id == "."
            || instance_id == ".."
        {
            return Err(SandboxError::Io {
                what: "creating a pids cgroup for instance".into(),
                path: base.join(instance_id),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a plain name"),
            });
        }
        let path = base.join(instance_id);
        fs::create_dir_all(&path).map_err(io_err("creating", &path))?;
        let cg = PidsCgroup { path, v2 };
        if let Err(e) = cg.set_max(max) {
            let _ = fs::remove_dir(&cg.path);
            return Err(e);
        }
        Ok(Some(cg))
    }

    /// Kills and removes instance cgroups left by an earlier run of this node.
    pub fn cleanup_stale(&self) -> Vec<SandboxError> {
        let base = match self {
            PidsController::V1 { base } | PidsController::V2 { base } => base,
            PidsController::Unavailable { .. } => return Vec::new(),
        };
        let Ok(entries) = fs::read_dir(base) else {
            return Vec::new();
        };
        let v2 = matches!(self, PidsController::V2 { .. });
        entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| {
                PidsCgroup { path: e.path(), v2 }
                    .kill_and_remove(Duration::from_secs(5))
                    .err()
            })
            .collect()
    }

    /// Removes the node's (empty) directory.
    pub fn remove_base(&self) {
        if let PidsController::V1 { base } | PidsController::V2 { base } = self {
            let _ = fs::remove_dir(base);
        }
    }
}

/// One instance's pids cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PidsCgroup {
    /// Its directory.
    path: PathBuf,
    /// v2 (else v1).
    v2: bool,
}

impl PidsCgroup {
    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file a process writes `0` into to join.
    pub fn procs_file(&self) -> PathBuf {
        self.path.join("cgroup.procs")
    }

    /// Sets the bound on its tasks.
    pub fn set_max(&self, max: u64) -> Result<(), SandboxError> {
        write(&self.path.join("pids.max"), &max.to_string())
    }

    /// The bound, if readable (`None` also for "max").
    pub fn max(&self) -> Option<u64> {
        self.read("pids.max")
    }

    /// Tasks in it now.
    pub fn current(&self) -> Option<u64> {
        self.read("pids.current")
    }

    /// Pids in it now.
    pub fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.procs_file())
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    fn read(&self, file: &str) -> Option<u64> {
        fs::read_to_string(self.path.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Stops it from forking (`pids.max` = 0), SIGKILLs every process in it
    /// and removes it, waiting at most `within` for them to go. Blocking.
    pub fn kill_and_remove(&self, within: Duration) -> Result<(), SandboxError> {
        let deadline = Instant::now() + within;
        if !self.path.exists() {
            return Ok(());
        }
        let _ = self.set_max(0);
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
                        return Err(SandboxError::Io {
                            what: "removing".into(),
                            path: self.path.clone(),
                            source,
                        })
                    }
                }
            }
            for pid in pids {
                // SAFETY: plain FFI call with a pid read from cgroup.procs.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            if Instant::now() >= deadline {
                return Err(SandboxError::CgroupBusy {
                    path: self.path.clone(),
                    waited: within,
                });
            }
            // Killed processes leave the cgroup within milliseconds; poll
            // until they have (bounded by the deadline above).
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fake_v2_tree_enables_pids_and_writes_the_bound() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let c = PidsController::detect_at(root.path(), "n1");
        let PidsController::V2 { base } = &c else {
            panic!("expected v2, got {c:?}")
        };
        assert_eq!(base, &root.path().join("ephemera/n1"));
        for dir in ["", "ephemera", "ephemera/n1"] {
            let ctl = root.path().join(dir).join("cgroup.subtree_control");
            assert_eq!(
                fs::read_to_string(&ctl).unwrap(),
                "+pids",
                "{}",
                ctl.display()
            );
        }
        let cg = c.create("i1", 64).unwrap().unwrap();
        assert_eq!(cg.path(), base.join("i1"));
        assert_eq!(cg.max(), Some(64));
        assert!(c.create("../escape", 1).is_err());
    }

    #[test]
    fn fake_v1_tree_and_nothing_mounted() {
        let root = tempfile::tempdir().unwrap();
        let none = PidsController::detect_at(root.path(), "n1");
        assert!(matches!(none, PidsController::Unavailable { .. }));
        assert!(none.create("i", 1).unwrap().is_none());
        fs::create_dir_all(root.path().join("pids")).unwrap();
        fs::write(root.path().join("pids/tasks"), "").unwrap();
        let c = PidsController::detect_at(root.path(), "n1");
        assert_eq!(
            c,
            PidsController::V1 {
                base: root.path().join("pids/ephemera/n1")
            }
        );
        let cg = c.create("i1", 7).unwrap().unwrap();
        assert_eq!(cg.max(), Some(7));
        assert_eq!(
            cg.procs_file(),
            root.path().join("pids/ephemera/n1/i1/cgroup.procs")
        );
    }
}
