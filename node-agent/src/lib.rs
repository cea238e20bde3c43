//! The Ephemera node agent (the thesis's Tenant Manager): one per node. It
//! serves the `Agent` gRPC service to the controllers, runs every invocation in
//! a warm function instance under the tenant's actor, and moves memory between
//! the instances of one tenant so I/O-heavy functions get the memory CPU-heavy
//! ones do not use. It does not place invocations (the controller does) and it
//! does not serve files (the intercept library inside each instance does).
//!
//! Layout, in the order an invocation passes through:
//!
//! - [`config`]: [`AgentConfig`] and its defaults.
//! - [`service`]: the `Agent` gRPC service and [`run`] (serve, register,
//!   shut down).
//! - [`registry`]: `RegisterNode` and heartbeats to the controllers.
//! - [`code_cache`]: each version of a function's code, materialised once.
//! - [`tenant`]: the tenant actor: routing, per-instance FIFO, memory events.
//! - [`pool`]: the pure lend/borrow decisions (harvest / allocation pools).
//! - [`ledger`]: the pool persisted under the data directory.
//! - [`runtime`]: the container runtime trait, the process runtime and cgroups.
//! - [`proxy`]: the in-instance proxy (`ephemera-proxy`) and its protocol.
//! - `launcher/ephemera-python`: the Python action-loop launcher, embedded.

pub mod agent;
pub mod code_cache;
pub mod config;
pub mod ledger;
pub mod pool;
pub mod proxy;
pub mod registry;
pub mod runtime;
pub mod service;
pub mod tenant;

pub use agent::run;
pub use config::{AgentConfig, RuntimeKind, SharingScope};
pub use service::AgentService;
