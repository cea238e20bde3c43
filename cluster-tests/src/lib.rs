//! Ephemera's cluster tests: the system as its users run it, as separate
//! processes or containers, under faults. This crate holds the helpers the
//! tests in `tests/` share; the tests are the point.
//!
//! It owns: starting controller processes on loopback ports and killing and
//! restarting them; the docker-compose cluster of `compose/` (images built
//! once with `cargo xtask images`, a project and ports of its own, faults
//! injected with `docker`, everything removed afterwards); waiting with
//! deadlines. It does not build binaries (the tests run the workspace's
//! `ephemera`, built by `cargo build --workspace`) nor define what the
//! cluster does: the controllers, agents and images under test do.
//!
//! Layout:
//! - [`controllers`]: [`Controllers`], controller processes forming one
//!   Raft group; [`authed`] requests with [`ADMIN_TOKEN`].
//! - [`dev`]: [`dev::DevCluster`], the embedded cluster (`ephemera dev`) and
//!   the CLI against it.
//! - [`compose`]: the docker-compose cluster, for fault tests.
//! - here: [`binary`] (the built `ephemera`), [`free_ports`], and waiting
//!   for a condition ([`wait_for`], [`wait_until`]).
//!
//! Tests (`tests/`): `raft_failover` and `membership` (controller
//! processes), `agents` (agent processes), `attacks` (an attacker against
//! every surface of the embedded cluster), `compose` (the compose cluster
//! under faults and attacks; `EPHEMERA_SKIP_COMPOSE=1` skips it).

pub mod compose;
pub mod controllers;
pub mod dev;

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use controllers::{authed, Controllers, ADMIN_TOKEN};

/// The `ephemera` binary next to this test's target directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (`cargo build --workspace`, as scripts/test does)",
        path.display()
    );
    path
}

/// `n` distinct free loopback ports (see [`ephemera_sys::net::free_ports`]).
pub fn free_ports(n: usize) -> Vec<u16> {
    ephemera_sys::net::free_ports(n).expect("free loopback ports")
}

/// Polls `f` every 50 ms until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until(what, timeout, || {
        let attempt = f();
        async move { attempt.await.ok_or("not yet") }
    })
    .await
}

/// Polls `f` every 50 ms until it returns `Ok`, or fails after `timeout`
/// with the last `Err` it gave.
pub async fn wait_until<T, E, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match f().await {
            Ok(v) => return v,
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
