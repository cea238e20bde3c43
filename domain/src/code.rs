//! A function's code, carried by value: read from a directory on deploy,
//! digested, and materialised by the agent (its code cache) on first use.
//!
//! The digest is what names a version of the code everywhere (controller,
//! agent cache, `FunctionSpec::code_digest`), so its byte layout is fixed:
//! for every file, sorted by path: the path bytes, a `0u8`, the mode as `u32`
//! little endian, the length as `u64` little endian, then the data.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use ephemera_proto::v1::CodeFile;
use sha2::{Digest, Sha256};

/// Largest total size of a function's code, in bytes (64 MiB).
pub const MAX_CODE_BYTES: u64 = 64 << 20;

/// Why a function's code could not be read, checked or materialised.
#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    /// An I/O error on a named path.
    #[error("code: {op} {path}: {source}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// The path it failed on.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The directory holds more than [`MAX_CODE_BYTES`].
    #[error("code directory {dir} holds more than {limit} bytes (64 MiB); reached {total} bytes")]
    TooLarge {
        /// The directory read.
        dir: PathBuf,
        /// Bytes counted when we stopped.
        total: u64,
        /// The limit.
        limit: u64,
    },
    /// A device, socket or FIFO in the code directory.
    #[error(
        "code directory entry {path} is a {kind}; only regular files and directories are allowed"
    )]
    Special {
        /// The offending entry.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A symlink whose target lies outside the code directory.
    #[error("symlink {path} points outside the code directory {dir} (to {target})")]
    SymlinkEscapes {
        /// The link.
        path: PathBuf,
        /// The code directory.
        dir: PathBuf,
        /// Where it resolves.
        target: PathBuf,
    },
    /// A path that is not UTF-8 (paths travel as protobuf strings).
    #[error("code path {path:?} is not valid UTF-8")]
    NonUtf8 {
        /// The path.
        path: PathBuf,
    },
    /// A `CodeFile` path that is absolute, empty or climbs with `..`.
    #[error("code file path {path:?} is not a plain relative path")]
    UnsafePath {
        /// The path as received.
        path: String,
    },
    /// The files received do not hash to the digest they were sent for.
    #[error(
        "code digest mismatch: the function declares {expected} but the files hash to {actual}"
    )]
    DigestMismatch {
        /// The digest in the function spec.
        expected: String,
        /// The digest of the files received.
        actual: String,
    },
}

/// Wraps an I/O error with what was being done to which path.
pub fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CodeError + 'a {
    move |source| CodeError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a function's code directory into `CodeFile`s (relative '/'-paths,
/// unix mode bits, bytes), sorted by path.
///
/// Refuses more than 64 MiB in total and special files (devices, sockets,
/// FIFOs). Symlinks are followed only when they resolve inside `dir`: a link
/// to a file becomes a copy of that file; a link to a directory is skipped
/// (its files are read through their real path).
pub fn read_dir(dir: &Path) -> Result<Vec<CodeFile>, CodeError> {
    let root = fs::canonicalize(dir).map_err(io_err("resolving", dir))?;
    let mut out = BTreeMap::new();
    let mut total = 0u64;
    walk(&root, &root, dir, &mut out, &mut total)?;
    Ok(out.into_values().collect())
}

