//! Why a call failed, as a type that crosses gRPC seams. A server attaches
//! a [`Reason`] to the `Status` it returns (metadata `ephemera-reason`,
//! plus `ephemera-leader` for [`Reason::NotLeader`]); the caller acts on
//! [`Reason::of`], never on the message text, which is for people.

use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

const REASON_KEY: &str = "ephemera-reason";
const LEADER_KEY: &str = "ephemera-leader";

/// A failure a caller acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The agent has no copy of the function's code: send it along.
    CodeMissing,
    /// The node chosen for an invocation could not be reached.
    NodeUnreachable,
    /// No node has room for the invocation.
    NoCapacity,
    /// The tenant is over one of its quotas.
    Quota,
    /// The function, tenant, node or invocation does not exist.
    NotFound,
    /// This controller does not lead; the leader's address if known.
    NotLeader {
        /// `host:port` of the leader.
        leader: Option<String>,
    },
    /// The request is malformed.
    InvalidArgument,
    /// The function ran and failed (raised, crashed, bad result).
    FunctionFailed,
    /// The function ran past its timeout.
    Timeout,
    /// The server is shutting down.
    ShuttingDown,
    /// The cluster cannot commit right now (no leader, storage).
    Unavailable,
}

impl Reason {
    /// The stable name sent on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::CodeMissing => "code_missing",
            Reason::NodeUnreachable => "node_unreachable",
            Reason::NoCapacity => "no_capacity",
            Reason::Quota => "quota",
            Reason::NotFound => "not_found",
            Reason::NotLeader { .. } => "not_leader",
            Reason::InvalidArgument => "invalid_argument",
            Reason::FunctionFailed => "function_failed",
            Reason::Timeout => "timeout",
            Reason::ShuttingDown => "shutting_down",
            Reason::Unavailable => "unavailable",
        }
    }

    /// The gRPC code that goes with this reason.
    pub fn code(&self) -> Code {
        match self {
            Reason::CodeMissing => Code::FailedPrecondition,
            Reason::NodeUnreachable => Code::Unavailable,
            Reason::NoCapacity | Reason::Quota => Code::ResourceExhausted,
            Reason::NotFound => Code::NotFound,
            Reason::NotLeader { .. } => Code::FailedPrecondition,
            Reason::InvalidArgument => Code::InvalidArgument,
            Reason::FunctionFailed => Code::Aborted,
            Reason::Timeout => Code::DeadlineExceeded,
            Reason::ShuttingDown | Reason::Unavailable => Code::Unavailable,
        }
    }

    /// A `Status` with this reason's code, `message` and the reason attached.
    pub fn status(&self, message: impl Into<String>) -> Status {
        self.status_with_code(self.code(), message)
    }

    /// A `Status` with an explicit `code` (when the reason's default does
    /// not fit, e.g. a function failure relayed with the agent's code).
    pub fn status_with_code(&self, code: Code, message: impl Into<String>) -> Status {
        let mut metadata = MetadataMap::new();
        if let Ok(v) = self.as_str().parse() {
            metadata.insert(REASON_KEY, v);
        }
        if let Reason::NotLeader {
            leader: Some(leader),
        } = self
        {
            if let Ok(v) = leader.parse() {
                metadata.insert(LEADER_KEY, v);
            }
        }
        Status::with_metadata(code, message, metadata)
    }

    /// The reason a peer attached to `status`, if any.
    pub fn of(status: &Status) -> Option<Reason> {
        let metadata = status.metadata();
        let name = metadata.get(REASON_KEY)?.to_str().ok()?;
        Some(match name {
            "code_missing" => Reason::CodeMissing,
            "node_unreachable" => Reason::NodeUnreachable,
            "no_capacity" => Reason::NoCapacity,
            "quota" => Reason::Quota,
            "not_found" => Reason::NotFound,
            "not_leader" => Reason::NotLeader {
                leader: metadata
                    .get(LEADER_KEY)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
            },
            "invalid_argument" => Reason::InvalidArgument,
            "function_failed" => Reason::FunctionFailed,
            "timeout" => Reason::Timeout,
            "shutting_down" => Reason::ShuttingDown,
            "unavailable" => Reason::Unavailable,
            _ => return None,
        })
    }
}

/// Whether `status` was made on this side of the connection because the
/// peer could not be reached or the connection broke (tonic keeps the
/// transport error as its source), rather than sent by the peer. A local
/// deadline (`Cancelled`) is not one: the peer was reached and was slow.
pub fn is_transport_failure(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown)
        && std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_survive_a_status_round_trip() {
        for r in [
            Reason::CodeMissing,
            Reason::NodeUnreachable,
            Reason::NoCapacity,
            Reason::Quota,
            Reason::NotFound,
            Reason::NotLeader {
                leader: Some("10.0.0.2:7100".into()),
            },
            Reason::NotLeader { leader: None },
            Reason::InvalidArgument,
            Reason::FunctionFailed,
            Reason::Timeout,
            Reason::ShuttingDown,
            Reason::Unavailable,
        ] {
            let s = r.status("x");
            // Through the headers, as the peer sees it.
            let mut headers = s.metadata().clone().into_headers();
            headers.insert(
                "grpc-status",
                (s.code() as i32).to_string().parse().unwrap(),
            );
            let back = Status::from_header_map(&headers).unwrap();
            assert_eq!(Reason::of(&back), Some(r.clone()), "{r:?}");
            assert!(!is_transport_failure(&back));
        }
        assert_eq!(Reason::of(&Status::not_found("plain")), None);
    }
}
