//! What an ELF file is: whether it is one, whether it runs `FROM scratch`
//! (static: no interpreter, no `NEEDED` library), which shared libraries
//! the dynamic loader gives it (`ldd`), and stripping its debug info.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::host;

/// Whether `path` is a regular file starting with the ELF magic.
pub fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    path.is_file()
        && std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
        && magic == *b"\x7fELF"
}

/// Fails unless `path` is statically linked (it would not run `FROM scratch`).
pub fn ensure_static(path: &Path) -> Result<()> {
    let t = Duration::from_secs(30);
    let headers = host::stdout(Command::new("readelf").arg("-l").arg(path), t)?;
    let dynamic = host::stdout(Command::new("readelf").arg("-d").arg(path), t)?;
    ensure!(
        !headers.contains("Requesting program interpreter") && !dynamic.contains("(NEEDED)"),
        "{} is not statically linked (it would not run FROM scratch)",
        path.display()
    );
    Ok(())
}

/// The shared libraries (host paths) the loader maps for each of `files`,
/// the loader itself included. A file that is not dynamic (ldd fails on
/// it) needs none.
pub fn libraries(files: &[PathBuf]) -> Result<BTreeSet<PathBuf>> {
    let mut libs = BTreeSet::new();
    for f in files {
        let out = host::output(Command::new("ldd").arg(f), Duration::from_secs(30))?;
        if out.status.success() {
            libs.extend(parse_ldd(&String::from_utf8_lossy(&out.stdout)));
        }
    }
    Ok(libs)
}

/// The library paths in `ldd` output: `libz.so.1 => /lib/…/libz.so.1 (0x…)`
/// and the loader's own line, `\t/lib64/ld-linux-x86-64.so.2 (0x…)`.
/// `linux-vdso.so.1 (0x…)` and `not found` lines name no file.
fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once(" => ") {
                Some((_, target)) => target.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// `strip --strip-debug` on `files`, in place.
pub fn strip_debug(files: &[PathBuf]) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    host::run(
        Command::new("strip").arg("--strip-debug").args(files),
        Duration::from_secs(300),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibpython3.11.so.1.0 => /root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0 (0x00007f)\n\
                    \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f)\n\
                    \tlibgone.so.1 => not found\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            [
                "/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0",
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn knows_an_elf_file() {
        assert!(is_elf(&std::env::current_exe().unwrap()));
        assert!(!is_elf(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/Cargo.toml"
        ))));
    }
}
