//! A member's credentials, loaded from its directory:
//!
//! ```text
//! <dir>/            0700
//!   ca.pem          0644  the cluster CA certificate (a bundle during a CA rollover)
//!   <stem>.pem      0644  this member's certificate (stem: controller-1, agent-node-1, api-NAME)
//!   <stem>.key      0600  its private key (PKCS#8 PEM); refused if group/other can access it
//!   revoked         0644  the revocation list (optional; missing = nothing revoked)
//! ```
//!
//! Loading checks everything a server would otherwise find out at the first
//! handshake: the key matches the certificate, the certificate holds the
//! identity asked for, it was issued by `ca.pem`, and it has not expired.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;

use crate::cert::{self, CertInfo};
use crate::files;
use crate::revocation::{RevocationList, REVOKED_FILE};
use crate::{Identity, PeerVerifier, TrustError};

/// The CA certificate's file name, in the CA directory and in each member's.
pub const CA_CERT_FILE: &str = "ca.pem";

/// Where a member's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberPaths {
    /// `<dir>/ca.pem`
    pub ca: PathBuf,
    /// `<dir>/<stem>.pem`
    pub cert: PathBuf,
    /// `<dir>/<stem>.key`
    pub key: PathBuf,
    /// `<dir>/revoked`
    pub revoked: PathBuf,
}

impl MemberPaths {
    /// The layout for `identity` in `dir`.
    pub fn new(dir: &Path, identity: &Identity) -> MemberPaths {
        let stem = identity.file_stem();
        MemberPaths {
            ca: dir.join(CA_CERT_FILE),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
            revoked: dir.join(REVOKED_FILE),
        }
    }
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A member's certificate, key and cluster CA, plus the revocation list its
/// servers check.
#[derive(Clone)]
pub struct Credentials {
    identity: Identity,
    paths: MemberPaths,
    cert_pem: String,
    key_pem: String,
    ca_pem: String,
    ca_certs: Vec<CertificateDer<'static>>,
    info: CertInfo,
    revocations: RevocationList,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("cert", &self.paths.cert)
            .field("serial", &self.info.serial)
            .field("not_after", &self.info.not_after)
            .finish_non_exhaustive()
    }
}

/// Checks that the key PEM is the private half of the certificate's public key.
pub(crate) fn key_matches(
    key_pem: &str,
    key_path: &Path,
    cert_der: &[u8],
    cert_path: &Path,
) -> Result<(), TrustError> {
    let key = rcgen::KeyPair::from_pem(key_pem)
        .map_err(|e| TrustError::bad_file(key_path, format!("not a private key: {e}")))?;
    let cert = cert::parse(cert_der).map_err(|e| TrustError::bad_file(cert_path, e))?;
    if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
        return Err(TrustError::bad_file(
            key_path,
            format!("this key does not belong to {}", cert_path.display()),
        ));
    }
    Ok(())
}

impl Credentials {
    /// Loads `identity`'s credentials from `dir` (layout above), with the
    /// revocation list `<dir>/revoked`.
    pub fn load(dir: &Path, identity: &Identity) -> Result<Credentials, TrustError> {
        let paths = MemberPaths::new(dir, identity);
        let revocations = RevocationList::open(&paths.revoked)?;
        Credentials::load_with(dir, identity, revocations)
    }

    /// Loads like [`Credentials::load`], but checks peers against `revocations`
    /// (e.g. one list shared by several members of one process).
    pub fn load_with(
        dir: &Path,
        identity: &Identity,
        revocations: RevocationList,
    ) -> Result<Credentials, TrustError> {
        identity.validate()?;
        let paths = MemberPaths::new(dir, identity);
        let ca_pem = files::read_text(&paths.ca)?;
        let ca_certs = cert::pem_certs(&ca_pem).map_err(|e| TrustError::bad_file(&paths.ca, e))?;
        let cert_pem = files::read_text(&paths.cert)?;
        let key_pem = files::read_key(&paths.key)?;
        let certs = cert::pem_certs(&cert_pem).map_err(|e| TrustError::bad_file(&paths.cert, e))?;
        let leaf = cert::parse(&certs[0]).map_err(|e| TrustError::bad_file(&paths.cert, e))?;
        let info = cert::info_of(&leaf).map_err(|e| TrustError::bad_file(&paths.cert, e))?;
        if &info.identity != identity {
            return Err(TrustError::WrongIdentity {
                path: paths.cert.clone(),
                found: info.identity.uri(),
                expected: identity.uri(),
            });
        }
        cert::verify_issued_by(&leaf, &ca_certs).map_err(|detail| TrustError::NotIssuedByCa {
            cert: paths.cert.clone(),
            ca: paths.ca.clone(),
            detail,
        })?;
        key_matches(&key_pem, &paths.key, &certs[0], &paths.cert)?;
        let now = unix_now();
        if info.not_after < now {
            return Err(TrustError::bad_file(
                &paths.cert,
                format!(
                    "expired (not after {}): issue a new one",
                    fmt_time(info.not_after)
                ),
            ));
        }
        if let Some(entry) = revocations.check(&info) {
            tracing::warn!(
                cert = %paths.cert.display(),
                "this member's own certificate is revoked ({}): other members will refuse it",
                entry.line()
            );
        }
        Ok(Credentials {
            identity: identity.clone(),
            paths,
            cert_pem,
            key_pem,
            ca_pem,
            ca_certs,
            info,
            revocations,
        })
    }

    /// Whose credentials these are.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Where they were loaded from.
    pub fn paths(&self) -> &MemberPaths {
        &self.paths
    }

    /// The certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The cluster CA certificate(s) (PEM), what clients of this member need.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Serial and validity of the certificate.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// The revocation list checked against peers.
    pub fn revocations(&self) -> &RevocationList {
        &self.revocations
    }

    /// The certificate and key as tonic's identity (for TLS configs).
    pub fn tonic_identity(&self) -> tonic::transport::Identity {
        tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem)
    }

    /// The CA as tonic's certificate (for TLS configs).
    pub fn tonic_ca(&self) -> tonic::transport::Certificate {
        tonic::transport::Certificate::from_pem(&self.ca_pem)
    }

    /// The per-call checker for this member's servers.
    pub fn verifier(&self) -> PeerVerifier {
        PeerVerifier::from_parts(self.ca_certs.clone(), self.revocations.clone())
    }
}

/// `2026-04-01T12:00:00Z` for a Unix time.
pub(crate) fn fmt_time(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}
