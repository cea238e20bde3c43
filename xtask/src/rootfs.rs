//! Staging an image's root file system in a directory of this host, which
//! `docker build` then copies into a `FROM scratch` image (`COPY root/ /`):
//! directories, files installed with a mode, symlinks, whole trees with
//! exclusions, and the shared libraries programs need, at their host paths.
//!
//! Paths inside the image are written as in the image (`/opt/ephemera/…`);
//! [`Rootfs::path`] maps them into the staging directory.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

/// A root file system being staged.
#[derive(Debug)]
pub struct Rootfs {
    root: PathBuf,
}

impl Rootfs {
    /// An empty root at `root` (whatever was there is removed).
    pub fn fresh(root: PathBuf) -> Result<Rootfs> {
        if root.exists() {
            fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
        }
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(Rootfs { root })
    }

    /// Where `in_image` (an absolute path in the image) is staged.
    pub fn path(&self, in_image: &str) -> PathBuf {
        self.root.join(in_image.trim_start_matches('/'))
    }

    /// Creates the directories `in_image` (and their parents).
    pub fn dirs(&self, in_image: &[&str]) -> Result<()> {
        for d in in_image {
            let dir = self.path(d);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(())
    }

    /// `/tmp`, writable by everyone, sticky (mode 1777).
    pub fn tmp(&self) -> Result<()> {
        self.dirs(&["/tmp"])?;
        set_mode(&self.path("/tmp"), 0o1777)
    }

    /// Copies `src` (its content, following symlinks) to `dest` in the
    /// image with `mode`; returns the staged path.
    pub fn install(&self, src: &Path, dest: &str, mode: u32) -> Result<PathBuf> {
        let to = self.path(dest);
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::copy(src, &to)
            .with_context(|| format!("copying {} to {}", src.display(), to.display()))?;
        set_mode(&to, mode)?;
        Ok(to)
    }

    /// Copies `src` (its content, following symlinks) to `dest` in the
    /// image, keeping its mode.
    pub fn copy(&self, src: &Path, dest: &str) -> Result<PathBuf> {
        let mode = src
            .metadata()
            .with_context(|| format!("reading {}", src.display()))?
            .permissions()
            .mode();
        self.install(src, dest, mode & 0o7777)
    }

    /// A symlink `link` → `target` in the image (replacing what was there).
    pub fn symlink(&self, target: &str, link: &str) -> Result<()> {
        let at = self.path(link);
        if at.symlink_metadata().is_ok() {
            fs::remove_file(&at).with_context(|| format!("removing {}", at.display()))?;
        }
        std::os::unix::fs::symlink(target, &at)
            .with_context(|| format!("linking {} -> {target}", at.display()))
    }

    /// A file `dest` in the image holding `text`.
    pub fn write(&self, dest: &str, text: &str) -> Result<()> {
        let to = self.path(dest);
        fs::write(&to, text).with_context(|| format!("writing {}", to.display()))
    }

    /// The host's top-level links (`/bin` → `usr/bin`, … on a merged-`/usr`
    /// host) as links in the image, so that the library paths `ldd` prints
    /// on this host are valid in the image; plain directories otherwise.
    pub fn mirror_host_toplevel_links(&self) -> Result<()> {
        for d in ["bin", "sbin", "lib", "lib64"] {
            let host = Path::new("/").join(d);
            match fs::read_link(&host) {
                Ok(target) => {
                    let target = target.to_string_lossy().into_owned();
                    self.dirs(&[&target])?;
                    self.symlink(&target, d)?;
                }
                Err(_) => self.dirs(&[d])?,
            }
        }
        Ok(())
    }

    /// Copies the tree `src` to `dest` in the image, as `tar` would: modes,
    /// modification times and symlinks kept; every entry whose name matches
    /// one of `excludes` (globs with `*`) left out, with what is under it.
    pub fn copy_tree(&self, src: &Path, dest: &str, excludes: &[&str]) -> Result<()> {
        copy_tree(src, &self.path(dest), excludes)
            .with_context(|| format!("copying {} to {dest} in the image", src.display()))
    }

    /// Copies `libs` (host paths) into the image at their host paths, with
    /// the directory resolved (`/lib/x86_64-linux-gnu` → `/usr/lib/…` on a
    /// merged-`/usr` host) and the file's content (`cp -L`). Libraries
    /// already staged, or under `skip_under`, are left alone.
    pub fn copy_libraries(
        &self,
        libs: &BTreeSet<PathBuf>,
        skip_under: Option<&Path>,
    ) -> Result<()> {
        for lib in libs {
            ensure!(
                lib.exists(),
                "library {} (needed by the image) not found",
                lib.display()
            );
            if skip_under.is_some_and(|dir| lib.starts_with(dir)) {
                continue;
            }
            let (Some(dir), Some(name)) = (lib.parent(), lib.file_name()) else {
                continue;
            };
            let dir = dir
                .canonicalize()
                .with_context(|| format!("resolving {}", dir.display()))?;
            let dest = self.path(&dir.to_string_lossy()).join(name);
            if dest.exists() {
                continue;
            }
            fs::create_dir_all(self.path(&dir.to_string_lossy()))?;
            fs::copy(lib, &dest)
                .with_context(|| format!("copying {} to {}", lib.display(), dest.display()))?;
        }
        Ok(())
    }

    /// Every regular file under `in_image` (recursively) accepted by `keep`.
    pub fn files_under(
        &self,
        in_image: &str,
        keep: &dyn Fn(&Path) -> bool,
    ) -> Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        walk_files(&self.path(in_image), &mut |p| {
            if keep(p) {
                found.push(p.to_path_buf());
            }
        })?;
        Ok(found)
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn copy_tree(src: &Path, dest: &Path, excludes: &[&str]) -> Result<()> {
    let meta = fs::symlink_metadata(src)?;
    fs::create_dir_all(dest)?;
    fs::set_permissions(dest, meta.permissions())?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        let name = entry.file_name();
        if excludes.iter().any(|p| glob(p, &name.to_string_lossy())) {
            continue;
        }
        let (from, to) = (entry.path(), dest.join(&name));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&from, &to, excludes)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else if kind.is_file() {
            fs::copy(&from, &to)?;
            let modified = entry.metadata()?.modified()?;
            fs::File::options()
                .write(true)
                .open(&to)?
                .set_modified(modified)?;
        }
    }
    Ok(())
}

