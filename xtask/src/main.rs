//! `cargo xtask`: Ephemera's build tasks, in Rust (`.cargo/config.toml`
//! aliases `cargo xtask` to `cargo run -p xtask --`).
//!
//! `cargo xtask images [--tag T] [--only ephemera,python,collector]` builds
//! the images the compose cluster runs, locally: the engine has no registry,
//! so every image is `FROM scratch` with files staged on this host (static
//! binaries, or a CPython and its shared libraries). It does not start or
//! stop clusters (`compose/up.sh`, `compose/down.sh`, the cluster tests do).
//!
//! Layout:
//! - [`images`]: the `images` task: options, the order of steps, timings;
//!   one module per image's recipe ([`images::ephemera`],
//!   [`images::python`], [`images::collector`]).
//! - [`cargo`]: the static (`+crt-static`) and cdylib cargo builds.
//! - [`rootfs`]: staging an image's root: directories, files, trees with
//!   exclusions, and a program's `ldd` closure.
//! - [`elf`]: what an ELF file is: static or not, which libraries it loads.
//! - [`docker`]: `docker build` (classic builder), run, inspect, remove.
//! - [`host`]: the host tools the build needs, installed if missing; every
//!   external command with a deadline.

mod cargo;
mod docker;
mod elf;
mod host;
mod images;
mod rootfs;

use clap::{Parser, Subcommand};

/// Ephemera's build tasks.
#[derive(Parser)]
#[command(name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the compose cluster's images locally (no registry needed).
    Images(images::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().task {
        Task::Images(args) => images::run(args),
    }
}
