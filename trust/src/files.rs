//! Files with the right modes: directories 0700, private keys 0600,
//! certificates and the revocation list 0644. Replacing a file is atomic
//! (write a temporary file with its final mode, fsync, rename), so a reader
//! never sees half a key; creating the CA uses `create_new`, so it never
//! replaces anything.

use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::TrustError;

/// Mode of credential directories.
pub const DIR_MODE: u32 = 0o700;
/// Mode of private keys.
pub const KEY_MODE: u32 = 0o600;
/// Mode of certificates, the CA certificate and the revocation list.
pub const PUBLIC_MODE: u32 = 0o644;

/// Creates `dir` (and its parents) and makes its mode 0700. An existing
/// directory with a wider mode is narrowed.
pub fn ensure_private_dir(dir: &Path) -> Result<(), TrustError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| TrustError::io("creating the directory", dir, e))?;
    let meta = fs::metadata(dir).map_err(|e| TrustError::io("reading", dir, e))?;
    if meta.permissions().mode() & 0o777 != DIR_MODE {
        fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
            .map_err(|e| TrustError::io("setting the mode of", dir, e))?;
    }
    Ok(())
}

fn write_all_synced(file: &mut fs::File, path: &Path, data: &[u8]) -> Result<(), TrustError> {
    file.write_all(data)
        .map_err(|e| TrustError::io("writing", path, e))?;
    file.sync_all()
        .map_err(|e| TrustError::io("syncing", path, e))
}

fn sync_parent(path: &Path) -> Result<(), TrustError> {
    if let Some(parent) = path.parent() {
        let dir = fs::File::open(parent).map_err(|e| TrustError::io("opening", parent, e))?;
        dir.sync_all()
            .map_err(|e| TrustError::io("syncing", parent, e))?;
    }
    Ok(())
}

/// Writes `data` to `path` with `mode`, replacing any file there atomically.
pub fn write_replace(path: &Path, data: &[u8], mode: u32) -> Result<(), TrustError> {
    let name = path
        .file_name()
        .ok_or_else(|| TrustError::bad_file(path, "not a file name"))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| TrustError::io("creating", &tmp, e))?;
        // The umask may have narrowed the mode; make it exact.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| TrustError::io("setting the mode of", &tmp, e))?;
        write_all_synced(&mut file, &tmp, data)?;
        fs::rename(&tmp, path).map_err(|e| TrustError::io("renaming into place", path, e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_parent(path)
}

/// Writes `data` to a new file `path` with `mode`; fails if `path` exists
/// (the error's source is `AlreadyExists`).
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), TrustError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| TrustError::io("creating", path, e))?;
    let result = file
        .set_permissions(Permissions::from_mode(mode))
        .map_err(|e| TrustError::io("setting the mode of", path, e))
        .and_then(|()| write_all_synced(&mut file, path, data));
    if result.is_err() {
        // Never leave an empty or partial key behind: it would block the next try.
        let _ = fs::remove_file(path);
    }
    result?;
    sync_parent(path)
}

/// Reads a text file.
pub fn read_text(path: &Path) -> Result<String, TrustError> {
    fs::read_to_string(path).map_err(|e| TrustError::io("reading", path, e))
}

/// Reads a private key, refusing one that other users can access.
pub fn read_key(path: &Path) -> Result<String, TrustError> {
    let meta = fs::metadata(path).map_err(|e| TrustError::io("reading", path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TrustError::KeyTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    read_text(path)
}
