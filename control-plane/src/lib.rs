//! The Ephemera controller: one member of a Raft group that places every
//! invocation of the cluster, and the client of its API.
//!
//! A controller (openraft over gRPC, state in `ephemera-storage`) serves
//! clients (deploy, invoke, status), the node agents (register, heartbeat)
//! and its Raft peers on one listener. An invocation is placed by a Raft
//! `Schedule` command, run on the chosen agent, and released by `Complete`.
//! It does not run functions (`ephemera-node-agent` does), store anything
//! itself (`ephemera-storage` does) or parse command lines (`ephemera-cli`).
//!
//! Layout, in the order an invocation passes through:
//! - [`server`]: start a controller and serve it on one listener.
//! - [`api`]: the gRPC services: authenticate, then call [`controller`].
//! - [`auth`]: tokens: who is calling, and for which tenant.
//! - [`controller`]: what each API call does (deploy, invoke, profile,
//!   nodes, status) and its errors.
//! - [`raft`]: the Raft member, its transport, group commit, forwarding.
//! - [`channels`]: one cached channel per peer and agent address.
//! - [`liveness`]: agents' heartbeats; silent agents are marked down.
//! - [`leases`]: placements live while an agent vouches for them.
//! - [`convert`]: wire types to and from the replicated records.
//! - [`client`]: a token-carrying client of the controller API.
//! - [`bench`]: `ephemera bench scheduler|placements`.

pub mod api;
pub mod auth;
pub mod bench;
pub mod channels;
pub mod client;
pub mod controller;
pub mod convert;
pub mod leases;
pub mod liveness;
pub mod raft;
pub mod server;
