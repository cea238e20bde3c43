//! Ephemera's shared vocabulary: the small types and rules every layer
//! agrees on, so that the control plane, the node agent and the CLI speak
//! of a function, a size or a failure in one way.
//!
//! It owns: how tenant and function names are validated, how memory sizes
//! are written and read, how an invocation input is parsed, how a
//! function's code is read and digested, how the tier's counters travel,
//! which failure reasons cross a gRPC seam, and where Ephemera's pieces sit
//! inside an instance image. It does not talk to the network, run anything
//! or keep state: those belong to the crates that use it.
//!
//! Layout:
//! - [`name`]: tenant, function and node names (`FunctionRef` = `tenant/name`).
//! - [`size`]: `256MiB`-style sizes, parsed and formatted.
//! - [`input`]: an invocation's JSON input.
//! - [`code`]: a function's code as files: read from a directory, digested.
//! - [`tier`]: the tier's counters on the wire, in JSON and on spans.
//! - [`reason`]: typed failure reasons carried in gRPC status details.
//! - [`stages`]: where a request's time went, in reply metadata (benches).
//! - [`image`]: the in-instance paths of the proxy, intercept and launchers.

pub mod code;
pub mod image;
pub mod input;
pub mod name;
pub mod reason;
pub mod size;
pub mod stages;
pub mod tier;

pub use name::{FunctionRef, NameError};
pub use reason::Reason;
pub use size::{format_size, parse_size};
