//! The memory side of a real instance, written once for the process and
//! docker runtimes: its control block (the tier's limit, counters and
//! safeguard flag) and its memory cgroup (usage, peak, OOM kills). Only how
//! a new limit reaches the cgroup differs between them ([`ApplyLimit`]):
//! the process runtime writes the cgroup's file, docker asks the engine.
//!
//! The control block is written by the function's processes too: the agent
//! never maps it ([`ControlFile`]) and bounds what it reads from it.

use std::sync::atomic::{AtomicU64, Ordering};

use ephemera_control_block::{ControlFile, Counters};
use futures::future::BoxFuture;
use futures::FutureExt;

use super::{Limits, RuntimeError};
use ephemera_sys::Cgroup;

/// How a runtime puts a new memory limit on an instance's cgroup.
pub(super) trait ApplyLimit: Send + Sync + std::fmt::Debug {
    /// Sets the cgroup limit to `bytes`; `cgroup` is the instance's memory
    /// cgroup when it was found. Refused below current usage.
    fn apply<'a>(
        &'a self,
        cgroup: Option<&'a Cgroup>,
        bytes: u64,
    ) -> BoxFuture<'a, Result<(), RuntimeError>>;
}

/// An instance's control block and cgroup; resized through `A`.
#[derive(Debug)]
pub(super) struct InstanceLimits<A> {
    /// The control block, read and written without a mapping.
    control: ControlFile,
    /// The highest limit this instance has had: no process of it can have
    /// been resident beyond it, whatever its control block claims.
    highest_limit: AtomicU64,
    /// The memory cgroup, if cgroups are available (or the container's was
    /// found).
    cgroup: Option<Cgroup>,
    /// How a new limit reaches the cgroup.
    apply: A,
}

impl<A: ApplyLimit> InstanceLimits<A> {
    /// The limits of an instance with this control block and cgroup.
    pub(super) fn new(
        control: ControlFile,
        initial_limit: u64,
        cgroup: Option<Cgroup>,
        apply: A,
    ) -> Self {
        InstanceLimits {
            control,
            highest_limit: AtomicU64::new(initial_limit),
            cgroup,
            apply,
        }
    }

    /// Trims the tier files that dead processes of the instance had mapped
    /// back to their logical sizes (a killed process leaves its reservation,
    /// zero padding, in the kernel size). Owners still running are left
    /// alone; pids come from the function's own table, so only a pid the
    /// kernel says is gone counts as dead, and the repair itself never
    /// follows a symlink or leaves `tier` (see `ControlFile::repair`).
    pub(super) fn repair_tier(&self, tier: &std::path::Path) {
        let gone = |pid: u64| i32::try_from(pid).is_ok_and(ephemera_sys::process::gone);
        match self.control.repair(tier, |pid| !gone(pid)) {
            Ok(r) if r.trimmed > 0 => {
                tracing::info!(
                    files = r.trimmed,
                    bytes = r.bytes,
                    "tier repaired after a crash"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("tier repair of {}: {e}", tier.display()),
        }
    }

    /// Tells the tier its new limit (a failed write is the function's doing:
    /// it damaged its own block, and only its tier misses the news).
    fn publish(&self, bytes: u64) {
        self.highest_limit.fetch_max(bytes, Ordering::AcqRel);
        if let Err(e) = self.control.set_limit(bytes) {
            tracing::debug!("control block: {e}");
        }
    }

    /// The instance's memory cgroup, if any.
    pub(super) fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// True when the kernel OOM-killed a process of the instance.
    pub(super) fn oom_killed(&self) -> bool {
        self.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0)
    }
}

impl<A: ApplyLimit> Limits for InstanceLimits<A> {
    fn set_limit(&self, bytes: u64) -> BoxFuture<'_, Result<(), RuntimeError>> {
        async move {
            self.apply.apply(self.cgroup.as_ref(), bytes).await?;
            // The tier hears only of a limit the cgroup took.
            self.publish(bytes);
            Ok(())
        }
        .boxed()
    }

    fn announce_limit(&self, bytes: u64) {
        self.publish(bytes);
    }

    fn usage(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(Cgroup::usage)
    }

    fn max_usage(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(Cgroup::max_usage)
    }

    fn counters(&self) -> Counters {
        let mut c = self.control.counters();
        // Untrusted: a resident peak above every limit it ever had is forged.
        c.peak_native = c
            .peak_native
            .min(self.highest_limit.load(Ordering::Acquire));
        c
    }

    fn take_safeguard(&self) -> bool {
        self.control.take_safeguard()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ephemera_control_block::table::{ENTRY_WORDS, E_DEV, E_INO, E_OWNER, E_SIZE, TABLE_OFFSET};
    use ephemera_control_block::Mode;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[derive(Debug)]
    struct NoCgroup;

    impl ApplyLimit for NoCgroup {
        fn apply<'a>(
            &'a self,
            _: Option<&'a Cgroup>,
            _: u64,
        ) -> BoxFuture<'a, Result<(), RuntimeError>> {
            futures::future::ready(Ok(())).boxed()
        }
    }

    /// Writes entry `slot` of the tier table as a (vandal) function could.
    fn entry(control: &std::path::Path, slot: usize, words: &[(usize, u64)]) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(control)
            .unwrap();
        for &(w, v) in words {
            let at = TABLE_OFFSET + ((slot * ENTRY_WORDS + w) * 8) as u64;
            f.write_all_at(&v.to_le_bytes(), at).unwrap();
        }
    }

    #[test]
    fn a_dead_owners_file_is_trimmed_and_nothing_else_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let tier = dir.path().join("tmp");
        std::fs::create_dir(&tier).unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, vec![1u8; 8192]).unwrap();
        std::os::unix::fs::symlink(&outside, tier.join("link")).unwrap();
        let (dead, live) = (tier.join("dead"), tier.join("live"));
        std::fs::write(&dead, vec![7u8; 65536]).unwrap();
        std::fs::write(&live, vec![7u8; 65536]).unwrap();
        let control = dir.path().join("control");
        let limits = InstanceLimits::new(
            ControlFile::create(&control, 0, Mode::Memory).unwrap(),
            0,
            None,
            NoCgroup,
        );
        let id = |p: &std::path::Path| {
            let m = std::fs::metadata(p).unwrap();
            (m.dev(), m.ino())
        };
        let gone_pid = i32::MAX as u64;
        for (slot, path, owner) in [
            (1, &dead, gone_pid),
            (2, &live, u64::from(std::process::id())),
            (3, &outside, gone_pid),
        ] {
            let (dev, ino) = id(path);
            entry(
                &control,
                slot,
                &[(E_DEV, dev), (E_INO, ino), (E_SIZE, 100), (E_OWNER, owner)],
            );
        }
        // Garbage in the rest of the table must not crash the agent.
        entry(&control, 4, &[(E_DEV, u64::MAX), (E_INO, 1), (E_OWNER, 0)]);
        limits.repair_tier(&tier);
        assert_eq!(std::fs::read(&dead).unwrap(), vec![7u8; 100]);
        assert_eq!(std::fs::metadata(&live).unwrap().len(), 65536, "live owner");
        assert_eq!(std::fs::metadata(&outside).unwrap().len(), 8192, "symlink");
        // A block the function truncated: nothing to read, nothing done.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&control)
            .unwrap()
            .set_len(0)
            .unwrap();
        limits.repair_tier(&tier);
        assert_eq!(std::fs::metadata(&live).unwrap().len(), 65536);
    }
}
