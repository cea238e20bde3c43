//! Ephemera's operating-system helpers, in one place so each is written
//! once and its `unsafe` is reviewed once: memory cgroups (v1 and v2),
//! joining a cgroup between fork and exec, signalling processes, pipes;
//! and the small helpers benches, tests and the image builder share (ports,
//! a seeded RNG, commands with deadlines).
//!
//! It owns the raw system calls the agent, the CLI (`ephemera run`) and the
//! benches need outside the intercept library (which has its own, since it
//! runs inside hooks). It does not decide anything: limits, pids and paths
//! come from its callers.
//!
//! Layout:
//! - [`cgroup`]: a node's cgroup hierarchy ([`cgroup::Driver`]) and one
//!   instance's memory cgroup ([`cgroup::Cgroup`]).
//! - [`process`]: `kill`, process groups, liveness, pipes, and joining a
//!   cgroup from the child before `exec`.
//! - [`command`]: running a program with a deadline, its output captured.
//! - [`net`]: free loopback ports for benches and tests.
//! - [`rng`]: a seeded generator for benches and test drivers.
//! - [`scoped`]: a memory cgroup for one test or bench run.

pub mod cgroup;
pub mod command;
pub mod net;
pub mod process;
pub mod rng;
pub mod scoped;

pub use cgroup::{Cgroup, CgroupError, Driver};
