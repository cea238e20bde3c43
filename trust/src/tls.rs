//! tonic TLS configurations for each side of each zone.
//!
//! Servers: [`server_tls`] for a listener that serves clients *and* members
//! (the controller: a client certificate is optional at the handshake, and
//! each member-only service checks the caller itself), [`server_tls_mutual`]
//! for a listener that serves members only (the agent).
//!
//! Clients: [`member_endpoint`] for a member dialing a member (presents its
//! certificate, checks the server's *identity* — e.g. "controller 2", "agent
//! node-1" — rather than the host name it dialed, and the revocation list);
//! [`anonymous_endpoint`] for the CLI (no certificate; checks the server was
//! issued by the cluster CA). [`client_tls`] and [`client_tls_anonymous`]
//! are the plain host-name-checking configurations for callers that build
//! their own [`Endpoint`].
//!
//! tonic applies a TLS configuration only to `https://` URIs: an `http://`
//! URI connects in plain text even with one set. [`https_url`] makes the URI.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, verify_server_name};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, ServerTlsConfig};

use crate::cert;
use crate::revocation::RevocationList;
use crate::{Credentials, Identity, Role, TrustError};

/// Longest a TLS handshake may take before the connection is dropped (a
/// client that opens connections and never finishes them ties up nothing longer).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes ring the process's rustls crypto provider, unless one is installed.
/// tonic's server side builds its rustls config with the process default,
/// which rustls cannot pick by itself when more than one provider is compiled
/// in; every function here calls this first.
pub fn install_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race to another installer is fine: one is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The server side of a listener that serves clients and members on one
/// port: presents `creds`, asks for a client certificate but does not require
/// one; a presented one must chain to the cluster CA or the handshake fails.
/// Member-only services must then check the caller with a
/// [`crate::PeerVerifier`] (guard or interceptor): without that, anyone reaches them.
pub fn server_tls(creds: &Credentials) -> ServerTlsConfig {
    install_crypto_provider();
    ServerTlsConfig::new()
        .identity(creds.tonic_identity())
        .client_ca_root(creds.tonic_ca())
        .client_auth_optional(true)
        .timeout(HANDSHAKE_TIMEOUT)
}

/// The server side of a members-only listener: a client certificate issued by
/// the cluster CA is required at the handshake. Services still check the
/// caller's role and the revocation list per call.
pub fn server_tls_mutual(creds: &Credentials) -> ServerTlsConfig {
    install_crypto_provider();
    ServerTlsConfig::new()
        .identity(creds.tonic_identity())
        .client_ca_root(creds.tonic_ca())
        .client_auth_optional(false)
        .timeout(HANDSHAKE_TIMEOUT)
}

/// A member's client configuration: presents `creds` and checks that the
/// server's certificate chains to the cluster CA and names `server_name`
/// (a DNS name or IP address in its SANs).
pub fn client_tls(creds: &Credentials, server_name: &str) -> ClientTlsConfig {
    install_crypto_provider();
    ClientTlsConfig::new()
        .domain_name(server_name)
        .ca_certificate(creds.tonic_ca())
        .identity(creds.tonic_identity())
        .timeout(HANDSHAKE_TIMEOUT)
}

/// A client's configuration without a certificate (the CLI, with its bearer
/// token): checks that the server chains to the CA in `ca_pem` and names
/// `server_name`.
pub fn client_tls_anonymous(ca_pem: &str, server_name: &str) -> ClientTlsConfig {
    install_crypto_provider();
    ClientTlsConfig::new()
        .domain_name(server_name)
        .ca_certificate(Certificate::from_pem(ca_pem))
        .timeout(HANDSHAKE_TIMEOUT)
}

/// What a client requires of the server's certificate, besides chaining to
/// the cluster CA and not being revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Plain TLS: the host name (or IP) dialed is among its SANs.
    Name,
    /// Any member of this role, whatever address was dialed.
    Role(Role),
    /// Exactly this member, whatever address was dialed (a controller dialing
    /// the address an agent registered checks it reaches *that* agent).
    Identity(Identity),
    /// Something that serves the client API: a controller or a client-API server.
    ClientApi,
}

