//! Reading certificates: PEM to DER, the identity in the SAN URI, the serial,
//! the validity, and whether a leaf was signed by one of the cluster CAs.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Identity;

/// What a member certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The identity in its `spiffe://ephemera/...` SAN URI.
    pub identity: Identity,
    /// Its serial number, lowercase hex without leading zero bytes
    /// (the form the revocation list uses).
    pub serial: String,
    /// Valid from (Unix seconds).
    pub not_before: i64,
    /// Valid until (Unix seconds).
    pub not_after: i64,
}

/// Lowercase hex of a serial, leading zero bytes dropped (DER adds one to
/// keep the number positive; the revocation list must not care).
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    let mut out = String::with_capacity((raw.len() - start) * 2);
    for b in &raw[start..] {
        out.push_str(&format!("{b:02x}"));
    }
    if out.is_empty() {
        out.push('0');
    }
    out
}

/// Every `CERTIFICATE` block of a PEM text.
pub fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("bad PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(certs)
}

pub(crate) fn parse(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    let (rest, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    Ok(cert)
}

/// The identity of a parsed certificate: its one `spiffe://ephemera/` SAN URI.
pub(crate) fn identity_of(cert: &X509Certificate<'_>) -> Result<Identity, String> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("unreadable subjectAltName: {e}"))?
        .ok_or("no subjectAltName, so no Ephemera identity")?;
    let mut found = None;
    for name in &san.value.general_names {
        if let GeneralName::URI(uri) = name {
            if uri.starts_with("spiffe://") {
                if found.is_some() {
                    return Err("more than one spiffe:// identity".into());
                }
                found = Some(Identity::from_uri(uri).map_err(|e| e.to_string())?);
            }
        }
    }
    found.ok_or_else(|| "no spiffe://ephemera/ URI in subjectAltName".into())
}

/// Reads a member certificate (DER).
pub fn cert_info(der: &[u8]) -> Result<CertInfo, String> {
    let cert = parse(der)?;
    info_of(&cert)
}

pub(crate) fn info_of(cert: &X509Certificate<'_>) -> Result<CertInfo, String> {
    if cert.is_ca() {
        return Err("a CA certificate is not a member certificate".into());
    }
    Ok(CertInfo {
        identity: identity_of(cert)?,
        serial: serial_hex(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Reads the first certificate of a PEM text.
pub fn cert_info_pem(pem: &str) -> Result<CertInfo, String> {
    let certs = pem_certs(pem)?;
    cert_info(&certs[0])
}

/// Checks that `leaf` is signed by one of `cas` (a CA bundle: more than one
/// during a CA rollover).
pub(crate) fn verify_issued_by(
    leaf: &X509Certificate<'_>,
    cas: &[CertificateDer<'_>],
) -> Result<(), String> {
    let mut last = String::from("no CA certificate");
    for ca in cas {
        let ca = parse(ca)?;
        if !ca.is_ca() {
            last = "the CA file holds a certificate that is not a CA".into();
            continue;
        }
        match leaf.verify_signature(Some(ca.public_key())) {
            Ok(()) => return Ok(()),
            Err(e) => last = format!("signature check failed: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_normalized() {
        assert_eq!(serial_hex(&[0, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x0a]), "0a");
        assert_eq!(serial_hex(&[0, 0]), "0");
    }
}
