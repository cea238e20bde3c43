//! `ephemera/ephemera`: the static `ephemera` (CLI, controller, agent) and
//! `ephemera-proxy`, nothing else: `FROM scratch`, entry point `/ephemera`.
//! The compose file runs controllers and agents from it (its health checks
//! call `/ephemera`).

use std::path::{Path, PathBuf};

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
        b.cargo
            .build_static(&["-p", "ephemera-cli", "-p", "ephemera-node-agent", "--bins"])?;
    }
    for name in ["ephemera", "ephemera-proxy"] {
        elf::ensure_static(&cargo::built(&b.cargo.static_out(), name)?)?;
    }
    Ok(())
}

/// Stages, builds and smoke-tests the image.
pub fn build(b: &mut Build) -> Result<()> {
    b.image_steps(image::EPHEMERA_IMAGE_REPO, "ephemera", stage, |_, name| {
        docker::run(&[name, "--version"]).map(drop)
    })
}

fn stage(b: &Build, context: &Path) -> Result<()> {
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
