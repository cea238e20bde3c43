//! `ephemera-node-agent` is the node agent (the thesis's Tenant Manager):
//! one per node. It owns everything that happens to an invocation once a
//! controller has placed it here: the `Agent` gRPC service the controllers
//! call (`Run`, `Profile`, `Status`), one actor per tenant that keeps the
//! tenant's warm instances and moves memory between them (lend at `Invoke`,
//! give back at `Result`, safeguards), the persisted ledger of those loans,
//! the runtimes that start instances (process and docker), and the
//! in-instance proxy (`ephemera-proxy`) that feeds the function's launcher.
//!
//! It does not place invocations or keep cluster state (the controllers do,
//! in `ephemera-storage`), it does not serve the function's files (the
//! intercept library inside each instance does), and it does not benchmark
//! itself (`ephemera-bench` does). Names, sizes, code digests, tier counters
//! and failure reasons come from `ephemera-domain`; cgroups, signals and
//! pipes from `ephemera-sys`.
//!
//! Layout, in the order an invocation passes through:
//!
//! - [`agent`]: [`run`]: the data directory, the runtime, the ledgers of a
//!   previous run, serving, and shutdown.
//! - [`config`]: [`AgentConfig`] and its defaults.
//! - [`registry`]: `RegisterNode` and heartbeats to the controllers.
//! - [`service`]: [`AgentService`], the `Agent` gRPC service; `service::wire`
//!   turns every failure into a `Status` with a typed `Reason`.
//! - [`code_cache`]: each version of a function's code, materialised once.
//! - [`tenant`]: the tenant actor: routing and instance lifecycle
//!   (`actor`), memory events applied as limits (`reconcile`), the periodic
//!   safeguard and idle check (`watchdog`), one instance's FIFO (`worker`).
//! - [`pool`]: the pure lend/borrow decisions (harvest / allocation pools).
//! - [`ledger`]: the pool persisted under the data directory.
//! - [`runtime`]: the runtime traits, the process and docker runtimes, their
//!   shared memory limits, and an in-memory fake for the actor's tests.
//! - [`proxy`]: the in-instance proxy and the agent ⇄ proxy protocol.
//! - `launcher/ephemera-python`: the Python action-loop launcher, embedded.

pub mod agent;
pub mod code_cache;
pub mod config;
pub mod ledger;
pub mod pool;
pub mod proxy;
pub mod registry;
pub mod running;
pub mod runtime;
pub mod service;
pub mod tenant;

pub use agent::run;
pub use config::{AgentConfig, RuntimeKind, SharingScope};
pub use service::AgentService;
