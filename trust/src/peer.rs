//! Who is calling, per request, from the TLS client certificate.
//!
//! The TLS handshake (rustls through tonic, [`crate::server_tls`]) already
//! checked that a presented certificate chains to the cluster CA. Every
//! member-only call checks it again here, because the handshake cannot know:
//! - the role and id the certificate speaks for (its SAN URI);
//! - whether it was revoked since the connection was opened (a connection
//!   lives for hours; the revocation list is consulted on each call);
//! - whether it expired since the handshake.
//!
//! The leaf's signature is verified against the CA once per distinct
//! certificate and the result cached (a few hundred bytes per member), so a
//! call costs a hash lookup and a revocation-set lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rustls::pki_types::CertificateDer;
use tonic::{Request, Status};

use crate::cert::{self, CertInfo};
use crate::creds::{fmt_time, unix_now};
use crate::revocation::{RevocationEntry, RevocationList};
use crate::{Identity, Role, TrustError};

/// Distinct peer certificates remembered; the cache is emptied when full.
const CACHE_LIMIT: usize = 1024;

/// The caller of a member-only service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Controller (Raft member) `id`.
    Controller(u64),
    /// The agent of node `node_id`.
    Agent(String),
    /// A client-API server (not a member: refused by every member-only guard).
    ClientApi(String),
    /// Security is off (`--insecure`): nobody was checked.
    Insecure,
}

impl Peer {
    fn of(identity: &Identity) -> Peer {
        match identity {
            Identity::Controller { id } => Peer::Controller(*id),
            Identity::Agent { node_id } => Peer::Agent(node_id.clone()),
            Identity::ClientApi { name } => Peer::ClientApi(name.clone()),
        }
    }

    /// The controller id, if a controller is calling.
    pub fn controller_id(&self) -> Option<u64> {
        match self {
            Peer::Controller(id) => Some(*id),
            _ => None,
        }
    }

    /// The node id, if an agent is calling.
    pub fn node_id(&self) -> Option<&str> {
        match self {
            Peer::Agent(n) => Some(n),
            _ => None,
        }
    }

    /// Whether this peer has `role` (an insecure peer has every role).
    pub fn has_role(&self, role: Role) -> bool {
        matches!(
            (self, role),
            (Peer::Insecure, _)
                | (Peer::Controller(_), Role::Controller)
                | (Peer::Agent(_), Role::Agent)
                | (Peer::ClientApi(_), Role::ClientApi)
        )
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Controller(id) => write!(f, "controller {id}"),
            Peer::Agent(n) => write!(f, "agent {n}"),
            Peer::ClientApi(n) => write!(f, "client-API server {n}"),
            Peer::Insecure => f.write_str("an unchecked caller (insecure mode)"),
        }
    }
}

fn role_list(roles: &[Role]) -> String {
    let names: Vec<&str> = roles
        .iter()
        .map(|r| match r {
            Role::Controller => "controllers",
            Role::Agent => "agents",
            Role::ClientApi => "client-API servers",
        })
        .collect();
    names.join(" or ")
}

struct Inner {
    cas: Vec<CertificateDer<'static>>,
    revocations: RevocationList,
    cache: Mutex<HashMap<Vec<u8>, Arc<CertInfo>>>,
}

/// Checks the peer certificate of each request. Cheap to clone; one per
/// process is enough (it shares the revocation list it was made with).
#[derive(Clone)]
pub struct PeerVerifier {
    inner: Option<Arc<Inner>>,
}

impl std::fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            None => f.write_str("PeerVerifier(insecure)"),
            Some(i) => f
                .debug_struct("PeerVerifier")
                .field("cas", &i.cas.len())
                .field("revocations", &i.revocations.path())
                .finish(),
        }
    }
}

impl PeerVerifier {
    /// A verifier trusting the CA certificate(s) in `ca_pem`.
    pub fn new(ca_pem: &str, revocations: RevocationList) -> Result<PeerVerifier, TrustError> {
        let cas = cert::pem_certs(ca_pem).map_err(|detail| TrustError::Tls {
            target: "the peer verifier's CA".into(),
            detail,
        })?;
        Ok(PeerVerifier::from_parts(cas, revocations))
    }

    pub(crate) fn from_parts(
        cas: Vec<CertificateDer<'static>>,
        revocations: RevocationList,
    ) -> PeerVerifier {
        PeerVerifier {
            inner: Some(Arc::new(Inner {
                cas,
                revocations,
                cache: Mutex::new(HashMap::new()),
            })),
        }
    }

    /// A verifier that lets every call through as [`Peer::Insecure`]: only
    /// for `--insecure` (see [`crate::Security`]).
    pub fn insecure() -> PeerVerifier {
        PeerVerifier { inner: None }
    }

    /// Whether this verifier checks nothing.
    pub fn is_insecure(&self) -> bool {
        self.inner.is_none()
    }

