//! `libephemera_intercept.so`: the function-level memory tier, loaded with
//! `LD_PRELOAD` into every process of a function instance.
//!
//! It serves the files under one directory (`EPHEMERA_TIER_DIR`, default
//! `/tmp`) from `MAP_SHARED` mappings of the real files: every fd the
//! program sees is the real kernel fd, reads and writes are `memcpy` with
//! offsets kept in user space, and the kernel file is brought back to the
//! logical size whenever another party could look at it (close, fsync, fork,
//! exec, spawn, exit, fallback). What the tier does not serve falls back to
//! the kernel, counted. It does not serve statically linked programs, raw
//! system calls (Go) or io_uring; it does not decide limits (the node agent
//! writes them into the control block).
//!
//! Layout:
//! - [`hooks`]: the exported libc entry points, grouped by kind.
//! - `tier`: the tier's state and operations under one lock.
//! - `fdtable` / `inode`: per-fd descriptions and per-inode state.
//! - `mapping`: all `mmap`/`mremap`/`memcpy` code.
//! - `adapter`: placement budget and the memory adapter.
//! - `control`: counters and the shared control block; `shared`: the
//!   per-file table that makes every process see one file.
//! - `config`: the environment interface; `path`: tier scope of a path;
//!   `inherited`: tier files already open when the process starts.
//! - `real`: libc functions resolved with `dlsym(RTLD_NEXT)`; `sys`: raw syscalls.
//! - `lock`: the fork-safe futex lock; `stats`: `EPHEMERA_STATS` output;
//!   `trace`: the `EPHEMERA_TRACE` debugging log;
//!   `fmt`: allocation-free formatting.

// The hooks are left out of unit-test builds (they would interpose the test
// binary's own libc calls), so much of the crate is unused there.
#![cfg_attr(test, allow(dead_code))]

mod adapter;
mod config;
mod control;
mod fdtable;
mod fmt;
#[cfg(not(test))]
pub mod hooks;
mod inherited;
mod inode;
mod lock;
mod mapping;
mod path;
mod real;
mod shared;
mod stats;
mod sys;
mod tier;
mod trace;

use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `f`, turning a panic into `on_panic` with `errno = EIO`, so no panic
/// ever unwinds into C.
pub(crate) fn guard<R>(on_panic: R, f: impl FnOnce() -> R) -> R {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        sys::set_errno(libc::EIO);
        on_panic
    })
}

/// Set once the constructor has resolved everything; until then hooks use
/// raw system calls and track nothing.
static READY: AtomicBool = AtomicBool::new(false);

/// Whether the constructor has run.
pub(crate) fn ready() -> bool {
    READY.load(Ordering::Acquire)
}

/// The constructor: reads the environment, maps the control block,
/// resolves the real libc functions.
extern "C" fn init() {
    config::init();
    trace::init();
    control::init();
    shared::init();
    real::resolve_all();
    READY.store(true, Ordering::Release);
    inherited::adopt_all();
    // Inside an instance the agent reads the peak from the control block,
    // also for functions that never open a tier file.
    if control::shared(ephemera_control_block::Slot::Magic).is_some() {
        adapter::ensure_started();
    }
}

/// Writes every mapped file back to the kernel and the stats file.
pub(crate) fn at_exit() {
    if !ready() {
        return;
    }
    {
        let mut t = tier::lock();
        t.fallback_all();
        t.drop_retained(false);
    }
    adapter::record_peak();
    stats::write();
}

extern "C" fn fini() {
    at_exit();
}

#[cfg(not(test))]
#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;

#[cfg(not(test))]
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = fini;
