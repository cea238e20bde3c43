//! The Ephemera controller and the `ephemera` CLI.
//!
//! A controller is one member of a Raft group (openraft over gRPC, state in
//! `ephemera-storage`). It serves clients (deploy, invoke, status), the node
//! agents (register, heartbeat) and its Raft peers on one listener. An
//! invocation is placed by a Raft `Schedule` command, run on the chosen
//! agent, and released by `Complete`. This crate does not run functions
//! (that is `ephemera-node-agent`) nor store anything itself
//! (`ephemera-storage`).
//!
//! Layout:
//! - [`controller`]: what each API call does.
//! - [`api`]: the gRPC services, translating to and from [`controller`].
//! - [`auth`]: tokens: who is calling, and for which tenant.
//! - [`raft`]: the Raft member, its transport, write forwarding.
//! - [`liveness`]: agents' heartbeats; silent agents are marked down.
//! - [`server`]: start and serve a controller.
//! - [`dev`]: the embedded cluster of `ephemera dev`.
//! - [`cli`]: the client commands.
//! - [`client`]: a token-carrying client of the controller API.
//! - [`credentials`]: the CLI's saved tokens.
//! - [`run`]: `ephemera run`, one command under the tier, outside any cluster.
//! - [`bench`]: `ephemera bench scheduler`, the policies outside Raft.
//! - [`artifacts`]: finding the intercept library and proxy binary.
//! - [`convert`]: wire conversions.

pub mod api;
pub mod artifacts;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod controller;
pub mod convert;
pub mod credentials;
pub mod dev;
pub mod liveness;
pub mod raft;
pub mod run;
pub mod server;