    /// Checks a certificate chain as a TLS server received it (leaf first).
    /// `Ok(None)`: no certificate; `Err`: a certificate that is not (or no
    /// longer) a valid member credential.
    pub fn check_chain(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
    ) -> Result<Option<Peer>, Status> {
        let Some(inner) = &self.inner else {
            return Ok(Some(Peer::Insecure));
        };
        let Some(leaf) = chain.and_then(|c| c.first()) else {
            return Ok(None);
        };
        let info = inner.leaf_info(leaf)?;
        let now = unix_now();
        if now > info.not_after {
            return Err(Status::unauthenticated(format!(
                "the certificate of {} (serial {}) expired at {}",
                info.identity,
                info.serial,
                fmt_time(info.not_after)
            )));
        }
        if now < info.not_before {
            return Err(Status::unauthenticated(format!(
                "the certificate of {} (serial {}) is not valid before {}",
                info.identity,
                info.serial,
                fmt_time(info.not_before)
            )));
        }
        if let Some(entry) = inner.revocations.check(&info) {
            let why = match entry {
                RevocationEntry::Serial(_) => "this certificate is revoked".to_string(),
                RevocationEntry::Identity(_) => {
                    "every certificate of this member is revoked".into()
                }
            };
            return Err(Status::unauthenticated(format!(
                "the certificate of {} (serial {}) is refused: {why}",
                info.identity, info.serial
            )));
        }
        Ok(Some(Peer::of(&info.identity)))
    }

    /// The caller's identity, if it presented a certificate.
    pub fn peer<T>(&self, req: &Request<T>) -> Result<Option<Peer>, Status> {
        if self.inner.is_none() {
            return Ok(Some(Peer::Insecure));
        }
        let certs = req.peer_certs();
        self.check_chain(certs.as_deref().map(|v| v.as_slice()))
    }

    /// The caller's identity; `Unauthenticated` without a valid member certificate.
    pub fn peer_identity<T>(&self, req: &Request<T>) -> Result<Peer, Status> {
        self.peer(req)?.ok_or_else(|| {
            Status::unauthenticated(
                "cluster members only: this call needs a client certificate issued by the \
                 cluster CA (mutual TLS), and the connection presented none",
            )
        })
    }

    /// Refuses unless the caller is one of `roles`.
    pub fn require_roles<T>(&self, req: &Request<T>, roles: &[Role]) -> Result<Peer, Status> {
        let peer = self.peer_identity(req)?;
        if roles.iter().any(|r| peer.has_role(*r)) {
            Ok(peer)
        } else {
            Err(Status::permission_denied(format!(
                "{peer} may not make this call: it is for {} only",
                role_list(roles)
            )))
        }
    }

    /// Refuses unless a controller is calling.
    pub fn require_controller<T>(&self, req: &Request<T>) -> Result<Peer, Status> {
        self.require_roles(req, &[Role::Controller])
    }

    /// Refuses unless the agent of `claimed_node_id` is calling: an agent's
    /// certificate names its node, and it may speak (register, heartbeat)
    /// for that node only.
    pub fn require_agent<T>(
        &self,
        req: &Request<T>,
        claimed_node_id: &str,
    ) -> Result<Peer, Status> {
        let peer = self.require_roles(req, &[Role::Agent])?;
        match &peer {
            Peer::Agent(n) if n != claimed_node_id => Err(Status::permission_denied(format!(
                "the certificate of agent {n} cannot act for node {claimed_node_id:?}"
            ))),
            _ => Ok(peer),
        }
    }

    /// An interceptor admitting only `role`; it puts the [`Peer`] into the
    /// request's extensions (read it with [`authorized_peer`]).
    pub fn require_member(&self, role: Role) -> RequireMember {
        self.require_any(&[role])
    }

    /// An interceptor admitting any of `roles`.
    pub fn require_any(&self, roles: &[Role]) -> RequireMember {
        RequireMember {
            verifier: self.clone(),
            roles: roles.to_vec(),
        }
    }
}

impl Inner {
    fn leaf_info(&self, leaf: &CertificateDer<'_>) -> Result<Arc<CertInfo>, Status> {
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(info) = cache.get(leaf.as_ref()) {
                return Ok(info.clone());
            }
        }
        let parsed = cert::parse(leaf)
            .map_err(|e| Status::unauthenticated(format!("unreadable client certificate: {e}")))?;
        cert::verify_issued_by(&parsed, &self.cas).map_err(|e| {
            Status::unauthenticated(format!(
                "the client certificate was not issued by the cluster CA: {e}"
            ))
        })?;
        let info = Arc::new(cert::info_of(&parsed).map_err(|e| {
            Status::unauthenticated(format!(
                "the client certificate names no cluster member: {e}"
            ))
        })?);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(leaf.as_ref().to_vec(), info.clone());
        Ok(info)
    }
}

/// The caller admitted by a [`RequireMember`] interceptor in front of this service.
pub fn authorized_peer<T>(req: &Request<T>) -> Option<&Peer> {
    req.extensions().get::<Peer>()
}

/// A tonic interceptor that admits only cluster members of some roles, e.g.
/// `InterceptedService::new(RaftServiceServer::new(rpc), verifier.require_member(Role::Controller))`.
#[derive(Clone, Debug)]
pub struct RequireMember {
    verifier: PeerVerifier,
    roles: Vec<Role>,
}

impl tonic::service::Interceptor for RequireMember {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let peer = self.verifier.require_roles(&req, &self.roles)?;
        req.extensions_mut().insert(peer);
        Ok(req)
    }
}
