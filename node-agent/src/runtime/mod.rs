//! Container runtimes: how a function instance is started, fed, resized and
//! stopped. The tenant actor sees only the traits here.
//!
//! - [`Runtime`]: starts instances.
//! - [`Instance`]: one running instance; runs activations one at a time.
//! - [`Limits`]: the part of an instance the actor resizes and watches,
//!   shareable while an activation runs.
//! - [`process`]: a child `ephemera-proxy` in a fresh memory cgroup.
//! - [`docker`]: the same proxy in a container on the host's docker engine.
//! - `limits`: the [`Limits`] both share: control block and cgroup, resized
//!   by writing the cgroup (process) or through the engine (docker).
//! - memory cgroups come from `ephemera_sys::cgroup` (v1 and v2).
//! - [`confine`]: each instance under its tenant's uid, sandboxed.
//! - [`fake`]: an in-memory runtime for unit tests of the actor.

pub mod confine;
pub mod docker;
pub mod fake;
mod limits;
pub mod process;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ephemera_control_block::{Counters, Mode};
use futures::future::BoxFuture;

/// What to start.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    /// Unique id of the new instance.
    pub instance_id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Function name.
    pub function: String,
    /// The materialised code directory.
    pub code_dir: PathBuf,
    /// Launcher command (`/bin/sh -c`, inside `code_dir`).
    pub cmd: String,
    /// Initial memory limit (T_lim).
    pub memory_bytes: u64,
    /// Tier mode.
    pub mode: Mode,
}

impl InstanceSpec {
    /// `tenant/function`, as used in messages.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.tenant, self.function)
    }
}

/// One activation to run.
#[derive(Debug, Clone)]
pub struct Activation {
    /// The invocation id.
    pub id: String,
    /// `tenant/function`.
    pub action_name: String,
    /// The input document.
    pub input: serde_json::Value,
    /// How long it may run.
    pub timeout: Duration,
}

/// A finished activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// The JSON value the function returned.
    pub result: serde_json::Value,
    /// Time inside the instance.
    pub duration: Duration,
}

/// Why an activation did not produce a value. Whether the instance survives
/// is [`RunError::instance_dead`].
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RunError {
    /// The launcher printed a non-JSON line on fd 3 (the instance stays).
    #[error("returned a non-JSON result: {output}")]
    NonJson {
        /// The first bytes it printed.
        output: String,
    },
    /// The launcher exited.
    #[error("launcher exited with {status}{}", tail_suffix(.stderr_tail))]
    Exited {
        /// "status N" or "signal N" or "unknown status".
        status: String,
        /// The end of its stderr.
        stderr_tail: String,
        /// It had exited before this activation reached it.
        idle: bool,
    },
    /// The activation ran past its timeout; the launcher was killed.
    #[error("timed out after {timeout_ms} ms{}", tail_suffix(.stderr_tail))]
    Timeout {
        /// The timeout.
        timeout_ms: u64,
        /// The end of its stderr.
        stderr_tail: String,
    },
    /// The agent lost the proxy (it crashed or the socket broke).
    #[error("lost the instance's proxy: {0}")]
    Proxy(String),
    /// The instance was stopped (agent shutting down).
    #[error("the instance was stopped")]
    Stopped,
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; stderr ends with:\n{tail}")
    }
}

impl RunError {
    /// True when the instance cannot serve another activation.
    pub fn instance_dead(&self) -> bool {
        !matches!(self, RunError::NonJson { .. })
    }

    /// This error, saying that the launcher was OOM-killed, when it is an
    /// exit (the runtime found the kill in the cgroup or the engine).
    fn oom_killed(self) -> RunError {
        match self {
            RunError::Exited {
                status,
                stderr_tail,
                idle,
            } => RunError::Exited {
                status: format!("{status} (OOM-killed: it exceeded its memory limit)"),
                stderr_tail,
                idle,
            },
            other => other,
        }
    }
}

/// Why an instance could not be started or resized.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// An I/O error on a named path or action.
    #[error("{what}: {source}")]
    Io {
        /// What failed, with its path.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The instance did not come up.
    #[error("instance {instance} of {function} failed to start: {reason}")]
    Start {
        /// The instance id.
        instance: String,
        /// `tenant/function`.
        function: String,
        /// Why.
        reason: String,
    },
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] ephemera_sys::CgroupError),
    /// This runtime is not available.
    #[error("runtime {0} is not implemented yet")]
    Unsupported(&'static str),
}

/// Starts instances.
pub trait Runtime: Send + Sync + 'static {
    /// Starts one instance and waits until it can take activations.
    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<Box<dyn Instance>, RuntimeError>>;
}

/// One running instance. Owned by one worker task: activations run one at
/// a time, in order.
pub trait Instance: Send + std::fmt::Debug {
    /// The launcher's pid.
    fn launcher_pid(&self) -> u32;
    /// The resizable, observable part of the instance.
    fn limits(&self) -> Arc<dyn Limits>;
    /// Runs one activation.
    fn run(&mut self, activation: Activation) -> BoxFuture<'_, Result<Output, RunError>>;
    /// Kills the instance and removes everything it left (cgroup, files).
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The memory side of an instance, used by the tenant actor while the
/// instance runs.
pub trait Limits: Send + Sync + std::fmt::Debug {
    /// Applies a new memory limit: the cgroup (refused below current usage)
    /// and the control block.
    fn set_limit(&self, bytes: u64) -> BoxFuture<'_, Result<(), RuntimeError>>;
    /// Publishes a limit to the tier only (so it evicts before the cgroup
    /// shrinks).
    fn announce_limit(&self, bytes: u64);
    /// Memory the instance uses now, if known.
    fn usage(&self) -> Option<u64>;
    /// Most memory the instance ever used, if known.
    fn max_usage(&self) -> Option<u64>;
    /// The tier's counters.
    fn counters(&self) -> Counters;
    /// Reads and clears the tier's safeguard flag.
    fn take_safeguard(&self) -> bool;
}
