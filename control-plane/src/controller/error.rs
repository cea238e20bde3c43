//! The controller's errors, one variant per failure a caller acts on; each
//! becomes a gRPC status carrying its [`Reason`], so clients never match
//! message texts.

use ephemera_domain::{NameError, Reason};
use tonic::{Code, Status};

use crate::raft::WriteError;

/// Errors of the controller's API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A tenant, function or node name breaks the naming rules.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The function does not exist; the tenant's functions are named.
    #[error("function {tenant}/{name} does not exist ({})", known_functions(.tenant, .known))]
    FunctionNotFound {
        /// The tenant asked for.
        tenant: String,
        /// The function asked for.
        name: String,
        /// The tenant's functions.
        known: Vec<String>,
    },
    /// Something else does not exist (an invocation, a tenant's placement).
    #[error("{0}")]
    NotFound(String),
    /// No node can take the invocation.
    #[error("{0}")]
    NoCapacity(String),
    /// The tenant is at its quota.
    #[error("{0}")]
    Quota(String),
    /// The node chosen for an invocation (or a profile) did not answer.
    #[error("{what}: agent {node} at {addr} is unreachable: {detail}")]
    NodeUnreachable {
        /// What we were doing (`invocation X of T/F`, `profiling T/F`).
        what: String,
        /// The node.
        node: String,
        /// Its agent's address.
        addr: String,
        /// The transport's words.
        detail: String,
    },
    /// The cluster cannot commit right now.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// An agent answered with a failure (the function raised, crashed,
    /// timed out, or the agent is shutting down): relayed with its code.
    #[error("{message}")]
    Agent {
        /// The agent's gRPC code.
        code: Code,
        /// The agent's reason, if it gave one.
        reason: Option<Reason>,
        /// What happened, naming the function and node.
        message: String,
    },
}

fn known_functions(tenant: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!("tenant {tenant} has no functions")
    } else {
        format!("tenant {tenant} has: {}", known.join(", "))
    }
}

impl ApiError {
    /// The reason a client acts on.
    pub fn reason(&self) -> Reason {
        match self {
            ApiError::InvalidArgument(_) | ApiError::Name(_) => Reason::InvalidArgument,
            ApiError::FunctionNotFound { .. } | ApiError::NotFound(_) => Reason::NotFound,
            ApiError::NoCapacity(_) => Reason::NoCapacity,
            ApiError::Quota(_) => Reason::Quota,
            ApiError::NodeUnreachable { .. } => Reason::NodeUnreachable,
            ApiError::Write(WriteError::Forward { addr, .. }) => Reason::NotLeader {
                leader: Some(addr.clone()),
            },
            ApiError::Write(_) => Reason::Unavailable,
            ApiError::Agent { reason, code, .. } => reason.clone().unwrap_or(match code {
                Code::DeadlineExceeded => Reason::Timeout,
                Code::Unavailable => Reason::Unavailable,
                _ => Reason::FunctionFailed,
            }),
        }
    }

    /// The gRPC code the client sees.
    pub fn code(&self) -> Code {
        match self {
            ApiError::Agent { code, .. } => *code,
            ApiError::Write(_) => Code::Unavailable,
            other => other.reason().code(),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        e.reason().status_with_code(e.code(), e.to_string())
    }
}
