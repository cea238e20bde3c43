//! The real libc functions behind our hooks, resolved once with
//! `dlsym(RTLD_NEXT)` by the constructor.
//!
//! Each accessor returns `None` until the constructor has run (and for a name
//! the C library does not have); callers then use the raw system call in
//! [`crate::sys`]. Reading a resolved pointer is one relaxed atomic load.

use libc::{c_char, c_int, c_long, c_uint, c_ulong, c_void, mode_t, off_t, size_t, ssize_t, FILE};
use std::sync::atomic::{AtomicUsize, Ordering};

fn resolve(slot: &AtomicUsize, name: &[u8]) {
    // SAFETY: `name` is a NUL-terminated symbol name; dlsym has no other
    // precondition.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) };
    slot.store(p as usize, Ordering::Relaxed);
}

macro_rules! real_fns {
    ($($name:ident: fn($($t:ty),*) -> $r:ty;)*) => {
        #[allow(non_upper_case_globals)]
        mod slot {
            use std::sync::atomic::AtomicUsize;
            $(pub static $name: AtomicUsize = AtomicUsize::new(0);)*
        }

        /// Resolves every real function. Called once by the constructor.
        pub fn resolve_all() {
            $(resolve(&slot::$name, concat!(stringify!($name), "\0").as_bytes());)*
        }

        $(
            /// The real function of this name, once resolved.
            #[allow(dead_code)]
            pub fn $name() -> Option<unsafe extern "C" fn($($t),*) -> $r> {
                let p = slot::$name.load(Ordering::Relaxed);
                if p == 0 {
                    return None;
                }
                // SAFETY: `p` came from dlsym for the C function of this name,
                // whose C signature is the one declared here.
                Some(unsafe { std::mem::transmute::<usize, unsafe extern "C" fn($($t),*) -> $r>(p) })
            }
        )*
    };
}

real_fns! {
    openat64: fn(c_int, *const c_char, c_int, mode_t) -> c_int;
    close: fn(c_int) -> c_int;
    read: fn(c_int, *mut c_void, size_t) -> ssize_t;
    write: fn(c_int, *const c_void, size_t) -> ssize_t;
    pread64: fn(c_int, *mut c_void, size_t, off_t) -> ssize_t;
    pwrite64: fn(c_int, *const c_void, size_t, off_t) -> ssize_t;
    readv: fn(c_int, *const libc::iovec, c_int) -> ssize_t;
    writev: fn(c_int, *const libc::iovec, c_int) -> ssize_t;
    preadv64: fn(c_int, *const libc::iovec, c_int, off_t) -> ssize_t;
    pwritev64: fn(c_int, *const libc::iovec, c_int, off_t) -> ssize_t;
    preadv64v2: fn(c_int, *const libc::iovec, c_int, off_t, c_int) -> ssize_t;
    pwritev64v2: fn(c_int, *const libc::iovec, c_int, off_t, c_int) -> ssize_t;
    lseek64: fn(c_int, off_t, c_int) -> off_t;
    fstat64: fn(c_int, *mut libc::stat) -> c_int;
    stat64: fn(*const c_char, *mut libc::stat) -> c_int;
    lstat64: fn(*const c_char, *mut libc::stat) -> c_int;
    fstatat64: fn(c_int, *const c_char, *mut libc::stat, c_int) -> c_int;
    statx: fn(c_int, *const c_char, c_int, c_uint, *mut libc::statx) -> c_int;
    ftruncate64: fn(c_int, off_t) -> c_int;
    truncate64: fn(*const c_char, off_t) -> c_int;
    fallocate64: fn(c_int, c_int, off_t, off_t) -> c_int;
    posix_fallocate64: fn(c_int, off_t, off_t) -> c_int;
    fsync: fn(c_int) -> c_int;
    fdatasync: fn(c_int) -> c_int;
    syncfs: fn(c_int) -> c_int;
    dup: fn(c_int) -> c_int;
    dup2: fn(c_int, c_int) -> c_int;
    dup3: fn(c_int, c_int, c_int) -> c_int;
    fcntl64: fn(c_int, c_int, c_ulong) -> c_int;
    close_range: fn(c_uint, c_uint, c_int) -> c_int;
    closefrom: fn(c_int) -> ();
    mkdir: fn(*const c_char, mode_t) -> c_int;
    mkdirat: fn(c_int, *const c_char, mode_t) -> c_int;
    rmdir: fn(*const c_char) -> c_int;
    unlink: fn(*const c_char) -> c_int;
    unlinkat: fn(c_int, *const c_char, c_int) -> c_int;
    rename: fn(*const c_char, *const c_char) -> c_int;
    renameat: fn(c_int, *const c_char, c_int, *const c_char) -> c_int;
    renameat2: fn(c_int, *const c_char, c_int, *const c_char, c_uint) -> c_int;
    mmap64: fn(*mut c_void, size_t, c_int, c_int, c_int, off_t) -> *mut c_void;
    sendfile64: fn(c_int, c_int, *mut off_t, size_t) -> ssize_t;
    copy_file_range: fn(c_int, *mut off_t, c_int, *mut off_t, size_t, c_uint) -> ssize_t;
    splice: fn(c_int, *mut off_t, c_int, *mut off_t, size_t, c_uint) -> ssize_t;
    fopen64: fn(*const c_char, *const c_char) -> *mut FILE;
    freopen64: fn(*const c_char, *const c_char, *mut FILE) -> *mut FILE;
    fdopen: fn(c_int, *const c_char) -> *mut FILE;
    fclose: fn(*mut FILE) -> c_int;
    fork: fn() -> libc::pid_t;
    execve: fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
    execv: fn(*const c_char, *const *const c_char) -> c_int;
    execvp: fn(*const c_char, *const *const c_char) -> c_int;
    execvpe: fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
    execveat: fn(c_int, *const c_char, *const *const c_char, *const *const c_char, c_int) -> c_int;
    fexecve: fn(c_int, *const *const c_char, *const *const c_char) -> c_int;
    posix_spawn: fn(*mut libc::pid_t, *const c_char, *const c_void, *const c_void, *const *mut c_char, *const *mut c_char) -> c_int;
    posix_spawnp: fn(*mut libc::pid_t, *const c_char, *const c_void, *const c_void, *const *mut c_char, *const *mut c_char) -> c_int;
    system: fn(*const c_char) -> c_int;
    popen: fn(*const c_char, *const c_char) -> *mut FILE;
    _exit: fn(c_int) -> ();
    ioctl: fn(c_int, c_ulong, c_ulong) -> c_int;
    aio_read64: fn(*mut libc::aiocb) -> c_int;
    aio_write64: fn(*mut libc::aiocb) -> c_int;
    lio_listio64: fn(c_int, *const *mut libc::aiocb, c_int, *mut libc::sigevent) -> c_int;
    syscall: fn(c_long, c_long, c_long, c_long, c_long, c_long, c_long) -> c_long;
}
