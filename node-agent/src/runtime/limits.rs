//! The memory side of a real instance, written once for the process and
//! docker runtimes: its control block (the tier's limit, counters and
//! safeguard flag) and its memory cgroup (usage, peak, OOM kills). Only how
//! a new limit reaches the cgroup differs between them ([`ApplyLimit`]):
//! the process runtime writes the cgroup's file, docker asks the engine.

use ephemera_control_block::{ControlBlock, Counters};
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
    /// The control block, mapped.
    control: ControlBlock,
    /// The memory cgroup, if cgroups are available (or the container's was
    /// found).
    cgroup: Option<Cgroup>,
    /// How a new limit reaches the cgroup.
    apply: A,
}

impl<A: ApplyLimit> InstanceLimits<A> {
    /// The limits of an instance with this control block and cgroup.
    pub(super) fn new(control: ControlBlock, cgroup: Option<Cgroup>, apply: A) -> Self {
        InstanceLimits {
            control,
            cgroup,
            apply,
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
            self.control.set_limit(bytes);
            Ok(())
        }
        .boxed()
    }

    fn announce_limit(&self, bytes: u64) {
        self.control.set_limit(bytes);
    }

    fn usage(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(Cgroup::usage)
    }

    fn max_usage(&self) -> Option<u64> {
        self.cgroup.as_ref().and_then(Cgroup::max_usage)
    }

    fn counters(&self) -> Counters {
        self.control.counters()
    }

    fn take_safeguard(&self) -> bool {
        self.control.take_safeguard()
    }
}
