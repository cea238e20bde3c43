//! Deciding whether a path is in the tier, without allocating.
//!
//! A path is in scope when its lexically normalised absolute form lies under
//! the canonical tier directory. Relative paths are resolved against the cwd
//! (`getcwd`) or, for `*at` calls, against the directory fd's path read from
//! `/proc/self/fd`. Symlinks inside the tier are not followed here: the tier
//! serves whatever the kernel opens.

use libc::{c_char, c_int};

use crate::config::PATH_MAX;

/// Normalises `path` (joined to `base` when relative) into `out`: removes
/// `.`, empty components and resolves `..` lexically. Returns the length, or
/// `None` when it does not fit or is relative without a base.
pub fn normalize_into(path: &[u8], base: Option<&[u8]>, out: &mut [u8]) -> Option<usize> {
    let mut len = 0usize;
    let mut push_components = |src: &[u8], len: &mut usize| -> Option<()> {
        for comp in src.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => {
                    while *len > 0 && out[*len - 1] != b'/' {
                        *len -= 1;
                    }
                    *len = len.saturating_sub(1);
                }
                c => {
                    if *len + 1 + c.len() > out.len() {
                        return None;
                    }
                    out[*len] = b'/';
                    out[*len + 1..*len + 1 + c.len()].copy_from_slice(c);
                    *len += 1 + c.len();
                }
            }
        }
        Some(())
    };
    if path.first() != Some(&b'/') {
        let base = base?;
        if base.first() != Some(&b'/') {
            return None;
        }
        push_components(base, &mut len)?;
    }
    push_components(path, &mut len)?;
    if len == 0 {
        if out.is_empty() {
            return None;
        }
        out[0] = b'/';
        len = 1;
    }
    Some(len)
}

/// True when `abs` (normalised) is the tier directory or below it.
pub fn under(abs: &[u8], tier: &[u8]) -> bool {
    if tier == b"/" {
        return true;
    }
    abs.starts_with(tier) && (abs.len() == tier.len() || abs[tier.len()] == b'/')
}

/// Whether `path` (relative to `dirfd` when relative) names something in the
/// tier directory.
///
/// # Safety
/// `path` must be NULL or a valid NUL-terminated string.
pub unsafe fn in_scope(dirfd: c_int, path: *const c_char) -> bool {
    let Some(cfg) = crate::config::get() else {
        return false;
    };
    if path.is_null() {
        return false;
    }
    // SAFETY: the caller guarantees a NUL-terminated string.
    let p = unsafe { std::ffi::CStr::from_ptr(path) }.to_bytes();
    if p.is_empty() || p.len() >= PATH_MAX {
        return false;
    }
    let tier = &cfg.tier[..cfg.tier_len];
    let mut out = [0u8; PATH_MAX];
    if p[0] == b'/' {
        return normalize_into(p, None, &mut out).is_some_and(|n| under(&out[..n], tier));
    }
    let mut base = [0u8; PATH_MAX];
    let blen = if dirfd == libc::AT_FDCWD {
        crate::sys::getcwd(&mut base)
    } else {
        let mut link = [0u8; 32];
        crate::sys::readlink(crate::sys::proc_fd_path(dirfd, &mut link), &mut base)
    };
    let Some(blen) = blen else {
        return false;
    };
    normalize_into(p, Some(&base[..blen]), &mut out).is_some_and(|n| under(&out[..n], tier))
}

/// Whether the open fd `fd` names something inside the tier directory (read
/// from `/proc/self/fd`; false when that cannot be read).
pub fn fd_in_tier(fd: c_int) -> bool {
    let Some(cfg) = crate::config::get() else {
        return false;
    };
    let mut link = [0u8; 32];
    let mut target = [0u8; crate::config::PATH_MAX];
    crate::sys::readlink(crate::sys::proc_fd_path(fd, &mut link), &mut target)
        .is_some_and(|len| under(&target[..len], &cfg.tier[..cfg.tier_len]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str, base: Option<&str>) -> Option<String> {
        let mut out = [0u8; 256];
        let n = normalize_into(p.as_bytes(), base.map(str::as_bytes), &mut out)?;
        Some(String::from_utf8(out[..n].to_vec()).unwrap())
    }

    #[test]
    fn normalizes_lexically() {
        assert_eq!(norm("/tmp//a/./b/../c", None).unwrap(), "/tmp/a/c");
        assert_eq!(norm("/../..", None).unwrap(), "/");
        assert_eq!(norm("x/y", Some("/tmp")).unwrap(), "/tmp/x/y");
        assert_eq!(norm("../etc", Some("/tmp")).unwrap(), "/etc");
        assert_eq!(norm("x", None), None);
        assert_eq!(norm(&"a".repeat(300), Some("/")), None);
    }

    #[test]
    fn scope_is_a_directory_prefix() {
        assert!(under(b"/tmp", b"/tmp"));
        assert!(under(b"/tmp/x", b"/tmp"));
        assert!(!under(b"/tmpx", b"/tmp"));
        assert!(!under(b"/etc", b"/tmp"));
        assert!(under(b"/etc", b"/"));
    }
}
