//! `ephemera/python`: the function runtime image, and the instance image of
//! the compose agents. A CPython copied from this host (stdlib without
//! tests, GUI and packaging tools, optionally precompiled) with the shared
//! libraries of everything ELF in it, `/bin/sh` (dash), `env` and a few
//! coreutils for `docker exec`, and Ephemera's in-instance pieces at the
//! paths the docker runtime uses ([`ephemera_domain::image`]): the proxy,
//! the intercept library and the launchers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ephemera_domain::image;

use super::Build;
use crate::rootfs::Rootfs;
use crate::{cargo, docker, elf, host};

/// Stdlib entries not shipped: tests, GUI, packaging tools, docs, the
/// static library, site-packages (names, `*` globs; as `tar --exclude`).
#[rustfmt::skip]
const EXCLUDES: &[&str] = &[
    "__pycache__", "*.pyc", "*.pyo", "site-packages", "dist-packages", "config-*",
    "test", "tests", "idle_test", "idlelib", "tkinter", "turtledemo", "turtle.py",
    "ensurepip", "lib2to3", "pydoc_data", "_tkinter.*", "_test*.so", "_ctypes_test*",
    "xxlimited*", "_xxtestfuzz*", "_xxsubinterpreters*", "_curses*", "readline.*",
    "nis.*", "ossaudiodev.*", "*.exe", "*.a",
];
/// Host tools copied next to `/bin/sh`, when the host has them in `/usr/bin`.
const TOOLS: &[&str] = &[
    "env", "cat", "ls", "mkdir", "rm", "cp", "mv", "ln", "sleep", "uname", "id", "true", "false",
];
/// The launchers shipped in [`image::BIN_DIR`], from `node-agent/src/launcher/`.
const LAUNCHERS: &[&str] = &["ephemera-python"];
/// The stdlib modules the examples need: checked in a chroot and in the image.
const IMPORTS: &str =
    "hashlib, json, random, tempfile, math, os, shutil, zipfile, subprocess, sqlite3";

/// A tiny script run through `/bin/sh` with the intercept preloaded: a file
/// in the tier directory (`/tmp`) written, measured and read back.
const PRELOADED: &str = "python3 -c \"
import os
with open('/tmp/smoke', 'w') as f: f.write('x' * 100000)
assert os.stat('/tmp/smoke').st_size == 100000
assert open('/tmp/smoke').read() == 'x' * 100000
\"";

/// Where the host's CPython keeps its pieces.
#[derive(Debug)]
struct Python {
    /// The interpreter, resolved (a pyenv shim leads here).
    exe: PathBuf,
    /// `3.11`.
    version: String,
    /// The stdlib directory.
    stdlib: PathBuf,
    /// Extension modules (inside the stdlib, or apart as on Debian).
    dynload: PathBuf,
    /// `libpython3.X.so.1.0` when the interpreter links it, with its directory.
    shared: Option<(PathBuf, String)>,
}

/// Builds the intercept, stages, builds and smoke-tests the image.
pub fn build(b: &mut Build, python: &str, precompile: bool) -> Result<()> {
    b.step("cargo: intercept cdylib", |b| {
        if b.run_cargo {
            b.cargo.build_intercept()?;
        }
        cargo::built(
            &b.cargo.target_dir.join("release"),
            "libephemera_intercept.so",
        )
        .map(drop)
    })?;
    let py = describe(python)?;
    host::log(format!(
        "python: {} ({}), stdlib {}",
        py.exe.display(),
        py.version,
        py.stdlib.display()
    ));
    b.image_steps(
        image::PYTHON_IMAGE_REPO,
        "python",
        |b, context| stage(b, &py, precompile, context),
        |b, name| smoke(b.repo(), name),
    )
}

/// Asks `python` where its pieces are (a JSON line from a short script).
fn describe(python: &str) -> Result<Python> {
    const SCRIPT: &str = r#"
import json, os, sys, sysconfig
v = sysconfig.get_config_var
print(json.dumps({
    "exe": os.path.realpath(sys.executable),
    "impl": sys.implementation.name,
    "major": sys.version_info[0],
    "version": "%d.%d" % sys.version_info[:2],
    "stdlib": sysconfig.get_paths()["stdlib"],
    "dynload": v("DESTSHARED") or os.path.join(sysconfig.get_paths()["platstdlib"], "lib-dynload"),
    "shared": bool(v("Py_ENABLE_SHARED")),
    "soname": v("INSTSONAME") or "",
    "libdir": v("LIBDIR") or "",
}))
"#;
    let exe =
        host::which(python).with_context(|| format!("{python} not found (set EPHEMERA_PYTHON)"))?;
    let out = host::stdout(
        Command::new(&exe).args(["-c", SCRIPT]),
        Duration::from_secs(60),
    )?;
    let v: serde_json::Value = serde_json::from_str(out.trim())
        .with_context(|| format!("{}: unexpected description {out:?}", exe.display()))?;
    let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    let py = Python {
        exe: text("exe").into(),
        version: text("version"),
        stdlib: text("stdlib").into(),
        dynload: text("dynload").into(),
        shared: (v["shared"] == true && !text("soname").is_empty())
            .then(|| (PathBuf::from(text("libdir")), text("soname"))),
    };
    ensure!(
        v["impl"] == "cpython" && v["major"] == 3,
        "{} is not CPython 3",
        py.exe.display()
    );
    ensure!(
        host::is_executable(&py.exe) && py.stdlib.is_dir() && py.dynload.is_dir(),
        "cannot find {}'s stdlib ({}) or lib-dynload ({})",
        py.exe.display(),
        py.stdlib.display(),
        py.dynload.display()
    );
    Ok(py)
}

