//! Owners and modes of what an instance touches, so that plain Unix
//! permissions already say what Landlock says.
//!
//! - Instance directory, tier directory: owned by the instance uid, 0700.
//! - Control block: owned by the instance uid, 0600.
//! - Code directory (shared read-only, possibly by several tenants that
//!   deployed the same code): owned by the agent, nothing writable by group
//!   or others, everything readable (and directories searchable) by others.
//!
//! Every object is opened with `O_NOFOLLOW` and changed through its file
//! descriptor, so a symlink planted in a directory an instance could once
//! write is never followed by the (root) agent.
//!
//! A uid can only use a path when it can search every directory above it.
//! [`check_reachable`] says which directory stops it (typically a 0700 data
//! directory, or `/root`): the directories above instance and code
//! directories must be at least 0711 (search without listing).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{fchown, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::{io_err, SandboxError};
use crate::uids::Ids;

/// Opens `path` itself (never a symlink's target) for fchown/fchmod.
fn open_nofollow(path: &Path, dir: bool) -> Result<File, SandboxError> {
    let mut flags = libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    if dir {
        flags |= libc::O_DIRECTORY;
    }
    OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(io_err(
            if dir {
                "opening directory (no symlinks)"
            } else {
                "opening file (no symlinks)"
            },
            path,
        ))
}

fn set_owner_mode(f: &File, path: &Path, ids: Ids, mode: u32) -> Result<(), SandboxError> {
    fchown(f.as_fd(), Some(ids.uid), Some(ids.gid))
        .map_err(io_err(format!("chown to {}:{}", ids.uid, ids.gid), path))?;
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {mode:o}"), path))
}

/// Gives the instance uid its instance directory (0700), tier directory
/// (0700) and control block (0600). Each must exist and not be a symlink.
/// Other entries of the instance directory keep their owner (the agent's
/// `proxy.log`, say).
pub fn prepare_instance(
    ids: Ids,
    instance_dir: &Path,
    tier_dir: &Path,
    control_block: &Path,
) -> Result<(), SandboxError> {
    for (path, dir, mode) in [
        (instance_dir, true, 0o700),
        (tier_dir, true, 0o700),
        (control_block, false, 0o600),
    ] {
        let f = open_nofollow(path, dir)?;
        if !dir {
            let meta = f.metadata().map_err(io_err("stat", path))?;
            if !meta.is_file() {
                return Err(SandboxError::Io {
                    what: "checking".into(),
                    path: path.to_path_buf(),
                    source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
                });
            }
        }
        set_owner_mode(&f, path, ids, mode)?;
    }
    Ok(())
}

/// Makes a code directory readable and unwritable by every instance:
/// owned by the calling process (the agent), group/other write bits removed,
/// other read added (and other search/execute where the owner has it).
/// Symlinks are left as they are (never followed); devices, FIFOs and
/// sockets are refused. Idempotent: call it when the code is materialised.
pub fn prepare_code_dir(code_dir: &Path) -> Result<(), SandboxError> {
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    let owner = unsafe {
        Ids {
            uid: libc::geteuid(),
            gid: libc::getegid(),
        }
    };
    fix_code_entry(code_dir, owner, true)
}

/// The mode a code entry should have: no setuid/setgid/sticky bits, nothing
/// writable but by the owner, readable by all (directories searchable, and
/// executables executable, by all).
fn code_mode(mode: u32, dir: bool) -> u32 {
    let mut m = (mode & 0o7777) & !0o7022;
    m |= if dir { 0o555 } else { 0o444 };
    if !dir && m & 0o100 != 0 {
        m |= 0o011;
    }
    m | 0o200
}

