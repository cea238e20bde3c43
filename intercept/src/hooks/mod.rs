//! The exported libc entry points. Each hook decides in a few instructions
//! whether the call concerns the tier (a tracked fd, or a path under the tier
//! directory); everything else goes to the real function untouched.
//!
//! Hooks are `unsafe extern "C"` functions whose contract is the libc
//! function of the same name (pointers valid as the C documentation says),
//! hence no per-function `# Safety` sections.
//!
//! - [`open`]: `open`/`openat`/`creat` and fortified names, stdio opens.
//! - [`io`]: read/write/pread/pwrite/vectored, `lseek`, `ftruncate`, sync.
//! - [`fd`]: `close`, `dup*`, `fcntl`, `close_range`.
//! - [`stat`]: the stat family, reporting logical sizes.
//! - [`dir`]: `mkdir`, `rmdir`, `unlink`, `rename`, `truncate`.
//! - [`fallback`]: calls the tier does not serve: `mmap`, `sendfile`, ...
//! - [`process`]: `fork`, `vfork`, `exec*`, `posix_spawn`, `system`, `_exit`;
//!   `execl`: the variadic `execl`/`execlp`/`execle` (x86-64 trampolines).

#![allow(clippy::missing_safety_doc)]

pub mod dir;
#[cfg(target_arch = "x86_64")]
pub mod execl;
pub mod fallback;
pub mod fd;
pub mod io;
pub mod open;
pub mod process;
pub mod stat;

pub(crate) use crate::guard;

/// Calls the real libc function `$name`, or `$raw` before the constructor.
macro_rules! pass {
    ($name:ident($($a:expr),* $(,)?), $raw:expr) => {
        match crate::real::$name() {
            // SAFETY: the real function of this name, called with the
            // arguments our caller gave us under the same C contract.
            Some(f) => unsafe { f($($a),*) },
            None => $raw,
        }
    };
}
pub(crate) use pass;