/// Stages the image's root in `context/root`, and its Dockerfile.
fn stage(b: &Build, py: &Python, precompile: bool, context: &Path) -> Result<()> {
    let root = Rootfs::fresh(context.join("root"))?;
    root.mirror_host_toplevel_links()?;
    root.tmp()?;
    let lib_dir = Path::new(image::INTERCEPT)
        .parent()
        .context("intercept dir")?;
    let lib_dir = lib_dir.to_string_lossy();
    root.dirs(&[
        "/etc",
        "/usr/local/bin",
        "/usr/local/lib",
        image::BIN_DIR,
        &lib_dir,
        "/code",
    ])?;
    let pylib = stage_python(&root, py)?;
    stage_shell(&root)?;
    stage_ephemera(b, &root)?;
    stage_libraries(b, &root, py, &pylib)?;
    root.write(
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    )?;
    root.write("/etc/group", "root:x:0:\nnogroup:x:65534:\n")?;
    if precompile {
        // Unchecked-hash pycs: valid whatever the files' mtimes become in the image.
        let mut compile = Command::new(&py.exe);
        compile
            .args([
                "-m",
                "compileall",
                "-q",
                "-j0",
                "--invalidation-mode",
                "unchecked-hash",
            ])
            .arg("-s")
            .arg(root.path("/"))
            .args(["-p", "/"])
            .arg(root.path(&pylib));
        host::run(&mut compile, Duration::from_secs(600)).context("compileall failed")?;
    }
    if host::is_root() {
        // A quick check in a chroot before paying for a docker build.
        let import = format!("import {IMPORTS}, zlib, ssl");
        host::run(
            Command::new("chroot").arg(root.path("/")).args([
                "/usr/local/bin/python3",
                "-c",
                &import,
            ]),
            Duration::from_secs(60),
        )
        .context("the staged Python cannot import the stdlib modules the examples need")?;
    }
    std::fs::write(context.join("Dockerfile"), dockerfile())?;
    Ok(())
}

/// The interpreter and its stdlib, laid out as `/usr/local/{bin,lib/pythonX.Y}`,
/// and libpython; returns the stdlib's path in the image.
fn stage_python(root: &Rootfs, py: &Python) -> Result<String> {
    let ver = &py.version;
    let pylib = format!("/usr/local/lib/python{ver}");
    root.install(&py.exe, &format!("/usr/local/bin/python{ver}"), 0o755)?;
    root.symlink(&format!("python{ver}"), "/usr/local/bin/python3")?;
    root.symlink(&format!("python{ver}"), "/usr/local/bin/python")?;
    root.copy_tree(&py.stdlib, &pylib, EXCLUDES)?;
    let dynload = format!("{pylib}/lib-dynload");
    if !root.path(&dynload).is_dir() {
        // Debian's python keeps it apart: /usr/lib/python3.X/lib-dynload.
        root.copy_tree(&py.dynload, &dynload, EXCLUDES)?;
    }
    if let Some((libdir, soname)) = &py.shared {
        // The multiarch dir, which ld.so searches without a cache.
        let multiarch = Path::new("/usr/lib/x86_64-linux-gnu")
            .canonicalize()
            .unwrap_or_else(|_| "/usr/lib".into());
        let dest = format!("{}/{soname}", multiarch.display());
        root.copy(&libdir.join(soname), &dest)?;
    }
    Ok(pylib)
}

/// `/bin/sh` (dash), `env` (the launcher's `#!/usr/bin/env python3`) and
/// the other [`TOOLS`] the host has.
fn stage_shell(root: &Rootfs) -> Result<()> {
    let sh = host::which("dash").unwrap_or_else(|| "/bin/sh".into());
    root.install(&sh.canonicalize()?, "/usr/bin/dash", 0o755)?;
    root.symlink("dash", "/usr/bin/sh")?;
    for tool in TOOLS {
        let on_host = Path::new("/usr/bin").join(tool);
        if host::is_executable(&on_host) {
            root.install(&on_host.canonicalize()?, &format!("/usr/bin/{tool}"), 0o755)?;
        }
    }
    Ok(())
}

