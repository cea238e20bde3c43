//! Ephemera's benchmarks: the measurements behind the thesis's figures,
//! run by the CLI (`ephemera bench sharing`, `ephemera bench cpu`) and, with
//! tiny sizes, by this crate's tests so that they cannot rot.
//!
//! It owns the workloads (Python files in `workloads/`, embedded with
//! `include_str!`), the scenarios, the measurements and their reports (a
//! text table and, through `serde`, JSON). It does not implement anything
//! it measures: the agent, its tenant actors, the pool, the runtimes and
//! the proxy come from `ephemera-node-agent`, unchanged, and it prints
//! nothing itself (the CLI does).
//!
//! Layout, one module per bench first, then what they share:
//!
//! - [`sharing`]: the thesis's mixed trace (a CPU task lends to an I/O task)
//!   in every sharing scope, against the disk baseline: [`sharing_mix`].
//! - [`cpu`]: the CPU task's latency measured interleaved, for the preload's
//!   and lending's cost: [`cpu_interleaved`].
//! - [`decision`]: the tenant pool's decision time per memory event.
//! - [`sandbox`]: what confining an instance costs, on its start and on a
//!   warm invocation, confined and plain agents interleaved: [`sandbox_cost`].
//! - `options`: [`MixOptions`], what the node-agent benches run.
//! - `node`: a fresh in-process agent per scenario and the invocations made
//!   of it.
//! - `workload`: `workloads/mix.py` as the agent receives it, the functions'
//!   specs and inputs, the work directory.
//! - `stats`: means, medians, changes in percent, the load average.
//! - `error`: [`BenchError`].
//!
//! The control plane's benches (placements, scheduler) are to join as
//! modules of their own.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ephemera_bench::BenchError> {
//! let mut opts = ephemera_bench::MixOptions::new(
//!     "target/release/ephemera-proxy",
//!     "target/release/libephemera_intercept.so",
//! );
//! opts.repetitions = 1;
//! let report = ephemera_bench::sharing_mix(opts).await?;
//! print!("{report}");
//! # Ok(())
//! # }
//! ```

pub mod cpu;
pub mod decision;
pub mod sandbox;
pub mod sharing;

mod error;
mod node;
mod options;
mod stats;
mod workload;

pub use cpu::{cpu_interleaved, CpuAbReport, RatioSummary};
pub use decision::{decision_time, DecisionTime};
pub use error::BenchError;
pub use options::MixOptions;
pub use sandbox::{sandbox_cost, SandboxOptions, SandboxReport};
pub use sharing::{sharing_mix, MixReport, ScenarioReport};
pub use workload::WORKLOAD_PY;
