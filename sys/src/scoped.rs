//! A memory cgroup for one test or bench run (v1 or v2, wherever
//! [`Driver::detect_at`] finds one): commands started through it join it
//! before `exec`; dropping it kills what is left in it and removes it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cgroup::{Cgroup, Driver};

/// A memory cgroup of its own for a run, removed on drop.
#[derive(Debug)]
pub struct ScopedCgroup {
    driver: Driver,
    cgroup: Cgroup,
}

impl ScopedCgroup {
    /// A fresh cgroup limited to `limit` bytes, named after `purpose` and
    /// this process; `None` without cgroup rights (not root, no memory
    /// controller), so callers can skip.
    pub fn create(purpose: &str, limit: u64) -> Option<ScopedCgroup> {
        let node = format!("{purpose}-{}", std::process::id());
        let driver = Driver::detect_at(Path::new("/sys/fs/cgroup"), &node);
        match driver.create("run", limit) {
            Ok(Some(cgroup)) => Some(ScopedCgroup { driver, cgroup }),
            _ => {
                driver.remove_base();
                None
            }
        }
    }

    /// The cgroup (usage, OOM kills, limit).
    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// `program` as a command whose process joins this cgroup before `exec`.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::io::Result<Command> {
        let mut cmd = Command::new(program);
        crate::process::join_cgroup_on_exec(&mut cmd, &self.cgroup.procs_file())?;
        Ok(cmd)
    }
}

impl Drop for ScopedCgroup {
    fn drop(&mut self) {
        let _ = self.cgroup.kill_and_remove(Duration::from_secs(5));
        self.driver.remove_base();
    }
}
