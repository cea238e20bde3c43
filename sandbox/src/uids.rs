//! [`TenantUids`]: one uid (and gid, the same number) per tenant, stable
//! across restarts and never given to another tenant.
//!
//! A tenant's uid is chosen by hashing its name (FNV-1a) into the configured
//! range and probing linearly past uids already taken, so the choice does not
//! depend on the order tenants arrive in. Every assignment is persisted in
//! `<data dir>/tenant-uids.json` (mode 0600, written to a temporary file and
//! renamed) and never removed: a uid once given to a tenant stays its own,
//! even after the tenant is deleted, so files it left behind can never be
//! read by a newcomer. Several agents on one host must share one file (the
//! uid space is the host's); an exclusive `flock` on
//! `<data dir>/tenant-uids.lock` serialises them.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{io_err, SandboxError};

/// The uid and gid an instance runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Ids {
    /// User id.
    pub uid: u32,
    /// Group id (its only group: supplementary groups are cleared).
    pub gid: u32,
}

/// A range of uids (and the gids with the same numbers) handed to tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    /// The first uid.
    pub first: u32,
    /// How many.
    pub count: u32,
}

impl Default for UidRange {
    /// `2_000_000 .. 2_000_000 + 1_000_000`: above every distribution's
    /// system and login ranges and below the 32-bit ids container engines
    /// use for user-namespace remapping.
    fn default() -> Self {
        UidRange {
            first: 2_000_000,
            count: 1_000_000,
        }
    }
}

impl UidRange {
    fn check(self) -> Result<(), SandboxError> {
        let bad = |reason| {
            Err(SandboxError::BadUidRange {
                first: self.first,
                count: self.count,
                reason,
            })
        };
        if self.count == 0 {
            return bad("it is empty");
        }
        if self.first == 0 {
            return bad("it includes root (0)");
        }
        // u32::MAX is (uid_t)-1, which setresuid reads as "unchanged".
        if u64::from(self.first) + u64::from(self.count) > u64::from(u32::MAX) {
            return bad("it reaches 4294967295, which setresuid reads as \"unchanged\"");
        }
        Ok(())
    }

    fn contains(self, id: u32) -> bool {
        id >= self.first && u64::from(id) < u64::from(self.first) + u64::from(self.count)
    }
}

/// The persisted file.
#[derive(Debug, Default, Serialize, Deserialize)]
struct UidFile {
    /// Format version.
    version: u32,
    /// Tenant name → uid.
    tenants: BTreeMap<String, u32>,
}

const FILE_NAME: &str = "tenant-uids.json";
const LOCK_NAME: &str = "tenant-uids.lock";

/// Maps tenant names to uids; see the module documentation.
#[derive(Debug)]
pub struct TenantUids {
    /// `<data dir>/tenant-uids.json`.
    path: PathBuf,
    /// `<data dir>/tenant-uids.lock`.
    lock_path: PathBuf,
    /// Where new uids come from.
    range: UidRange,
    /// Assignments seen so far (they never change once made).
    cache: Mutex<BTreeMap<String, u32>>,
}

/// FNV-1a, 64 bits: small, stable across Rust versions (unlike `DefaultHasher`).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn check_tenant(tenant: &str) -> Result<(), SandboxError> {
    let bad = |reason| {
        Err(SandboxError::InvalidTenant {
            tenant: tenant.to_string(),
            reason,
        })
    };
    if tenant.is_empty() {
        return bad("it is empty");
    }
    if tenant.len() > 256 {
        return bad("it is longer than 256 bytes");
    }
    if tenant.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    Ok(())
}

/// Checks that `[first, first+count)` is inside one line of a uid/gid map.
fn check_mapped(
    map: &'static str,
    kind: &'static str,
    range: UidRange,
) -> Result<(), SandboxError> {
    let text = fs::read_to_string(map).map_err(io_err("reading", map))?;
    let end = u64::from(range.first) + u64::from(range.count);
    let covered = text.lines().any(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        f.len() == 3 && f[0] <= u64::from(range.first) && end <= f[0] + f[2]
    });
    if covered {
        Ok(())
    } else {
        Err(SandboxError::NotMapped {
            kind,
            first: range.first,
            count: range.count,
            map,
        })
    }
}

