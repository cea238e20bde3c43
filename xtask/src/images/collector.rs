//! `ephemera/otel-collector`: the static `ephemera-collector` (package
//! `ephemera-telemetry`), which stores the OTLP spans it receives as JSON
//! lines. `compose/docker-compose.otel.yml` runs it; `compose/up.sh` and
//! the cluster tests add that file when this image exists.

use std::path::Path;

use anyhow::Result;
use ephemera_domain::image;

use super::Build;
use crate::rootfs::Rootfs;
use crate::{cargo, docker, elf};

/// The image's Dockerfile (the context holds `root/`).
const DOCKERFILE: &str = "\
FROM scratch
COPY root/ /
ENTRYPOINT [\"/ephemera-collector\"]
CMD [\"--listen\", \"0.0.0.0:4317\", \"--out\", \"/data/spans.jsonl\"]
";

/// Builds the binary, stages, builds and smoke-tests the image.
pub fn build(b: &mut Build) -> Result<()> {
    b.step("cargo: static ephemera-collector", |b| {
        if b.run_cargo {
            // Its own cargo run: features resolve as for the collector
            // alone, so the other static binaries are not rebuilt.
            let args = ["-p", "ephemera-telemetry", "--bin", "ephemera-collector"];
            b.cargo.build_static(&args)?;
        }
        elf::ensure_static(&cargo::built(&b.cargo.static_out(), "ephemera-collector")?)
    })?;
    b.image_steps(
        image::COLLECTOR_IMAGE_REPO,
        "otel-collector",
        stage,
        |_, name| docker::run(&[name, "--help"]).map(drop),
    )
}

fn stage(b: &Build, context: &Path) -> Result<()> {
    let root = Rootfs::fresh(context.join("root"))?;
    root.tmp()?;
    root.dirs(&["/data"])?;
    let bin = b.cargo.static_out().join("ephemera-collector");
    elf::strip_debug(&[root.install(&bin, "/ephemera-collector", 0o755)?])?;
    std::fs::write(context.join("Dockerfile"), DOCKERFILE)?;
    Ok(())
}
