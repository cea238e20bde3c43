//! Ephemera's wire types: the gRPC services between client, controllers and
//! node agents, generated from `proto/*.proto` at build time.
//!
//! - [`v1`]: the `Controller`, `NodeRegistry` and `Agent` services.
//! - [`raft`]: the controllers' internal Raft transport.

#![allow(clippy::all, missing_docs)]

/// Client, node and agent services.
pub mod v1 {
    tonic::include_proto!("ephemera.v1");
}

/// Raft transport between controllers.
pub mod raft {
    tonic::include_proto!("ephemera.raft.v1");
}
