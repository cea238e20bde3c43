//! The docker-compose cluster (`compose/`) for fault tests: builds the
//! images once per test binary (`cargo xtask images`), starts three
//! controllers and two agents under a project name and loopback ports of
//! its own (never a dev's `ephemera` cluster), injects faults with
//! `docker`, and removes every container, network, volume and agent data
//! dir it made when dropped, panics included. Every external command runs
//! with a deadline ([`ephemera_sys::command`]).
//!
//! Layout:
//! - [`docker`]: `docker` and `docker-compose` with deadlines;
//!   [`require_docker`] and [`build_images_once`].
//! - [`cluster`]: [`ComposeCluster`], one running cluster: bringing it up
//!   and waiting until it is ready, its names, ports and logs.
//! - [`teardown`]: removing a cluster (on drop) and what dead test
//!   processes left behind ([`reap_stale`]).
//! - [`faults`]: killing, restarting, pausing and partitioning containers.
//! - [`clients`]: gRPC clients of the controllers, their `Dump` and
//!   `Status`, waiting for an agreed leader.
//! - [`cli`]: the `ephemera` CLI against the cluster, plain or traced.
//! - [`collector`]: the spans the cluster's OTLP collector stored.

mod cli;
mod clients;
mod cluster;
mod collector;
mod docker;
mod faults;
mod teardown;

use std::path::{Path, PathBuf};

pub use clients::{connect, Client};
pub use cluster::{ComposeCluster, ComposeOptions};
pub use docker::{build_images_once, require_docker};
pub use teardown::reap_stale;

/// Prefix of every test project; the rest is `<pid>-<digits>` (see [`reap_stale`]).
pub const PROJECT_PREFIX: &str = "ephemera-t";
/// Controller member ids.
pub const CONTROLLERS: [u64; 3] = [1, 2, 3];
/// Agent node ids, in service order (`agent-1` is `node-1`).
pub const AGENTS: [&str; 2] = ["node-1", "node-2"];

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// `compose/`, where the compose files are.
fn compose_dir() -> PathBuf {
    repo_root().join("compose")
}

/// The tag of the images the cluster runs (`EPHEMERA_TAG`, default `dev`).
pub fn image_tag() -> String {
    std::env::var("EPHEMERA_TAG").unwrap_or_else(|_| "dev".into())
}
