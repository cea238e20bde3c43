//! `ephemera-sandbox` owns how a function instance is confined on a node:
//! function code is untrusted (ARCHITECTURE.md, "Trust zones"), so the
//! process runtime starts every instance (`ephemera-proxy` and everything it
//! runs) under its tenant's own uid, with a cleared environment,
//! `no_new_privs`, a pids limit, a Landlock filesystem view of its own code
//! (read-only), instance directory, tier directory and control block plus the
//! runtime's libraries, and a seccomp filter for what no function needs.
//!
//! It does not start or supervise instances (the node agent's runtimes do),
//! create memory cgroups (the agent's cgroup driver does; the child joins
//! them through [`SandboxPolicy::join_cgroup`]), copy code, or talk to Docker:
//! for the Docker runtime it only describes the hardening as data
//! ([`DockerHardening`]). It needs root (or `CAP_SETUID`, `CAP_SETGID`,
//! `CAP_CHOWN` and write access to the cgroup tree) to apply a policy.
//!
//! Use:
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ephemera_sandbox::{PidsController, SandboxPolicy, TenantUids, UidRange};
//! let uids = TenantUids::open("/var/lib/ephemera".as_ref(), UidRange::default())?;
//! let pids = PidsController::detect("node-1");
//! let cg = pids.create("inst-1", 512)?;
//! let mut policy = SandboxPolicy::new(uids.ids("acme")?)
//!     .code_dir("/var/lib/ephemera/code/ab12")
//!     .instance_dir("/var/lib/ephemera/instances/inst-1")
//!     .tier_dir("/var/lib/ephemera/instances/inst-1/tmp")
//!     .control_block("/var/lib/ephemera/instances/inst-1/control")
//!     .read_exec("/usr/local/bin/ephemera-proxy")
//!     .env("PATH", "/usr/local/bin:/usr/bin:/bin");
//! if let Some(cg) = &cg {
//!     policy = policy.pids_cgroup(cg);
//! }
//! policy.prepare_dirs()?;
//! let mut cmd = std::process::Command::new("/usr/local/bin/ephemera-proxy");
//! let applied = policy.apply_to(&mut cmd)?;
//! let child = cmd.spawn().map_err(|e| applied.explain(e))?;
//! # drop(child); Ok(()) }
//! ```
//!
//! Layout:
//! - `uids`: [`TenantUids`], the persisted tenant → uid map; [`Ids`], [`UidRange`].
//! - `policy`: [`SandboxPolicy`] (builder, [`SandboxPolicy::prepare_dirs`],
//!   [`SandboxPolicy::apply_to`]) and [`Applied`], what was put in force.
//! - `view`: the filesystem view and the Landlock ruleset ([`view::PathAccess`],
//!   [`LandlockReport`]).
//! - `seccomp`: the deny-list filter ([`seccomp::DENIED`], [`SeccompReport`]).
//! - `child`: the async-signal-safe steps between fork and exec.
//! - `pids`: [`PidsController`] and [`PidsCgroup`], cgroup v1 and v2.
//! - `dirs`: owners and modes ([`dirs::prepare_instance`],
//!   [`dirs::prepare_code_dir`], [`dirs::check_reachable`]).
//! - `docker`: [`DockerHardening`].
//! - `error`: [`SandboxError`].

mod child;
pub mod dirs;
pub mod docker;
mod error;
pub mod pids;
mod policy;
pub mod seccomp;
mod uids;
pub mod view;

pub use docker::{DockerHardening, Ulimit};
pub use error::SandboxError;
pub use pids::{PidsCgroup, PidsController, DEFAULT_PIDS_MAX};
pub use policy::{Applied, SandboxPolicy, DEFAULT_RLIMIT_NPROC};
pub use seccomp::SeccompReport;
pub use uids::{Ids, TenantUids, UidRange};
pub use view::{Enforcement, LandlockReport};
