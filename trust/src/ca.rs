//! The cluster CA: one ECDSA P-256 key and self-signed certificate that
//! sign every member's certificate.
//!
//! ```text
//! <ca-dir>/      0700
//!   ca.key       0600  the CA's private key: never leaves this directory
//!   ca.pem       0644  the CA certificate, copied into every member's directory
//!   revoked      0644  the master revocation list (see `revocation`)
//! ```
//!
//! [`ClusterCa::init`] creates them once and loads them afterwards; it never
//! replaces an existing key or certificate, and refuses a directory that holds
//! only one of the two.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::cert::{self, CertInfo};
use crate::creds::{key_matches, unix_now, MemberPaths, CA_CERT_FILE};
use crate::files::{self, KEY_MODE, PUBLIC_MODE};
use crate::revocation::{append_entry, RevocationEntry, RevocationList, REVOKED_FILE};
use crate::{Credentials, Identity, TrustError};

/// The CA key's file name.
pub const CA_KEY_FILE: &str = "ca.key";

/// How long the cluster CA is valid.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// How long a member certificate is valid unless told otherwise.
pub const MEMBER_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// [`ClusterCa::ensure_member`] re-issues a certificate that expires sooner than this.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Clock skew tolerated between the CA's machine and the members'.
const BACKDATE: Duration = Duration::from_secs(300);

/// A certificate just issued, not yet written anywhere.
#[derive(Clone)]
pub struct IssuedCert {
    /// Whom it was issued to.
    pub identity: Identity,
    /// The certificate (PEM).
    pub cert_pem: String,
    /// Its private key (PKCS#8 PEM).
    pub key_pem: String,
    /// The CA certificate(s) it chains to (PEM).
    pub ca_pem: String,
    /// Serial and validity.
    pub info: CertInfo,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("identity", &self.identity)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl IssuedCert {
    /// Writes `ca.pem`, `<stem>.pem` and `<stem>.key` into `dir` (created
    /// 0700), replacing the member's previous files (key first, then the
    /// certificate). Returns the paths.
    pub fn write_to(&self, dir: &Path) -> Result<MemberPaths, TrustError> {
        files::ensure_private_dir(dir)?;
        let paths = MemberPaths::new(dir, &self.identity);
        // Unchanged when the member directory is the CA's own (`ephemera dev`).
        if std::fs::read(&paths.ca).ok().as_deref() != Some(self.ca_pem.as_bytes()) {
            files::write_replace(&paths.ca, self.ca_pem.as_bytes(), PUBLIC_MODE)?;
        }
        files::write_replace(&paths.key, self.key_pem.as_bytes(), KEY_MODE)?;
        files::write_replace(&paths.cert, self.cert_pem.as_bytes(), PUBLIC_MODE)?;
        Ok(paths)
    }
}

/// The cluster CA, loaded with its private key.
pub struct ClusterCa {
    dir: PathBuf,
    cert_pem: String,
    ca_certs: Vec<CertificateDer<'static>>,
    issuer: Issuer<'static, KeyPair>,
    created: bool,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("dir", &self.dir)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

fn random_serial() -> Result<SerialNumber, TrustError> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TrustError::Issue {
            identity: "a serial number".into(),
            detail: "the system random generator failed".into(),
        })?;
    // Positive and without a leading zero byte, so DER and hex agree.
    bytes[0] = (bytes[0] & 0x7f).max(1);
    Ok(SerialNumber::from_slice(&bytes))
}

fn validity(valid_for: Duration) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    (now - BACKDATE, now + valid_for)
}

