//! Who a certificate speaks for. The identity is encoded as one SAN URI in
//! the SPIFFE form `spiffe://ephemera/<role>/<id>`:
//!
//! | identity                         | URI                                 | file stem           |
//! |----------------------------------|-------------------------------------|---------------------|
//! | `Controller { id: 1 }`           | `spiffe://ephemera/controller/1`    | `controller-1`      |
//! | `Agent { node_id: "node-1" }`    | `spiffe://ephemera/agent/node-1`    | `agent-node-1`      |
//! | `ClientApi { name: "gateway" }`  | `spiffe://ephemera/api/gateway`     | `api-gateway`       |
//!
//! Node ids and names are 1 to 128 characters of `[A-Za-z0-9._-]`, not starting
//! with `.` or `-`: they end up in file names and URIs, so nothing else is allowed.

use std::fmt;

use crate::TrustError;

/// The SPIFFE trust domain of every Ephemera certificate.
pub const TRUST_DOMAIN: &str = "ephemera";

const PREFIX: &str = "spiffe://ephemera/";

/// What a member is, without its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A controller: Raft peer, serves the client API and the node registry.
    Controller,
    /// A node agent: registers with controllers, serves the `Agent` service.
    Agent,
    /// A client-API server that is not a cluster member (e.g. an HTTP gateway):
    /// it may serve clients but is refused by every member-only service.
    ClientApi,
}