impl Expect {
    fn admits(&self, identity: &Identity) -> bool {
        match self {
            Expect::Name => true,
            Expect::Role(r) => identity.role() == *r,
            Expect::Identity(i) => identity == i,
            Expect::ClientApi => matches!(identity.role(), Role::Controller | Role::ClientApi),
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expect::Name => f.write_str("the host name dialed"),
            Expect::Role(r) => write!(f, "any {r}"),
            Expect::Identity(i) => write!(f, "{i}"),
            Expect::ClientApi => f.write_str("a controller or client-API server"),
        }
    }
}

/// Server certificate verification for the cluster: chain to the CA, then
/// the [`Expect`]ed identity (or name), then the revocation list.
#[derive(Debug)]
struct ZoneVerifier {
    roots: Arc<RootCertStore>,
    expect: Expect,
    revocations: Option<RevocationList>,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn refuse(msg: String) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Refused(msg)))))
}

impl ServerCertVerifier for ZoneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        if self.expect == Expect::Name {
            verify_server_name(&parsed, server_name)?;
        }
        let info = cert::cert_info(end_entity)
            .map_err(|e| refuse(format!("the server's certificate names no member: {e}")))?;
        if !self.expect.admits(&info.identity) {
            return Err(refuse(format!(
                "the server is {}, expected {}",
                info.identity, self.expect
            )));
        }
        if let Some(list) = &self.revocations {
            if let Some(entry) = list.check(&info) {
                return Err(refuse(format!(
                    "the certificate of server {} is revoked ({})",
                    info.identity,
                    entry.line()
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `https://host:port` for `host:port` (an `http://` or `https://` prefix is replaced).
pub fn https_url(addr: &str) -> String {
    format!("https://{}", strip_scheme(addr))
}

/// `http://host:port` for `host:port` (for `--insecure`).
pub fn http_url(addr: &str) -> String {
    format!("http://{}", strip_scheme(addr))
}

fn strip_scheme(addr: &str) -> &str {
    addr.strip_prefix("https://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr)
        .trim_end_matches('/')
}

fn zone_endpoint(
    addr: &str,
    ca_pem: &str,
    identity: Option<tonic::transport::Identity>,
    expect: &Expect,
    revocations: Option<RevocationList>,
) -> Result<Endpoint, TrustError> {
    install_crypto_provider();
    let url = https_url(addr);
    let tls_err = |detail: String| TrustError::Tls {
        target: url.clone(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    let cas = cert::pem_certs(ca_pem).map_err(&tls_err)?;
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err(tls_err("the CA file holds no usable certificate".into()));
    }
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let verifier = Arc::new(ZoneVerifier {
        roots: Arc::new(roots),
        expect: expect.clone(),
        revocations,
        provider,
    });
    let mut tls = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(url.clone())
        .map_err(|e| tls_err(e.to_string()))?
        .tls_config_with_verifier(tls, verifier)
        .map_err(|e| tls_err(e.to_string()))
}

/// An endpoint for a member dialing another member at `addr` (`host:port`,
/// with or without a scheme): mutual TLS with `creds`, the server checked
/// against `expect` and `creds`' revocation list. Set timeouts etc. on the
/// result as usual.
pub fn member_endpoint(
    creds: &Credentials,
    addr: &str,
    expect: &Expect,
) -> Result<Endpoint, TrustError> {
    zone_endpoint(
        addr,
        creds.ca_pem(),
        Some(creds.tonic_identity()),
        expect,
        Some(creds.revocations().clone()),
    )
}

/// An endpoint for a client without a certificate (the CLI): TLS to `addr`,
/// the server checked against the CA in `ca_pem` and `expect` (usually
/// [`Expect::ClientApi`], which does not depend on the name dialed).
pub fn anonymous_endpoint(
    ca_pem: &str,
    addr: &str,
    expect: &Expect,
) -> Result<Endpoint, TrustError> {
    zone_endpoint(addr, ca_pem, None, expect, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(https_url("a:1"), "https://a:1");
        assert_eq!(https_url("http://a:1/"), "https://a:1");
        assert_eq!(http_url("https://a:1"), "http://a:1");
    }
}
