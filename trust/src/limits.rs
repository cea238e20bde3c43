//! Bounded message sizes, one per zone. Every tonic server and client of a
//! zone sets both `max_decoding_message_size` and `max_encoding_message_size`
//! to its bound; no service may use `usize::MAX`. A bound is a hard cap on
//! what one call makes a peer allocate, so it is sized from the largest
//! *legitimate* message of the zone, with headroom, and no larger.

/// Client API (`Controller` service). The largest legitimate request is a
/// deploy, which carries the function's code by value: code is limited to
/// what fits here (64 MiB). Anything an unauthenticated caller sends is
/// refused above this before the token is even looked at.
pub const CLIENT_API_MAX_MESSAGE: usize = 64 << 20;

/// Node registry (`NodeRegistry` service: `RegisterNode`, `Heartbeat`).
/// Requests hold a node id, an address, a number and a flag, replies a flag:
/// a few hundred bytes. 64 KiB leaves room for long names and nothing else,
/// so a registering agent cannot make the controller buffer megabytes.
pub const REGISTRY_MAX_MESSAGE: usize = 64 << 10;

/// Controller to agent (`Agent` service). `Run` and `Profile` carry the
/// function's code when the agent lacks it (up to [`CLIENT_API_MAX_MESSAGE`]
/// of files) plus the input document and the spec; replies carry the result
/// JSON. 96 MiB = the code bound + 32 MiB for input, result and framing
/// (the bound the agent already used).
pub const AGENT_MAX_MESSAGE: usize = 96 << 20;

/// Controller to controller (`RaftService`). One log entry holds at most one
/// client write; the largest is a deploy, whose code travels base64 inside
/// JSON: 64 MiB x 4/3 = 85.4 MiB, plus the record and the JSON framing.
/// `ClientWrite` forwarding carries one such command; `InstallSnapshot`
/// carries one chunk (openraft's `snapshot_max_chunk_size`, 3 MiB by
/// default). 128 MiB holds one maximal entry with room to spare.
///
/// `AppendEntries` may batch many entries (openraft's `max_payload_entries`,
/// 300 by default), so the *sender* must keep a batch under this bound:
/// measure the serialized request and, when it is larger, answer openraft
/// with `RPCError::PayloadTooLarge` (`PayloadTooLarge::new_entries_hint`),
/// which makes it resend fewer entries. A receiver refuses larger messages
/// with `OUT_OF_RANGE`/`RESOURCE_EXHAUSTED`, and replication would stall
/// on that batch forever.
pub const RAFT_MAX_MESSAGE: usize = 128 << 20;
