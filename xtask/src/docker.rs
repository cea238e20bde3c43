//! The Docker engine, through its CLI: building an image from a staged
//! context with the classic builder (no buildx here, and nothing may be
//! pulled: every Dockerfile starts `FROM scratch`), running a container for
//! a smoke check, and removing the images a rebuild superseded.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::host;

/// Longest a `docker build` of a staged context may take.
const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Longest a smoke run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest a quick query (`info`, `inspect`, `rmi`, `image ls`) may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds images, remembering which ones each rebuild untagged.
#[derive(Debug, Default)]
pub struct Docker {
    /// Ids of images that lost their tag to a rebuild, oldest first.
    superseded: Vec<String>,
}

impl Docker {
    /// Fails unless the engine answers.
    pub fn check_engine() -> Result<()> {
        docker(&["info", "--format", "{{.ServerVersion}}"], QUERY_TIMEOUT)
            .context("cannot talk to the Docker engine (is it running, may this user use it?)")?;
        Ok(())
    }

    /// `docker build -t name context` with the classic builder; the image
    /// the tag named before, if any, is remembered as superseded.
    pub fn build(&mut self, name: &str, context: &Path) -> Result<()> {
        let old = image_id(name);
        host::run(
            Command::new("docker")
                .env("DOCKER_BUILDKIT", "0")
                .args(["build", "-q", "-t", name])
                .arg(context),
            BUILD_TIMEOUT,
        )
        .with_context(|| format!("docker build of {name} failed"))?;
        let new = image_id(name).with_context(|| format!("{name} missing after its build"))?;
        if let Some(old) = old.filter(|old| *old != new) {
            self.superseded.push(old);
        }
        Ok(())
    }

    /// Removes the images this run untagged, newest first; one still used
    /// (by a container, or as a parent) is kept.
    pub fn remove_superseded(&self) {
        for id in self.superseded.iter().rev() {
            if docker(&["rmi", id], QUERY_TIMEOUT).is_err() {
                let short = id.trim_start_matches("sha256:");
                host::log(format!(
                    "kept superseded image {} (still in use)",
                    &short[..12.min(short.len())]
                ));
            }
        }
    }
}

/// `docker run --rm ARGS` (a smoke check); its stdout.
pub fn run(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("docker");
    cmd.args(["run", "--rm"]).args(args);
    host::stdout(&mut cmd, RUN_TIMEOUT)
}

/// The id of image `name`, if the engine has it.
pub fn image_id(name: &str) -> Option<String> {
    docker(&["image", "inspect", "-f", "{{.Id}}", name], QUERY_TIMEOUT)
        .ok()
        .map(|id| id.trim().to_string())
}

/// One line per `ephemera/*` image tagged `tag`: name, size, id.
pub fn list(tag: &str) -> Result<String> {
    let filter = format!("reference=ephemera/*:{tag}");
    let out = docker(
        &[
            "image",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Repository}}:{{.Tag}}\t{{.Size}}\t{{.ID}}",
        ],
        QUERY_TIMEOUT,
    )?;
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    Ok(lines.join("\n"))
}

fn docker(args: &[&str], timeout: Duration) -> Result<String> {
    host::stdout(Command::new("docker").args(args), timeout)
}