fn fix_code_entry(path: &Path, owner: Ids, top: bool) -> Result<(), SandboxError> {
    let meta = fs::symlink_metadata(path).map_err(io_err("stat", path))?;
    let ft = meta.file_type();
    // Symlinks inside are left alone (the agent's code loader keeps them
    // inside the code directory; Landlock judges their targets anyway); the
    // directory itself must not be one.
    if ft.is_symlink() {
        if top {
            return Err(SandboxError::CodeEntry {
                path: path.to_path_buf(),
                kind: "symlink (the code directory itself must be a directory)",
            });
        }
        return Ok(());
    }
    if !(ft.is_dir() || ft.is_file()) {
        return Err(SandboxError::CodeEntry {
            path: path.to_path_buf(),
            kind: "device, FIFO or socket",
        });
    }
    let dir = ft.is_dir();
    let want = code_mode(meta.mode(), dir);
    let owned = meta.uid() == owner.uid && meta.gid() == owner.gid;
    if !owned || meta.mode() & 0o7777 != want {
        // Change it through a descriptor of the very object we looked at.
        let f = open_nofollow(path, dir)?;
        let now = f.metadata().map_err(io_err("stat", path))?;
        if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
            return Err(SandboxError::Io {
                what: "checking (replaced while being prepared)".into(),
                path: path.to_path_buf(),
                source: io::Error::other("inode changed"),
            });
        }
        if !owned {
            fchown(f.as_fd(), Some(owner.uid), Some(owner.gid)).map_err(io_err(
                format!("chown to {}:{}", owner.uid, owner.gid),
                path,
            ))?;
        }
        // chown may have cleared setuid bits; set the final mode either way.
        f.set_permissions(fs::Permissions::from_mode(want))
            .map_err(io_err(format!("chmod {want:o}"), path))?;
    }
    if dir {
        for entry in fs::read_dir(path).map_err(io_err("listing", path))? {
            let entry = entry.map_err(io_err("listing", path))?;
            fix_code_entry(&entry.path(), owner, false)?;
        }
    }
    Ok(())
}

/// Whether `ids` may search (`x`) a directory with this metadata.
fn can_search(meta: &fs::Metadata, ids: Ids) -> bool {
    let mode = meta.mode();
    if meta.uid() == ids.uid {
        mode & 0o100 != 0
    } else if meta.gid() == ids.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Checks that `ids` can walk to `path`: every directory above it (and the
/// path itself when it is a directory) grants it search permission by its
/// mode bits (ACLs are not consulted). Symlinks on the way are resolved
/// first. Returns the directory that stops it.
pub fn check_reachable(path: &Path, ids: Ids) -> Result<(), SandboxError> {
    let real = fs::canonicalize(path).map_err(io_err("resolving", path))?;
    let mut walked = PathBuf::new();
    let is_dir = real.is_dir();
    let comps: Vec<Component> = real.components().collect();
    for (i, c) in comps.iter().enumerate() {
        walked.push(c);
        let last = i + 1 == comps.len();
        if last && !is_dir {
            break;
        }
        let meta = fs::metadata(&walked).map_err(io_err("stat", &walked))?;
        if !can_search(&meta, ids) {
            return Err(SandboxError::Unreachable {
                path: path.to_path_buf(),
                blocked_at: walked,
                mode: meta.mode() & 0o7777,
                owner: meta.uid(),
                group: meta.gid(),
                uid: ids.uid,
                gid: ids.gid,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_names_the_blocking_directory() {
        let root = tempfile::tempdir().unwrap();
        let a = root.path().join("a");
        let b = a.join("b");
        fs::create_dir_all(&b).unwrap();
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o711)).unwrap();
        fs::set_permissions(&a, fs::Permissions::from_mode(0o700)).unwrap();
        let ids = Ids {
            uid: 2_999_999,
            gid: 2_999_999,
        };
        // The temp dir's own ancestors (/tmp) are searchable by anyone.
        match check_reachable(&b, ids) {
            Err(SandboxError::Unreachable { blocked_at, .. }) => assert_eq!(blocked_at, a),
            other => panic!("expected Unreachable at {}, got {other:?}", a.display()),
        }
        fs::set_permissions(&a, fs::Permissions::from_mode(0o711)).unwrap();
        check_reachable(&b, ids).unwrap();
    }
}
