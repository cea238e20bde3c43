//! Secure by default, insecure only when asked, and loudly.

use std::sync::Arc;

use tonic::transport::{Endpoint, ServerTlsConfig};

use crate::tls::{self, Expect};
use crate::{Credentials, PeerVerifier, TrustError};

/// How a binary's listeners and connections are protected. The binaries
/// build [`Security::Mutual`] from the member's credentials; only an explicit
/// `--insecure` flag may select [`Security::insecure`], which prints a warning.
#[derive(Debug, Clone)]
pub enum Security {
    /// Mutual TLS with the cluster CA; member-only calls are checked per call.
    Mutual(Arc<Credentials>),
    /// Plain text; every caller is admitted as [`crate::Peer::Insecure`].
    Insecure,
}

/// Prints, to stderr and to the log, that `component` runs without any
/// authentication of peers. Called by [`Security::insecure`].
pub fn warn_insecure(component: &str) {
    let banner = format!(
        "\n\
         ************************************************************************\n\
         *  WARNING: {component} IS RUNNING WITH --insecure\n\
         *  - no TLS: every byte on the network can be read and forged;\n\
         *  - Raft, the node registry and the agents' Agent service accept ANY\n\
         *    caller: anyone who can reach a port can rewrite the cluster state,\n\
         *    register fake nodes, and run commands on the agents;\n\
         *  Use it only for a throwaway test on a machine you alone can reach.\n\
         ************************************************************************\n"
    );
    eprintln!("{banner}");
    tracing::warn!(
        component,
        "running with --insecure: no TLS, no member authentication"
    );
}

impl Security {
    /// Mutual TLS with `creds`.
    pub fn mutual(creds: Credentials) -> Security {
        Security::Mutual(Arc::new(creds))
    }

    /// No security, announced with [`warn_insecure`] for `component`.
    pub fn insecure(component: &str) -> Security {
        warn_insecure(component);
        Security::Insecure
    }

    /// Chooses by the `--insecure` flag: without it, `load` must succeed.
    pub fn from_flag(
        insecure: bool,
        component: &str,
        load: impl FnOnce() -> Result<Credentials, TrustError>,
    ) -> Result<Security, TrustError> {
        if insecure {
            Ok(Security::insecure(component))
        } else {
            load().map(Security::mutual)
        }
    }

    /// Whether security is off.
    pub fn is_insecure(&self) -> bool {
        matches!(self, Security::Insecure)
    }

    /// The member's credentials, when secure.
    pub fn credentials(&self) -> Option<&Credentials> {
        match self {
            Security::Mutual(c) => Some(c),
            Security::Insecure => None,
        }
    }

    /// The per-call checker for this process's servers.
    pub fn verifier(&self) -> PeerVerifier {
        match self {
            Security::Mutual(c) => c.verifier(),
            Security::Insecure => PeerVerifier::insecure(),
        }
    }

    /// [`tls::server_tls`] (client certificate optional), or `None` when insecure.
    pub fn server_tls(&self) -> Option<ServerTlsConfig> {
        self.credentials().map(tls::server_tls)
    }

    /// [`tls::server_tls_mutual`] (client certificate required), or `None` when insecure.
    pub fn server_tls_mutual(&self) -> Option<ServerTlsConfig> {
        self.credentials().map(tls::server_tls_mutual)
    }

    /// The URI for `addr` in this mode: `https://` or `http://`.
    pub fn url(&self, addr: &str) -> String {
        match self {
            Security::Mutual(_) => tls::https_url(addr),
            Security::Insecure => tls::http_url(addr),
        }
    }

    /// An endpoint to another member: [`tls::member_endpoint`], or a
    /// plain-text one when insecure.
    pub fn member_endpoint(&self, addr: &str, expect: &Expect) -> Result<Endpoint, TrustError> {
        match self {
            Security::Mutual(c) => tls::member_endpoint(c, addr, expect),
            Security::Insecure => {
                let url = tls::http_url(addr);
                Endpoint::from_shared(url.clone()).map_err(|e| TrustError::Tls {
                    target: url,
                    detail: e.to_string(),
                })
            }
        }
    }
}