fn walk_files(dir: &Path, found: &mut dyn FnMut(&Path)) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            walk_files(&entry.path(), found)?;
        } else if kind.is_file() {
            found(&entry.path());
        }
    }
    Ok(())
}

/// Whether `name` matches `pattern`, where `*` stands for any characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(name) = name.strip_prefix(head) else {
                return false;
            };
            (0..=name.len())
                .filter(|&i| name.is_char_boundary(i))
                .any(|i| glob(rest, &name[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_names() {
        assert!(glob("*.pyc", "a.cpython-311.pyc"));
        assert!(glob(
            "_test*.so",
            "_testcapi.cpython-311-x86_64-linux-gnu.so"
        ));
        assert!(glob("config-*", "config-3.11-x86_64-linux-gnu"));
        assert!(glob("test", "test"));
        assert!(!glob("test", "tests"));
        assert!(!glob("*.pyc", "a.py"));
        assert!(!glob("readline.*", "rlcompleter.py"));
    }

    #[test]
    fn a_tree_is_copied_without_its_excluded_entries() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("pkg/__pycache__")).unwrap();
        fs::write(src.join("pkg/mod.py"), "x = 1\n").unwrap();
        fs::write(src.join("pkg/__pycache__/mod.pyc"), "").unwrap();
        fs::write(src.join("pkg/old.pyc"), "").unwrap();
        std::os::unix::fs::symlink("mod.py", src.join("pkg/alias.py")).unwrap();
        let root = Rootfs::fresh(dir.path().join("root")).unwrap();
        root.copy_tree(&src, "/usr/lib/py", &["__pycache__", "*.pyc"])
            .unwrap();
        let files = root.files_under("/usr/lib/py", &|_| true).unwrap();
        assert_eq!(files, [root.path("/usr/lib/py/pkg/mod.py")]);
        assert_eq!(
            fs::read_link(root.path("/usr/lib/py/pkg/alias.py")).unwrap(),
            Path::new("mod.py")
        );
    }
}
