//! What the node-agent benches run: sizes, repetitions and the binaries
//! they start. [`MixOptions::new`] gives the thesis's trace.

use std::path::PathBuf;

use serde::Serialize;

/// What to run. [`MixOptions::new`] gives the thesis's trace.
#[derive(Debug, Clone, Serialize)]
pub struct MixOptions {
    /// The `ephemera-proxy` executable.
    pub proxy_bin: PathBuf,
    /// `libephemera_intercept.so` (a release build for real figures).
    pub intercept_lib: PathBuf,
    /// Where instance directories go (must be a disk file system: it is the
    /// baseline's tmp dir); `None`: a fresh directory under the system temp
    /// dir, removed afterwards.
    pub work_dir: Option<PathBuf>,
    /// I/O task file size (MiB).
    pub io_file_mib: u64,
    /// I/O task random writes, and as many random reads.
    pub io_ops: u64,
    /// CPU task factorial size.
    pub cpu_n: u64,
    /// Factorials per CPU invocation; `None`: calibrated so that a CPU
    /// invocation lasts 2× an I/O invocation in the tier, measured alone (it
    /// must outlast the I/O task to lend to it throughout).
    pub cpu_rounds: Option<u64>,
    /// Invocations of each task per scenario (the trace has 2).
    pub repetitions: usize,
    /// CPU task T_lim, U_max (MiB).
    pub cpu_limit_mib: u64,
    /// CPU task U_max (MiB).
    pub cpu_u_max_mib: u64,
    /// I/O task T_lim (MiB).
    pub io_limit_mib: u64,
    /// I/O task U_max (MiB).
    pub io_u_max_mib: u64,
    /// I/O task F_max (MiB).
    pub io_f_max_mib: u64,
    /// Rounds of the decision-time measurement (each is 2 events).
    pub decision_rounds: usize,
    /// Also run the thesis's sequential workflow (`workflow-seq`).
    pub sequential_workflow: bool,
    /// Rounds of the interleaved CPU measurement ([`CpuAbReport`](crate::CpuAbReport)); 0 skips it.
    pub cpu_ab_rounds: usize,
    /// Target length of one CPU invocation in it (ms).
    pub cpu_ab_ms: u64,
}

impl MixOptions {
    /// The thesis's trace with these binaries.
    pub fn new(proxy_bin: impl Into<PathBuf>, intercept_lib: impl Into<PathBuf>) -> MixOptions {
        MixOptions {
            proxy_bin: proxy_bin.into(),
            intercept_lib: intercept_lib.into(),
            work_dir: None,
            io_file_mib: 128,
            io_ops: 500_000,
            cpu_n: 5000,
            cpu_rounds: None,
            repetitions: 2,
            cpu_limit_mib: 300,
            cpu_u_max_mib: 100,
            io_limit_mib: 150,
            io_u_max_mib: 128,
            io_f_max_mib: 5000,
            decision_rounds: 1_000_000,
            sequential_workflow: true,
            cpu_ab_rounds: 40,
            cpu_ab_ms: 300,
        }
    }
}
