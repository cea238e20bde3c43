//! The crate's one error type: every variant names the file or the identity
//! that failed, so a message alone tells an operator what to fix.

use std::path::PathBuf;

/// Why making, loading or using credentials failed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A file system operation on `path` failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done ("reading", "writing", "creating the directory", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `path` does not hold what it should (bad PEM, no certificate, wrong key, ...).
    #[error("{}: {detail}", path.display())]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A private key file can be read or written by other users.
    #[error(
        "{}: the private key is accessible to other users (mode {mode:03o}); \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The CA directory holds part of a CA: creating one would overwrite it.
    #[error(
        "{}: an incomplete cluster CA ({present} exists, {missing} does not); \
         refusing to overwrite it: restore {missing} or remove the directory",
        dir.display()
    )]
    IncompleteCa {
        /// The CA directory.
        dir: PathBuf,
        /// The file that exists.
        present: &'static str,
        /// The file that is missing.
        missing: &'static str,
    },
    /// A CA already exists where [`crate::ClusterCa::create`] was asked for a new one.
    #[error("{}: a cluster CA already exists there; refusing to overwrite it", dir.display())]
    CaExists {
        /// The CA directory.
        dir: PathBuf,
    },
    /// A certificate holds a different identity than the one asked for.
    #[error("{}: holds the identity {found}, expected {expected}", path.display())]
    WrongIdentity {
        /// The certificate file.
        path: PathBuf,
        /// The identity it holds.
        found: String,
        /// The identity that was asked for.
        expected: String,
    },
    /// A member's certificate is not signed by the cluster CA next to it.
    #[error("{}: not issued by the cluster CA in {}: {detail}", cert.display(), ca.display())]
    NotIssuedByCa {
        /// The member's certificate file.
        cert: PathBuf,
        /// The CA file.
        ca: PathBuf,
        /// What the check said.
        detail: String,
    },
    /// Every certificate of this identity is revoked: issuing another is pointless.
    #[error(
        "{identity} is revoked in {}: remove its line there to admit it again",
        list.display()
    )]
    IdentityRevoked {
        /// The identity (URI).
        identity: String,
        /// The revocation list that names it.
        list: PathBuf,
    },
    /// An identity (controller id, node id, name) cannot be encoded or parsed.
    #[error("invalid identity {what:?}: {detail}")]
    BadIdentity {
        /// The text that was refused.
        what: String,
        /// Why.
        detail: String,
    },
    /// Generating or signing a certificate failed.
    #[error("issuing a certificate for {identity}: {detail}")]
    Issue {
        /// The identity (URI) being issued, or `cluster CA`.
        identity: String,
        /// The generator's error.
        detail: String,
    },
    /// The revocation list has a line that is neither a serial nor an identity.
    #[error("{}:{line}: {detail}", path.display())]
    BadRevocation {
        /// The list's file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// Building a tonic endpoint or TLS configuration failed.
    #[error("TLS configuration for {target}: {detail}")]
    Tls {
        /// The address or component being configured.
        target: String,
        /// tonic's or rustls's error.
        detail: String,
    },
}

impl TrustError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        TrustError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        TrustError::BadFile {
            path: path.into(),
            detail: detail.into(),
        }
    }
}