fn walk(
    root: &Path,
    here: &Path,
    shown: &Path,
    out: &mut BTreeMap<String, CodeFile>,
    total: &mut u64,
) -> Result<(), CodeError> {
    let entries = fs::read_dir(here).map_err(io_err("listing", here))?;
    for entry in entries {
        let entry = entry.map_err(io_err("listing", here))?;
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(io_err("inspecting", &path))?;
        let ft = meta.file_type();
        let (real_path, meta) = if ft.is_symlink() {
            let target = fs::canonicalize(&path).map_err(io_err("resolving symlink", &path))?;
            if !target.starts_with(root) {
                return Err(CodeError::SymlinkEscapes {
                    path,
                    dir: shown.to_path_buf(),
                    target,
                });
            }
            let tmeta = fs::metadata(&target).map_err(io_err("inspecting", &target))?;
            if tmeta.is_dir() {
                tracing::debug!(link = %path.display(), "skipping symlink to a directory inside the code dir");
                continue;
            }
            (target, tmeta)
        } else {
            (path.clone(), meta)
        };
        let ft = meta.file_type();
        if ft.is_dir() {
            walk(root, &path, shown, out, total)?;
            continue;
        }
        if !ft.is_file() {
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_block_device() {
                "block device"
            } else if ft.is_char_device() {
                "character device"
            } else if ft.is_fifo() {
                "FIFO"
            } else if ft.is_socket() {
                "socket"
            } else {
                "special file"
            };
            return Err(CodeError::Special { path, kind });
        }
        *total += meta.len();
        if *total > MAX_CODE_BYTES {
            return Err(CodeError::TooLarge {
                dir: shown.to_path_buf(),
                total: *total,
                limit: MAX_CODE_BYTES,
            });
        }
        let rel = path
            .strip_prefix(root)
            .map_err(|_| CodeError::UnsafePath {
                path: path.display().to_string(),
            })?
            .to_str()
            .ok_or_else(|| CodeError::NonUtf8 { path: path.clone() })?
            .to_string();
        let data = fs::read(&real_path).map_err(io_err("reading", &real_path))?;
        let mode = meta.permissions().mode() & 0o777;
        out.insert(
            rel.clone(),
            CodeFile {
                path: rel,
                mode,
                data,
            },
        );
    }
    Ok(())
}

/// sha256 (hex) over every file sorted by path: path bytes, `0u8`, mode
/// `u32` LE, length `u64` LE, data.
pub fn digest(files: &[CodeFile]) -> String {
    let mut sorted: Vec<&CodeFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    for f in sorted {
        h.update(f.path.as_bytes());
        h.update([0u8]);
        h.update(f.mode.to_le_bytes());
        h.update((f.data.len() as u64).to_le_bytes());
        h.update(&f.data);
    }
    hex::encode(h.finalize())
}

/// Total bytes in `files`.
pub fn size(files: &[CodeFile]) -> u64 {
    files.iter().map(|f| f.data.len() as u64).sum()
}

/// Refuses a `CodeFile` path that is absolute, empty or climbs with `..`:
/// it is joined under a directory when the code is materialised.
pub fn check_relative(path: &str) -> Result<&Path, CodeError> {
    let rel = Path::new(path);
    let plain = !path.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(rel)
    } else {
        Err(CodeError::UnsafePath {
            path: path.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sorted_files_and_digests_independently_of_order() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("lib")).unwrap();
        fs::write(src.path().join("main.py"), b"def main(a): return a\n").unwrap();
        fs::write(src.path().join("lib/x.txt"), b"x").unwrap();
        fs::set_permissions(
            src.path().join("lib/x.txt"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("main.py", src.path().join("alias.py")).unwrap();
        let files = read_dir(src.path()).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["alias.py", "lib/x.txt", "main.py"]);
        assert_eq!(files[1].mode, 0o755);
        let mut reversed = files.clone();
        reversed.reverse();
        assert_eq!(
            digest(&files),
            digest(&reversed),
            "digest is order independent"
        );
        assert_eq!(size(&files), 2 * 22 + 1);
    }

    #[test]
    fn refuses_escapes_and_unsafe_paths() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"s").unwrap();
        let src = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), src.path().join("s")).unwrap();
        let err = read_dir(src.path()).unwrap_err();
        assert!(matches!(err, CodeError::SymlinkEscapes { .. }), "{err}");
        for bad in ["", "/etc/passwd", "../evil", "a/../../b"] {
            assert!(check_relative(bad).is_err(), "{bad:?}");
        }
        assert!(check_relative("lib/x.py").is_ok());
    }
}
