//! `docker` and `docker-compose`, each call with a deadline: whether the
//! tests can run at all ([`require_docker`]) and the images they need
//! ([`build_images_once`]).

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ephemera_domain::image;
use ephemera_sys::command;

use super::{image_tag, repo_root};

/// Runs `cmd`; its stdout when it exits 0 within `timeout`, else an error
/// naming it, with its output.
pub(super) fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    command::stdout(cmd, timeout).map_err(|e| e.to_string())
}

/// `docker ARGS`; its stdout.
pub(super) fn docker(args: &[&str], timeout: Duration) -> Result<String, String> {
    run_ok(Command::new("docker").args(args), timeout)
}

/// Whether the compose tests should run: `false` (and says so loudly) when
/// `EPHEMERA_SKIP_COMPOSE=1`; panics when the Docker engine or
/// docker-compose is unavailable (CI has both).
pub fn require_docker() -> bool {
    if std::env::var("EPHEMERA_SKIP_COMPOSE").as_deref() == Ok("1") {
        eprintln!(
            "\n************************************************************\n\
             SKIPPED: docker compose cluster tests (EPHEMERA_SKIP_COMPOSE=1)\n\
             ************************************************************\n"
        );
        return false;
    }
    let t = Duration::from_secs(30);
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"], t) {
        panic!(
            "the docker compose tests need a running Docker engine, and `docker info` failed: {e}\n\
             (set EPHEMERA_SKIP_COMPOSE=1 to skip them)"
        );
    }
    if let Err(e) = run_ok(Command::new("docker-compose").arg("version"), t) {
        panic!(
            "the docker compose tests need docker-compose (v1): {e}\n\
             (set EPHEMERA_SKIP_COMPOSE=1 to skip them)"
        );
    }
    true
}

static BUILD: OnceLock<Result<(), String>> = OnceLock::new();

/// Builds the images with `cargo xtask images`, once per process; with
/// `EPHEMERA_NO_BUILD=1` only checks that they exist. Panics on failure.
pub fn build_images_once() {
    let result = BUILD.get_or_init(|| {
        if std::env::var("EPHEMERA_NO_BUILD").as_deref() != Ok("1") {
            let t0 = Instant::now();
            eprintln!("compose: building the images (cargo xtask images; ~7 min from nothing)");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            command::run_echoing(
                Command::new(cargo)
                    .current_dir(repo_root())
                    .args(["xtask", "images"])
                    // Cargo's own settings for this test run must not leak
                    // into xtask's build or its static builds.
                    .env_remove("CARGO_TARGET_DIR")
                    .env_remove("RUSTFLAGS")
                    .env_remove("CARGO_ENCODED_RUSTFLAGS")
                    .env_remove("CARGO_BUILD_TARGET")
                    .env_remove("CARGO_MAKEFLAGS"),
                Duration::from_secs(45 * 60),
                &|line| eprintln!("xtask| {line}"),
            )
            .map_err(|e| e.to_string())?;
            eprintln!("compose: images built in {:.0?}", t0.elapsed());
        }
        let tag = image_tag();
        for repo in [image::EPHEMERA_IMAGE_REPO, image::PYTHON_IMAGE_REPO] {
            let image = format!("{repo}:{tag}");
            docker(&["image", "inspect", &image], Duration::from_secs(30))
                .map_err(|e| format!("image {image} is missing (run cargo xtask images): {e}"))?;
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("building the compose images failed: {e}");
    }
}
