//! The agent's code cache: each version of a function's code (named by its
//! digest, see [`ephemera_domain::code`]) materialised once under
//! `<data_dir>/code/<digest>/`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ephemera_domain::code::{self, check_relative, io_err, CodeError, MAX_CODE_BYTES};
use ephemera_proto::v1::CodeFile;

/// The agent's code cache: `<root>/<digest>/` holds one version's files.
#[derive(Debug, Clone)]
pub struct CodeCache {
    root: PathBuf,
}

impl CodeCache {
    /// A cache rooted at `root` (created on first write).
    pub fn new(root: PathBuf) -> CodeCache {
        CodeCache { root }
    }

    /// The directory of `digest` if it is cached.
    pub fn lookup(&self, digest: &str) -> Option<PathBuf> {
        if !is_hex_digest(digest) {
            return None;
        }
        let dir = self.root.join(digest);
        dir.is_dir().then_some(dir)
    }

    /// Checks `files` against `digest` and writes them into the cache
    /// atomically (a temporary directory renamed into place), unless that
    /// version is already there. Returns its directory.
    pub fn materialize(&self, digest: &str, files: &[CodeFile]) -> Result<PathBuf, CodeError> {
        let actual = code::digest(files);
        if actual != digest {
            return Err(CodeError::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        if let Some(dir) = self.lookup(digest) {
            return Ok(dir);
        }
        if code::size(files) > MAX_CODE_BYTES {
            return Err(CodeError::TooLarge {
                dir: self.root.join(digest),
                total: code::size(files),
                limit: MAX_CODE_BYTES,
            });
        }
        fs::create_dir_all(&self.root).map_err(io_err("creating", &self.root))?;
        let tmp = self.root.join(format!(".tmp-{}", uuid::Uuid::new_v4()));
        let result = write_tree(&tmp, files);
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        let dest = self.root.join(digest);
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_dir_all(&tmp);
            // Another request materialised the same version first.
            if dest.is_dir() {
                return Ok(dest);
            }
            return Err(CodeError::Io {
                op: "renaming into place",
                path: dest,
                source: e,
            });
        }
        Ok(dest)
    }
}

fn is_hex_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn write_tree(dir: &Path, files: &[CodeFile]) -> Result<(), CodeError> {
    fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    for f in files {
        let path = dir.join(check_relative(&f.path)?);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
        }
        fs::write(&path, &f.data).map_err(io_err("writing", &path))?;
        // Keep the owner able to read what it runs.
        let mode = (f.mode & 0o777) | 0o400;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(io_err("setting mode of", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ephemera_domain::code::{digest, read_dir};

    #[test]
    fn materialize_round_trip() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("lib")).unwrap();
        fs::write(src.path().join("main.py"), b"def main(a): return a\n").unwrap();
        fs::write(src.path().join("lib/x.txt"), b"x").unwrap();
        let files = read_dir(src.path()).unwrap();
        let d = digest(&files);
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(cache_dir.path().join("code"));
        assert!(cache.lookup(&d).is_none());
        let dir = cache.materialize(&d, &files).unwrap();
        assert_eq!(fs::read(dir.join("lib/x.txt")).unwrap(), b"x");
        assert_eq!(cache.lookup(&d).unwrap(), dir);
        assert_eq!(digest(&read_dir(&dir).unwrap()), d);
        let bad = "0".repeat(64);
        assert!(matches!(
            cache.materialize(&bad, &files),
            Err(CodeError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn refuses_unsafe_paths() {
        let cache_dir = tempfile::tempdir().unwrap();
        let cache = CodeCache::new(cache_dir.path().to_path_buf());
        let files = vec![CodeFile {
            path: "../evil".into(),
            mode: 0o644,
            data: vec![],
        }];
        let err = cache.materialize(&digest(&files), &files).unwrap_err();
        assert!(matches!(err, CodeError::UnsafePath { .. }), "{err}");
    }
}
