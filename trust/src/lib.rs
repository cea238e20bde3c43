//! Ephemera's trust zones: who may call what, proven by what.
//!
//! | zone                                  | services                  | credential                               |
//! |---------------------------------------|---------------------------|------------------------------------------|
//! | client API                            | `Controller`              | bearer token (admin or tenant; `control-plane/src/auth.rs`), over TLS |
//! | controller ↔ controller               | `RaftService`             | mutual TLS, controller certificate       |
//! | agent → controller                    | `NodeRegistry`            | mutual TLS, the agent's own node certificate, node id checked per call |
//! | controller → agent                    | `Agent`                   | mutual TLS, controller certificate       |
//!
//! This crate owns the member credentials and their transport security:
//! - [`ClusterCa`]: the cluster CA (rcgen, ECDSA P-256), created once by
//!   `ephemera cluster init` or the first `ephemera dev`; it issues member
//!   certificates whose SAN URI names the member
//!   (`spiffe://ephemera/controller/1`, `spiffe://ephemera/agent/node-1`);
//! - [`Credentials`]: a member's certificate, key and CA, loaded and checked
//!   from its directory;
//! - [`server_tls`], [`server_tls_mutual`], [`member_endpoint`],
//!   [`anonymous_endpoint`], [`client_tls`], [`client_tls_anonymous`]: tonic
//!   TLS configurations (rustls with ring, no OpenSSL);
//! - [`PeerVerifier`]: the caller of each request (`Peer::Controller(id)`,
//!   `Peer::Agent(node_id)`) from its certificate, the revocation list checked
//!   on every call, and guards ([`PeerVerifier::require_controller`],
//!   [`PeerVerifier::require_agent`]) or an interceptor ([`RequireMember`]);
//! - [`RevocationList`]: the deny list of serials and identities, reloaded
//!   when its file changes;
//! - [`limits`]: the message-size bound of each zone;
//! - [`Security`]: secure by default; `Security::insecure` only for `--insecure`,
//!   with a loud warning.
//!
//! It does not: check bearer tokens (the controller's `auth`), decide which
//! member may do what beyond its role and node id, distribute files between
//! machines (the CLI and `compose/up.sh` copy them), hot-swap a running
//! server's own certificate (restart it), or rotate the CA itself (see the README).
//!
//! Files (modes enforced on write; a key readable by others is refused on load):
//!
//! ```text
//! <ca-dir>/       0700   ca.key 0600, ca.pem 0644, revoked 0644 (master list)
//! <member-dir>/   0700   ca.pem 0644, <stem>.pem 0644, <stem>.key 0600, revoked 0644
//!                        stem: controller-<id> | agent-<node-id> | api-<name>
//! ```
//!
//! The CA directory may double as a member directory (`ephemera dev` keeps
//! everything in one place); in a real cluster only the operator's machine
//! holds `ca.key`, and each member holds its own files and nothing else.

mod ca;
mod cert;
mod creds;
mod error;
mod files;
mod identity;
pub mod limits;
mod peer;
mod revocation;
mod security;
mod tls;

pub use ca::{ClusterCa, IssuedCert, CA_KEY_FILE, CA_VALIDITY, MEMBER_VALIDITY, RENEW_BEFORE};
pub use cert::{cert_info, cert_info_pem, serial_hex, CertInfo};
pub use creds::{Credentials, MemberPaths, CA_CERT_FILE};
pub use error::TrustError;
pub use files::{DIR_MODE, KEY_MODE, PUBLIC_MODE};
pub use identity::{validate_name, Identity, Role, TRUST_DOMAIN};
pub use peer::{authorized_peer, Peer, PeerVerifier, RequireMember};
pub use revocation::{
    append_entry, RevocationEntry, RevocationList, RELOAD_INTERVAL, REVOKED_FILE,
};
pub use security::{warn_insecure, Security};
pub use tls::{
    anonymous_endpoint, client_tls, client_tls_anonymous, http_url, https_url,
    install_crypto_provider, member_endpoint, server_tls, server_tls_mutual, Expect,
    HANDSHAKE_TIMEOUT,
};