impl TenantUids {
    /// Opens (or starts) the mapping kept in `data_dir`, handing out new
    /// uids from `range`. Checks that the range is usable and mapped in this
    /// user namespace. Existing assignments outside `range` (a range changed
    /// since) stay valid and stay reserved.
    pub fn open(data_dir: &Path, range: UidRange) -> Result<TenantUids, SandboxError> {
        range.check()?;
        check_mapped("/proc/self/uid_map", "uid range", range)?;
        check_mapped("/proc/self/gid_map", "gid range", range)?;
        fs::create_dir_all(data_dir).map_err(io_err("creating", data_dir))?;
        let uids = TenantUids {
            path: data_dir.join(FILE_NAME),
            lock_path: data_dir.join(LOCK_NAME),
            range,
            cache: Mutex::new(BTreeMap::new()),
        };
        let _lock = uids.lock()?;
        let file = uids.load()?;
        if let Ok(mut cache) = uids.cache.lock() {
            *cache = file.tenants;
        }
        Ok(uids)
    }

    /// The file the mapping is kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ids of `tenant`, assigning (and persisting) a uid on first use.
    pub fn ids(&self, tenant: &str) -> Result<Ids, SandboxError> {
        check_tenant(tenant)?;
        if let Some(uid) = self.cache.lock().ok().and_then(|c| c.get(tenant).copied()) {
            return Ok(Ids { uid, gid: uid });
        }
        let _lock = self.lock()?;
        // Another agent sharing the file may have assigned it meanwhile.
        let mut file = self.load()?;
        let uid = match file.tenants.get(tenant) {
            Some(&uid) => uid,
            None => {
                let uid = self.pick(tenant, &file)?;
                file.tenants.insert(tenant.to_string(), uid);
                self.store(&file)?;
                uid
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            *cache = file.tenants;
        }
        Ok(Ids { uid, gid: uid })
    }

    /// The ids of `tenant` if it already has a uid.
    pub fn get(&self, tenant: &str) -> Option<Ids> {
        let uid = self.cache.lock().ok()?.get(tenant).copied()?;
        Some(Ids { uid, gid: uid })
    }

    /// Every assignment made so far, by tenant name.
    pub fn all(&self) -> BTreeMap<String, Ids> {
        self.cache
            .lock()
            .map(|c| {
                c.iter()
                    .map(|(t, &uid)| (t.clone(), Ids { uid, gid: uid }))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn pick(&self, tenant: &str, file: &UidFile) -> Result<u32, SandboxError> {
        let taken: std::collections::BTreeSet<u32> = file.tenants.values().copied().collect();
        let count = u64::from(self.range.count);
        let start = fnv1a(tenant.as_bytes()) % count;
        (0..count)
            .map(|i| self.range.first + ((start + i) % count) as u32)
            .find(|uid| !taken.contains(uid))
            .ok_or_else(|| SandboxError::UidRangeExhausted {
                first: self.range.first,
                count: self.range.count,
                tenant: tenant.to_string(),
            })
    }

    /// Takes the exclusive lock shared with other agents; released on drop.
    fn lock(&self) -> Result<File, SandboxError> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&self.lock_path)
            .map_err(io_err("opening lock file", &self.lock_path))?;
        loop {
            // SAFETY: plain FFI call on a file descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(f);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(SandboxError::Io {
                    what: "locking".into(),
                    path: self.lock_path.clone(),
                    source: e,
                });
            }
        }
    }

    fn load(&self) -> Result<UidFile, SandboxError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(UidFile::default()),
            Err(e) => return Err(io_err("reading", &self.path)(e)),
        };
        let corrupt = |reason: String| SandboxError::CorruptUidFile {
            path: self.path.clone(),
            reason,
        };
        let file: UidFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        let mut seen = std::collections::BTreeMap::new();
        for (tenant, &uid) in &file.tenants {
            if uid == 0 || uid == u32::MAX {
                return Err(corrupt(format!("tenant {tenant:?} has uid {uid}")));
            }
            if let Some(other) = seen.insert(uid, tenant) {
                return Err(corrupt(format!(
                    "uid {uid} is given to both {other:?} and {tenant:?}"
                )));
            }
        }
        Ok(file)
    }

    fn store(&self, file: &UidFile) -> Result<(), SandboxError> {
        let tmp = self.path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(&UidFile {
            version: 1,
            tenants: file.tenants.clone(),
        })
        .map_err(|e| SandboxError::CorruptUidFile {
            path: self.path.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        let _ = fs::remove_file(&tmp);
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        // The umask may have narrowed the mode; make sure it is exactly 0600.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err("chmod 0600", &tmp))?;
        f.write_all(&text).map_err(io_err("writing", &tmp))?;
        f.sync_all().map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, &self.path).map_err(io_err("renaming into place", &self.path))?;
        if let Some(dir) = self.path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Ids {
    /// The ids as Docker's `user` field wants them: `"uid:gid"`.
    pub fn docker_user(&self) -> String {
        format!("{}:{}", self.uid, self.gid)
    }

    /// Whether these ids lie in `range`.
    pub fn in_range(&self, range: UidRange) -> bool {
        range.contains(self.uid) && range.contains(self.gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn stable_across_reopen_persisted_0600_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let range = UidRange {
            first: 2_500_000,
            count: 1000,
        };
        let u = TenantUids::open(dir.path(), range).unwrap();
        let a = u.ids("acme").unwrap();
        let b = u.ids("globex").unwrap();
        assert_ne!(a.uid, b.uid);
        assert_eq!(a.uid, a.gid);
        assert!(a.in_range(range) && b.in_range(range));
        assert_eq!(u.ids("acme").unwrap(), a);
        let meta = fs::metadata(u.path()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        drop(u);
        // Same answers after a restart, and from the hash alone in a fresh dir.
        let u2 = TenantUids::open(dir.path(), range).unwrap();
        assert_eq!(u2.get("acme"), Some(a));
        assert_eq!(u2.ids("globex").unwrap(), b);
        let fresh = tempfile::tempdir().unwrap();
        assert_eq!(
            TenantUids::open(fresh.path(), range)
                .unwrap()
                .ids("acme")
                .unwrap(),
            a
        );
        // A narrower range later: old assignments stand, no new tenant gets them.
        let narrow = UidRange {
            first: a.uid.min(b.uid),
            count: 1,
        };
        let u3 = TenantUids::open(dir.path(), narrow).unwrap();
        assert_eq!(u3.ids("acme").unwrap(), a);
        assert!(matches!(
            u3.ids("initech"),
            Err(SandboxError::UidRangeExhausted { .. })
        ));
    }

    #[test]
    fn a_full_range_is_refused_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let range = UidRange {
            first: 2_600_000,
            count: 2,
        };
        let u = TenantUids::open(dir.path(), range).unwrap();
        let x = u.ids("x").unwrap();
        let y = u.ids("y").unwrap();
        assert_ne!(x, y);
        let err = u.ids("z").unwrap_err().to_string();
        assert!(err.contains("\"z\"") && err.contains("2600000"), "{err}");
        assert!(u.ids("").is_err());
        assert!(u.ids("a\nb").is_err());
        for (first, count) in [(0, 5), (10, 0), (u32::MAX - 1, 2)] {
            assert!(TenantUids::open(dir.path(), UidRange { first, count }).is_err());
        }
    }

    #[test]
    fn two_handles_on_one_file_never_share_a_uid() {
        let dir = tempfile::tempdir().unwrap();
        let range = UidRange {
            first: 2_700_000,
            count: 64,
        };
        let a = TenantUids::open(dir.path(), range).unwrap();
        let b = TenantUids::open(dir.path(), range).unwrap();
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| {
                (0..20)
                    .map(|i| a.ids(&format!("a{i}")).unwrap().uid)
                    .collect::<Vec<_>>()
            });
            let hb = s.spawn(|| {
                (0..20)
                    .map(|i| b.ids(&format!("b{i}")).unwrap().uid)
                    .collect::<Vec<_>>()
            });
            (ha.join().unwrap(), hb.join().unwrap())
        });
        let mut all: Vec<u32> = ra.into_iter().chain(rb).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 40, "a uid was given twice");
    }

    #[test]
    fn a_corrupt_file_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        fs::write(
            &path,
            r#"{"version":1,"tenants":{"a":2000001,"b":2000001}}"#,
        )
        .unwrap();
        let err = TenantUids::open(dir.path(), UidRange::default()).unwrap_err();
        assert!(matches!(err, SandboxError::CorruptUidFile { .. }), "{err}");
        assert!(fs::read_to_string(&path).unwrap().contains("\"b\""));
    }
}