/// The DNS and IP names of a certificate, as strings.
fn names_of(der: &[u8]) -> Result<BTreeSet<String>, String> {
    let cert = cert::parse(der)?;
    let mut names = BTreeSet::new();
    if let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subjectAltName: {e}"))?
    {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => {
                    names.insert(d.to_string());
                }
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).map(IpAddr::from).ok(),
                        16 => <[u8; 16]>::try_from(*b).map(IpAddr::from).ok(),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.insert(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(names)
}

fn wanted_names(identity: &Identity, sans: &[String]) -> Result<BTreeSet<String>, TrustError> {
    let mut names = BTreeSet::new();
    for s in identity.default_sans().iter().chain(sans) {
        let s = s.trim();
        if s.is_empty() {
            continue;
        }
        // Canonical text, so "::0001" and "::1" are one name.
        match s.parse::<IpAddr>() {
            Ok(ip) => names.insert(ip.to_string()),
            Err(_) => names.insert(s.to_ascii_lowercase()),
        };
    }
    Ok(names)
}

impl ClusterCa {
    /// Creates the CA in `dir` if there is none, else loads it. Idempotent:
    /// the first call makes the key and certificate, every later call (from
    /// any process) gets the same CA. Never overwrites.
    pub fn init(dir: &Path) -> Result<ClusterCa, TrustError> {
        match ClusterCa::create(dir) {
            Err(TrustError::CaExists { .. }) => ClusterCa::load(dir),
            other => other,
        }
    }

    /// Creates a new CA in `dir`; fails with [`TrustError::CaExists`] if one is there.
    pub fn create(dir: &Path) -> Result<ClusterCa, TrustError> {
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        match (key_path.exists(), cert_path.exists()) {
            (true, true) => {
                return Err(TrustError::CaExists {
                    dir: dir.to_path_buf(),
                })
            }
            (true, false) => {
                return Err(TrustError::IncompleteCa {
                    dir: dir.to_path_buf(),
                    present: CA_KEY_FILE,
                    missing: CA_CERT_FILE,
                })
            }
            (false, true) => {
                return Err(TrustError::IncompleteCa {
                    dir: dir.to_path_buf(),
                    present: CA_CERT_FILE,
                    missing: CA_KEY_FILE,
                })
            }
            (false, false) => {}
        }
        files::ensure_private_dir(dir)?;
        let ca_err = |detail: String| TrustError::Issue {
            identity: "the cluster CA".into(),
            detail,
        };
        let key = KeyPair::generate().map_err(|e| ca_err(e.to_string()))?;
        let mut params = CertificateParams::default();
        let serial = random_serial()?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ephemera");
        // A per-cluster name, so two clusters' CAs are told apart in logs.
        dn.push(
            DnType::CommonName,
            format!(
                "Ephemera cluster CA {}",
                &cert::serial_hex(&serial.to_bytes())[..8]
            ),
        );
        params.distinguished_name = dn;
        params.serial_number = Some(serial);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (params.not_before, params.not_after) = validity(CA_VALIDITY);
        let cert = params
            .self_signed(&key)
            .map_err(|e| ca_err(e.to_string()))?;
        let cert_pem = cert.pem();
        // Key first, with create_new: if another process got here first, we
        // fail instead of replacing its key, and load its CA.
        match files::write_new(&key_path, key.serialize_pem().as_bytes(), KEY_MODE) {
            Err(TrustError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                return Err(TrustError::CaExists {
                    dir: dir.to_path_buf(),
                })
            }
            other => other?,
        }
        files::write_new(&cert_path, cert_pem.as_bytes(), PUBLIC_MODE)?;
        tracing::info!(dir = %dir.display(), "created the cluster CA");
        Ok(ClusterCa {
            dir: dir.to_path_buf(),
            ca_certs: vec![cert.der().clone()],
            cert_pem,
            issuer: Issuer::new(params, key),
            created: true,
        })
    }

    /// Loads the CA in `dir`. `ca.pem` may hold more than one certificate
    /// (a rollover bundle); the first is the one `ca.key` belongs to.
    pub fn load(dir: &Path) -> Result<ClusterCa, TrustError> {
        let key_path = dir.join(CA_KEY_FILE);
        let cert_path = dir.join(CA_CERT_FILE);
        match (key_path.exists(), cert_path.exists()) {
            (true, false) => {
                return Err(TrustError::IncompleteCa {
                    dir: dir.to_path_buf(),
                    present: CA_KEY_FILE,
                    missing: CA_CERT_FILE,
                })
            }
            (false, true) => {
                return Err(TrustError::IncompleteCa {
                    dir: dir.to_path_buf(),
                    present: CA_CERT_FILE,
                    missing: CA_KEY_FILE,
                })
            }
            _ => {}
        }
        let key_pem = files::read_key(&key_path)?;
        let cert_pem = files::read_text(&cert_path)?;
        let ca_certs =
            cert::pem_certs(&cert_pem).map_err(|e| TrustError::bad_file(&cert_path, e))?;
        let first = cert::parse(&ca_certs[0]).map_err(|e| TrustError::bad_file(&cert_path, e))?;
        if !first.is_ca() {
            return Err(TrustError::bad_file(
                &cert_path,
                "the first certificate is not a CA certificate",
            ));
        }
        key_matches(&key_pem, &key_path, &ca_certs[0], &cert_path)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| TrustError::bad_file(&key_path, format!("not a private key: {e}")))?;
        let issuer = Issuer::from_ca_cert_der(&ca_certs[0], key)
            .map_err(|e| TrustError::bad_file(&cert_path, format!("unusable CA: {e}")))?;
        Ok(ClusterCa {
            dir: dir.to_path_buf(),
            cert_pem,
            ca_certs,
            issuer,
            created: false,
        })
    }

    /// Whether this call created the CA (false: it existed).
    pub fn created(&self) -> bool {
        self.created
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate(s), PEM: what every member and client trusts.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The master revocation list, `<ca-dir>/revoked`.
    pub fn revocation_path(&self) -> PathBuf {
        self.dir.join(REVOKED_FILE)
    }

    /// Issues a certificate valid for [`MEMBER_VALIDITY`]. It carries the
    /// identity URI, the identity's [`Identity::default_sans`] and `sans`
    /// (DNS names or IP addresses: the names clients dial), and may serve as
    /// both a TLS server and a TLS client certificate.
    pub fn issue(&self, identity: &Identity, sans: &[String]) -> Result<IssuedCert, TrustError> {
        self.issue_valid_for(identity, sans, MEMBER_VALIDITY)
    }

    /// [`ClusterCa::issue`] with an explicit validity.
    pub fn issue_valid_for(
        &self,
        identity: &Identity,
        sans: &[String],
        valid_for: Duration,
    ) -> Result<IssuedCert, TrustError> {
        identity.validate()?;
        let err = |detail: String| TrustError::Issue {
            identity: identity.uri(),
            detail,
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Ephemera");
        dn.push(DnType::CommonName, identity.file_stem());
        params.distinguished_name = dn;
        params.serial_number = Some(random_serial()?);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        (params.not_before, params.not_after) = validity(valid_for);
        let mut names = vec![SanType::URI(
            identity
                .uri()
                .try_into()
                .map_err(|e: rcgen::Error| err(e.to_string()))?,
        )];
        for name in wanted_names(identity, sans)? {
            names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    name.as_str()
                        .try_into()
                        .map_err(|e: rcgen::Error| err(format!("name {name:?}: {e}")))?,
                ),
            });
        }
        params.subject_alt_names = names;
        let key = KeyPair::generate().map_err(|e| err(e.to_string()))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| err(e.to_string()))?;
        let info = cert::cert_info(cert.der()).map_err(err)?;
        Ok(IssuedCert {
            identity: identity.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ca_pem: self.cert_pem.clone(),
            info,
        })
    }

    /// Issues a certificate for `identity` into `member_dir`, replacing its
    /// previous one (rotation), copies the revocation list there, and loads
    /// the result.
    pub fn issue_into(
        &self,
        identity: &Identity,
        sans: &[String],
        member_dir: &Path,
    ) -> Result<Credentials, TrustError> {
        let issued = self.issue(identity, sans)?;
        issued.write_to(member_dir)?;
        self.publish_revocations(member_dir)?;
        tracing::info!(
            identity = %identity,
            serial = %issued.info.serial,
            dir = %member_dir.display(),
            "issued a member certificate"
        );
        Credentials::load(member_dir, identity)
    }

    /// The member's credentials in `member_dir` if they are usable — issued
    /// by this CA, holding `identity` and every name of `sans`, not revoked,
    /// and valid for longer than [`RENEW_BEFORE`] — else freshly issued ones.
    /// What `ephemera dev` and `compose/up.sh` call on every start.
    pub fn ensure_member(
        &self,
        identity: &Identity,
        sans: &[String],
        member_dir: &Path,
    ) -> Result<Credentials, TrustError> {
        let master = RevocationList::open(&self.revocation_path())?;
        if master
            .entries()
            .contains(&RevocationEntry::Identity(identity.clone()))
        {
            return Err(TrustError::IdentityRevoked {
                identity: identity.uri(),
                list: self.revocation_path(),
            });
        }
        match self.usable(identity, sans, member_dir) {
            Ok(()) => {
                self.publish_revocations(member_dir)?;
                Credentials::load(member_dir, identity)
            }
            Err(reason) => {
                tracing::info!(identity = %identity, "issuing a certificate: {reason}");
                self.issue_into(identity, sans, member_dir)
            }
        }
    }

    fn usable(
        &self,
        identity: &Identity,
        sans: &[String],
        member_dir: &Path,
    ) -> Result<(), String> {
        let paths = MemberPaths::new(member_dir, identity);
        if !paths.cert.exists() && !paths.key.exists() {
            return Err("none yet".into());
        }
        // Against this CA's list: the member's copy may be older.
        let revocations =
            RevocationList::open(&self.revocation_path()).map_err(|e| e.to_string())?;
        let creds =
            Credentials::load_with(member_dir, identity, revocations).map_err(|e| e.to_string())?;
        let der = cert::pem_certs(creds.cert_pem())?;
        let leaf = cert::parse(&der[0])?;
        cert::verify_issued_by(&leaf, &self.ca_certs[..1])
            .map_err(|e| format!("not issued by this CA ({e})"))?;
        if creds.ca_pem() != self.cert_pem {
            return Err("its ca.pem differs from this CA's".into());
        }
        if let Some(entry) = creds.revocations().check(creds.info()) {
            return Err(format!("revoked ({})", entry.line()));
        }
        if creds.info().not_after - unix_now() < RENEW_BEFORE.as_secs() as i64 {
            return Err("expires within 30 days".into());
        }
        let have = names_of(&der[0])?;
        let want = wanted_names(identity, sans).map_err(|e| e.to_string())?;
        if let Some(missing) = want.difference(&have).next() {
            return Err(format!("it does not name {missing}"));
        }
        Ok(())
    }

    /// Adds `entry` to the master revocation list (`<ca-dir>/revoked`).
    /// Members see it once it is copied into their directories with
    /// [`ClusterCa::publish_revocations`] (or the list is shared with them).
    pub fn revoke(&self, entry: &RevocationEntry) -> Result<(), TrustError> {
        append_entry(&self.revocation_path(), entry)?;
        tracing::info!(entry = %entry.line(), "revoked");
        Ok(())
    }

    /// Copies the master revocation list into `member_dir/revoked`
    /// (atomically; servers reading it pick the change up within
    /// [`crate::RELOAD_INTERVAL`]). With no master list yet, writes an empty one.
    pub fn publish_revocations(&self, member_dir: &Path) -> Result<(), TrustError> {
        let master = self.revocation_path();
        let target = member_dir.join(REVOKED_FILE);
        if target == master {
            return Ok(());
        }
        let text = match std::fs::read(&master) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(TrustError::io("reading", &master, e)),
        };
        if std::fs::read(&target).ok().as_deref() == Some(&text[..]) {
            return Ok(());
        }
        files::write_replace(&target, &text, PUBLIC_MODE)
    }
}
