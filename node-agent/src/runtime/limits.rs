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
