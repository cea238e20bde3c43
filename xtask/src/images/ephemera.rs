//! `ephemera/ephemera`: the static `ephemera` (CLI, controller, agent) and
//! `ephemera-proxy`, nothing else: `FROM scratch`, entry point `/ephemera`.
//! The compose file runs controllers and agents from it (its health checks
//! call `/ephemera`).

use std::path::PathBuf;

use anyhow::Result;
use ephemera_domain::image;

use super::Build;
use crate::rootfs::Rootfs;
use crate::{cargo, docker, elf};

/// The image's Dockerfile (the context holds `root/`).
const DOCKERFILE: &str = "\
# ephemera/ephemera: the static `ephemera` (CLI, controller, agent) and
# `ephemera-proxy`, nothing else. Built by `cargo xtask images` from a staged
# rootfs (context = that rootfs); no registry needed.
FROM scratch
COPY root/ /
ENV PATH=/
ENTRYPOINT [\"/ephemera\"]
CMD [\"--help\"]
";

/// The static binaries this image and `ephemera/python` share: one cargo
/// run for both packages, so features resolve the same on every rerun.
pub fn build_binaries(b: &mut Build) -> Result<()> {
    if b.run_cargo {
        b.cargo.build_static(&[
            "-p",
            "ephemera-control-plane",
            "-p",
            "ephemera-node-agent",
            "--bins",
        ])?;
    }
    for name in ["ephemera", "ephemera-proxy"] {
        elf::ensure_static(&cargo::built(&b.cargo.static_out(), name)?)?;
    }
    Ok(())
}

/// Stages, builds and smoke-tests the image.
pub fn build(b: &mut Build) -> Result<()> {
    let name = b.image(image::EPHEMERA_IMAGE_REPO);
    let context = b.context("ephemera");
    b.step("stage ephemera/ephemera", |b| stage(b, &context))?;
    b.step("docker build ephemera/ephemera", |b| {
        b.docker.build(&name, &context)
    })?;
    b.step("smoke ephemera/ephemera", |_| {
        docker::run(&[&name, "--version"])?;
        Ok(())
    })
}

fn stage(b: &Build, context: &std::path::Path) -> Result<()> {
    let root = Rootfs::fresh(context.join("root"))?;
    root.tmp()?;
    root.dirs(&["/data", "/etc"])?;
    let out = b.cargo.static_out();
    let bins: Vec<PathBuf> = [
        root.install(&out.join("ephemera"), "/ephemera", 0o755)?,
        root.install(&out.join("ephemera-proxy"), "/ephemera-proxy", 0o755)?,
    ]
    .into();
    elf::strip_debug(&bins)?;
    root.write(
        "/etc/passwd",
        "root:x:0:0:root:/:/ephemera\nnobody:x:65534:65534:nobody:/:/ephemera\n",
    )?;
    root.write("/etc/group", "root:x:0:\nnogroup:x:65534:\n")?;
    std::fs::write(context.join("Dockerfile"), DOCKERFILE)?;
    Ok(())
}
