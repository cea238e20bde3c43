//! `cargo xtask images`: builds the compose cluster's images, locally, with
//! no registry:
//!
//! | image | recipe |
//! |---|---|
//! | `ephemera/ephemera:TAG` | [`ephemera`]: static `ephemera` + `ephemera-proxy` |
//! | `ephemera/python:TAG` | [`python`]: the host's CPython + libraries + `/bin/sh`, Ephemera's in-instance pieces |
//! | `ephemera/otel-collector:TAG` | [`collector`]: static `ephemera-collector` |
//!
//! Each recipe builds its binaries (cargo, into `target-static/`), stages a
//! root file system under `target-static/images/<image>/root`, writes the
//! Dockerfile next to it, builds the image and smoke-tests it. Idempotent:
//! cargo and the Docker layer cache make a rerun with no source change
//! quick (~15 s, mostly staging the Python tree). Images a rebuild untagged
//! are removed at the end; step times and image sizes are printed.

pub mod collector;
pub mod ephemera;
pub mod python;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::builder::BoolishValueParser;
use clap::ValueEnum;

use crate::cargo::Cargo;
use crate::docker::{self, Docker};
use crate::host;

/// Options of `cargo xtask images` (each also read from the environment).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Tag of every image.
    #[arg(long, env = "EPHEMERA_TAG", default_value = "dev")]
    tag: String,
    /// Only these images (comma separated; default: all).
    #[arg(long, env = "EPHEMERA_IMAGES", value_enum, value_delimiter = ',')]
    only: Vec<Image>,
    /// Cargo target directory of the images' binaries [default: <repo>/target-static].
    #[arg(long, env = "EPHEMERA_TARGET_DIR")]
    target_dir: Option<PathBuf>,
    /// Where image build contexts are staged [default: <target dir>/images].
    #[arg(long, env = "EPHEMERA_STAGE_DIR")]
    stage_dir: Option<PathBuf>,
    /// The Python copied into ephemera/python (a pyenv shim is resolved).
    #[arg(long, env = "EPHEMERA_PYTHON", default_value = "python3")]
    python: String,
    /// Ship precompiled .pyc in ephemera/python (faster cold starts, ~+15 MB).
    #[arg(long, env = "EPHEMERA_PY_PRECOMPILE", default_value = "true",
          value_parser = BoolishValueParser::new(), action = clap::ArgAction::Set)]
    precompile: bool,
    /// Use the binaries already built instead of running cargo.
    #[arg(long, env = "EPHEMERA_SKIP_CARGO", value_parser = BoolishValueParser::new(),
          action = clap::ArgAction::Set, default_value = "false", num_args = 0..=1,
          default_missing_value = "true")]
    skip_cargo: bool,
}

/// An image this task builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Image {
    /// `ephemera/ephemera`: the static CLI, controller and agent.
    Ephemera,
    /// `ephemera/python`: the function runtime image.
    Python,
    /// `ephemera/otel-collector`: the OTLP collector.
    Collector,
}

/// What every recipe works with.
#[derive(Debug)]
pub struct Build {
    /// The cargo builds (workspace root, target dir).
    pub cargo: Cargo,
    /// Where image contexts are staged, one directory per image.
    pub stage_dir: PathBuf,
    /// The images' tag.
    pub tag: String,
    /// Whether to run cargo at all.
    pub run_cargo: bool,
    /// Builds images and remembers the ones they superseded.
    pub docker: Docker,
    /// Step name and duration, in order.
    timings: Vec<(String, Duration)>,
}

impl Build {
    /// Runs `f` as the step `name`, timing it.
    pub fn step<T>(&mut self, name: &str, f: impl FnOnce(&mut Build) -> Result<T>) -> Result<T> {
        host::log(format!("== {name}"));
        let t0 = Instant::now();
        let out = f(self).with_context(|| format!("step `{name}`"))?;
        self.timings.push((name.to_string(), t0.elapsed()));
        Ok(out)
    }

    /// The workspace root.
    pub fn repo(&self) -> &Path {
        &self.cargo.repo
    }

    /// What every image goes through once its binaries are built: `stage`
    /// writes its context (`root/` and the Dockerfile) in
    /// `<stage dir>/<dir>`, `docker build` tags it `repo:TAG`, `smoke`
    /// checks the image by name.
    pub fn image_steps(
        &mut self,
        repo: &str,
        dir: &str,
        stage: impl FnOnce(&Build, &Path) -> Result<()>,
        smoke: impl FnOnce(&Build, &str) -> Result<()>,
    ) -> Result<()> {
        let name = format!("{repo}:{}", self.tag);
        let context = self.stage_dir.join(dir);
        self.step(&format!("stage {repo}"), |b| stage(b, &context))?;
        self.step(&format!("docker build {repo}"), |b| {
            b.docker.build(&name, &context)
        })?;
        self.step(&format!("smoke {repo}"), |b| smoke(b, &name))
    }
}

/// Builds the images `args` asks for.
pub fn run(args: Args) -> Result<()> {
    let t0 = Instant::now();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace root")?
        .to_path_buf();
    let target_dir = args
        .target_dir
        .unwrap_or_else(|| repo.join("target-static"));
    let wants = |i: Image| args.only.is_empty() || args.only.contains(&i);
    let mut build = Build {
        stage_dir: args.stage_dir.unwrap_or_else(|| target_dir.join("images")),
        cargo: Cargo { repo, target_dir },
        tag: args.tag,
        run_cargo: !args.skip_cargo,
        docker: Docker::default(),
        timings: Vec::new(),
    };
    build.step("preflight", |b| preflight(b, wants(Image::Python)))?;
    if wants(Image::Ephemera) || wants(Image::Python) {
        build.step("cargo: static ephemera + proxy", ephemera::build_binaries)?;
    }
    if wants(Image::Ephemera) {
        ephemera::build(&mut build)?;
    }
    if wants(Image::Python) {
        python::build(&mut build, &args.python, args.precompile)?;
    }
    if wants(Image::Collector) {
        collector::build(&mut build)?;
    }
    build.docker.remove_superseded();

    eprintln!("\nstep timings:");
    for (name, d) in &build.timings {
        eprintln!("  {name:<38} {:>4}s", d.as_secs());
    }
    eprintln!("  {:<38} {:>4}s", "total", t0.elapsed().as_secs());
    eprintln!("\nimages:");
    for line in docker::list(&build.tag)?.lines() {
        eprintln!("  {line}");
    }
    Ok(())
}

/// The tools every recipe needs, installed when missing (as root, with apt-get).
fn preflight(build: &mut Build, python: bool) -> Result<()> {
    host::which("cargo").context("cargo not found (install the Rust toolchain)")?;
    host::which("docker").context("the docker CLI not found")?;
    Docker::check_engine()?;
    host::require("strip", "binutils")?;
    host::require("readelf", "binutils")?;
    host::require("ldd", "libc-bin")?;
    host::require("ldconfig", "libc-bin")?;
    if python {
        host::require("dash", "dash")?;
        host::require("env", "coreutils")?;
    }
    anyhow::ensure!(
        build.repo().join("Cargo.toml").is_file(),
        "{} is not the Ephemera workspace (no Cargo.toml)",
        build.repo().display()
    );
    if build.run_cargo {
        build.cargo.ensure_target()?;
    }
    Ok(())
}