/// Ephemera's pieces, where the docker runtime looks for them.
fn stage_ephemera(b: &Build, root: &Rootfs) -> Result<()> {
    let proxy_bin = b.cargo.static_out().join("ephemera-proxy");
    let proxy = root.install(&proxy_bin, image::PROXY, 0o755)?;
    let intercept = root.install(&b.cargo.intercept_lib(), image::INTERCEPT, 0o755)?;
    elf::strip_debug(&[proxy, intercept])?;
    for launcher in LAUNCHERS {
        let src = b.repo().join("node-agent/src/launcher").join(launcher);
        ensure!(src.is_file(), "the launcher {} is missing", src.display());
        root.install(&src, &format!("{}/{launcher}", image::BIN_DIR), 0o755)?;
    }
    Ok(())
}

/// The shared libraries of everything ELF in the image, at their host paths
/// (libpython was placed with the interpreter), stripped of debug info,
/// and an `ld.so` cache so they resolve fast and `/usr/local/lib` is searched.
fn stage_libraries(b: &Build, root: &Rootfs, py: &Python, pylib: &str) -> Result<()> {
    let dynload = format!("{pylib}/lib-dynload");
    let mut elves = vec![py.exe.clone(), b.cargo.intercept_lib()];
    elves.extend(root.files_under("/usr/bin", &|p| elf::is_elf(p))?);
    elves.extend(root.files_under(&dynload, &|p| elf::is_elf(p))?);
    let skip = py.shared.as_ref().map(|(libdir, _)| libdir.as_path());
    root.copy_libraries(&elf::libraries(&elves)?, skip)?;
    // Not the interpreter's symbols: only the shared objects'.
    let is_so = |p: &Path| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().contains(".so"))
    };
    let mut objects = root.files_under("/usr/lib", &is_so)?;
    objects.extend(root.files_under(&dynload, &is_so)?);
    if let Err(e) = elf::strip_debug(&objects) {
        host::log(format!("warning: stripping the shared objects: {e:#}"));
    }
    root.write("/etc/ld.so.conf", "/usr/local/lib\n")?;
    let ldconfig = host::which("ldconfig").unwrap_or_else(|| "/sbin/ldconfig".into());
    let mut cache = Command::new(ldconfig);
    cache.arg("-r").arg(root.path("/"));
    if let Err(e) = host::run(&mut cache, Duration::from_secs(60)) {
        host::log(format!("warning: {e:#}; relying on ld.so's default paths"));
    }
    Ok(())
}

/// The image's Dockerfile: the in-instance paths from [`image`].
fn dockerfile() -> String {
    let (bin, proxy, intercept) = (image::BIN_DIR, image::PROXY, image::INTERCEPT);
    let (proxy_env, intercept_env) = (image::PROXY_ENV, image::INTERCEPT_ENV);
    format!(
        "# ephemera/python: the function runtime image. A CPython copied from the
# build host with its shared libraries, /bin/sh (dash), /usr/bin/env and a
# few coreutils, plus Ephemera's in-instance pieces at fixed paths:
#   {proxy}   (static)
#   {bin}/ephemera-python   (the action-loop launcher)
#   {intercept}
# Built by `cargo xtask images` from a staged rootfs; no registry needed.
FROM scratch
COPY root/ /
ENV PATH={bin}:/usr/local/bin:/usr/bin:/bin \\
    LANG=C.UTF-8 \\
    PYTHONDONTWRITEBYTECODE=1 \\
    {proxy_env}={proxy} \\
    {intercept_env}={intercept}
CMD [\"python3\"]
"
    )
}

/// The stdlib imports, the intercept preloaded, the proxy, and one
/// activation of `examples/functions/cpu_heavy` through the launcher.
fn smoke(repo: &Path, name: &str) -> Result<()> {
    let imports =
        format!("import {IMPORTS}; subprocess.run([\"/bin/sh\",\"-c\",\"true\"], check=True)");
    docker::run(&[name, "python3", "-c", &imports])
        .with_context(|| format!("{name}: python cannot import the stdlib the examples use"))?;
    let preload = format!("LD_PRELOAD={}", image::INTERCEPT);
    docker::run(&["-e", &preload, name, "/bin/sh", "-c", PRELOADED])
        .with_context(|| format!("{name}: python with the intercept preloaded ({preload})"))?;
    docker::run(&[name, image::PROXY, "--help"])
        .with_context(|| format!("{name}: ephemera-proxy does not run"))?;
    let example = repo.join("examples/functions/cpu_heavy");
    if example.join("handler.py").is_file() {
        // The launcher end to end: one activation line in, one result line out on fd 3.
        let volume = format!("{}:/code:ro", example.display());
        let activation = r#"{"value": {"n": 20}, "action_name": "smoke"}"#;
        let script =
            "printf '%s\\n' \"$1\" | ephemera-python handler.py 3>&1 1>/dev/null 2>/dev/null";
        let out = docker::run(&[
            "-v", &volume, "-w", "/code", name, "/bin/sh", "-c", script, "sh", activation,
        ])
        .with_context(|| {
            format!("{name}: ephemera-python failed on examples/functions/cpu_heavy")
        })?;
        ensure!(
            out.contains("\"digits\": 19"),
            "{name}: unexpected launcher output: {out}"
        );
    }
    Ok(())
}