impl Role {
    /// The URI path segment (`controller`, `agent`, `api`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Agent => "agent",
            Role::ClientApi => "api",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity a certificate is issued to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Identity {
    /// Raft member `id` (non-zero).
    Controller {
        /// The Raft member id.
        id: u64,
    },
    /// The agent of node `node_id`.
    Agent {
        /// The node id it registers as.
        node_id: String,
    },
    /// A client-API server called `name`; never a cluster member.
    ClientApi {
        /// A name of the operator's choosing.
        name: String,
    },
}

/// Checks a node id or name for use in URIs and file names.
pub fn validate_name(name: &str) -> Result<(), TrustError> {
    let bad = |detail: &str| {
        Err(TrustError::BadIdentity {
            what: name.to_string(),
            detail: detail.to_string(),
        })
    };
    if name.is_empty() || name.len() > 128 {
        return bad("must be 1 to 128 characters");
    }
    if name.starts_with('.') || name.starts_with('-') {
        return bad("must not start with '.' or '-'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
    {
        return bad("only letters, digits, '.', '-' and '_' are allowed");
    }
    Ok(())
}

impl Identity {
    /// A controller identity; refuses id 0 (not a Raft member id).
    pub fn controller(id: u64) -> Result<Identity, TrustError> {
        if id == 0 {
            return Err(TrustError::BadIdentity {
                what: "0".into(),
                detail: "controller ids are non-zero Raft member ids".into(),
            });
        }
        Ok(Identity::Controller { id })
    }

    /// An agent identity for `node_id`.
    pub fn agent(node_id: &str) -> Result<Identity, TrustError> {
        validate_name(node_id)?;
        Ok(Identity::Agent {
            node_id: node_id.to_string(),
        })
    }

    /// A client-API server identity.
    pub fn client_api(name: &str) -> Result<Identity, TrustError> {
        validate_name(name)?;
        Ok(Identity::ClientApi {
            name: name.to_string(),
        })
    }

    /// Checks the id or name (for values built directly).
    pub fn validate(&self) -> Result<(), TrustError> {
        match self {
            Identity::Controller { id } => Identity::controller(*id).map(|_| ()),
            Identity::Agent { node_id } => validate_name(node_id),
            Identity::ClientApi { name } => validate_name(name),
        }
    }

    /// The role, without the id.
    pub fn role(&self) -> Role {
        match self {
            Identity::Controller { .. } => Role::Controller,
            Identity::Agent { .. } => Role::Agent,
            Identity::ClientApi { .. } => Role::ClientApi,
        }
    }

    /// The SAN URI, e.g. `spiffe://ephemera/agent/node-1`.
    pub fn uri(&self) -> String {
        match self {
            Identity::Controller { id } => format!("{PREFIX}controller/{id}"),
            Identity::Agent { node_id } => format!("{PREFIX}agent/{node_id}"),
            Identity::ClientApi { name } => format!("{PREFIX}api/{name}"),
        }
    }

    /// Parses a SAN URI made by [`Identity::uri`].
    pub fn from_uri(uri: &str) -> Result<Identity, TrustError> {
        let bad = |detail: &str| TrustError::BadIdentity {
            what: uri.to_string(),
            detail: detail.to_string(),
        };
        let rest = uri
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("not a spiffe://ephemera/ URI"))?;
        let (role, id) = rest
            .split_once('/')
            .ok_or_else(|| bad("expected spiffe://ephemera/<role>/<id>"))?;
        match role {
            "controller" => {
                // Digits only: "+1" or "01" would parse to a u64 but are not ours.
                if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) || id.starts_with('0') {
                    return Err(bad("a controller id is a non-zero decimal number"));
                }
                let id: u64 = id
                    .parse()
                    .map_err(|_| bad("a controller id is a non-zero decimal number"))?;
                Identity::controller(id)
            }
            "agent" => Identity::agent(id),
            "api" => Identity::client_api(id),
            _ => Err(bad("unknown role (controller, agent or api)")),
        }
    }

    /// The stem of this identity's files: `<stem>.pem` and `<stem>.key`.
    pub fn file_stem(&self) -> String {
        match self {
            Identity::Controller { id } => format!("controller-{id}"),
            Identity::Agent { node_id } => format!("agent-{node_id}"),
            Identity::ClientApi { name } => format!("api-{name}"),
        }
    }

    /// Names every certificate of this identity carries besides the ones
    /// given to [`crate::ClusterCa::issue`]: its compose service name
    /// (`controller-<id>`; an agent's node id; an API server's name) and the
    /// loopback names `localhost`, `127.0.0.1`, `::1`, which `ephemera dev`
    /// and in-container health checks use.
    pub fn default_sans(&self) -> Vec<String> {
        let own = match self {
            Identity::Controller { id } => format!("controller-{id}"),
            Identity::Agent { node_id } => node_id.clone(),
            Identity::ClientApi { name } => name.clone(),
        };
        vec![own, "localhost".into(), "127.0.0.1".into(), "::1".into()]
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Controller { id } => write!(f, "controller {id}"),
            Identity::Agent { node_id } => write!(f, "agent {node_id}"),
            Identity::ClientApi { name } => write!(f, "client-API server {name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        for id in [
            Identity::controller(1).unwrap(),
            Identity::controller(u64::MAX).unwrap(),
            Identity::agent("node-1").unwrap(),
            Identity::agent("a.b_c-D9").unwrap(),
            Identity::client_api("gateway").unwrap(),
        ] {
            assert_eq!(Identity::from_uri(&id.uri()).unwrap(), id);
        }
        assert_eq!(
            Identity::agent("node-1").unwrap().uri(),
            "spiffe://ephemera/agent/node-1"
        );
        assert_eq!(Identity::controller(3).unwrap().file_stem(), "controller-3");
    }

    #[test]
    fn refuses_what_is_not_ours() {
        for uri in [
            "spiffe://other/controller/1",
            "spiffe://ephemera/controller/0",
            "spiffe://ephemera/controller/01",
            "spiffe://ephemera/controller/+1",
            "spiffe://ephemera/controller/",
            "spiffe://ephemera/agent/",
            "spiffe://ephemera/agent/../x",
            "spiffe://ephemera/agent/a/b",
            "spiffe://ephemera/agent/-x",
            "spiffe://ephemera/root/1",
            "spiffe://ephemera/agent",
        ] {
            assert!(Identity::from_uri(uri).is_err(), "{uri} accepted");
        }
        assert!(Identity::agent(&"x".repeat(129)).is_err());
    }
}
