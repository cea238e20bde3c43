//! Credentials on disk: modes, idempotent CA creation that never overwrites,
//! loading checks that name the file at fault.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ephemera_trust::{
    ClusterCa, Credentials, Identity, MemberPaths, RevocationEntry, Security, TrustError,
};

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn files_have_their_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    let ca = ClusterCa::init(&ca_dir).unwrap();
    assert!(ca.created());
    assert_eq!(mode(&ca_dir), 0o700);
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
    assert_eq!(mode(&ca_dir.join("ca.pem")), 0o644);

    let agent = Identity::agent("node-1").unwrap();
    let member_dir = tmp.path().join("m").join("agent-1");
    ca.revoke(&RevocationEntry::Serial("01".into())).unwrap();
    let creds = ca
        .issue_into(&agent, &["agent-1".into()], &member_dir)
        .unwrap();
    let paths = MemberPaths::new(&member_dir, &agent);
    assert_eq!(paths.cert, member_dir.join("agent-node-1.pem"));
    assert_eq!(paths.key, member_dir.join("agent-node-1.key"));
    assert_eq!(mode(&member_dir), 0o700);
    assert_eq!(mode(&paths.key), 0o600);
    assert_eq!(mode(&paths.cert), 0o644);
    assert_eq!(mode(&paths.ca), 0o644);
    assert_eq!(mode(&paths.revoked), 0o644);
    assert_eq!(mode(&ca.revocation_path()), 0o644);
    assert_eq!(creds.identity(), &agent);
    assert_eq!(creds.revocations().entries().len(), 1);

    // A key that others can read is refused, naming the file and the fix.
    fs::set_permissions(&paths.key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = Credentials::load(&member_dir, &agent).unwrap_err();
    assert!(matches!(err, TrustError::KeyTooOpen { .. }), "{err}");
    assert!(err.to_string().contains("agent-node-1.key"), "{err}");
    assert!(err.to_string().contains("chmod 600"), "{err}");

    // An existing directory with a wide mode is narrowed when written to.
    fs::set_permissions(&member_dir, fs::Permissions::from_mode(0o755)).unwrap();
    ca.issue_into(&agent, &[], &member_dir).unwrap();
    assert_eq!(mode(&member_dir), 0o700);
    assert_eq!(mode(&paths.key), 0o600);
}

#[test]
fn init_twice_does_not_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    let first = ClusterCa::init(&dir).unwrap();
    let key = fs::read(dir.join("ca.key")).unwrap();
    let cert = fs::read(dir.join("ca.pem")).unwrap();

    let second = ClusterCa::init(&dir).unwrap();
    assert!(first.created() && !second.created());
    assert_eq!(fs::read(dir.join("ca.key")).unwrap(), key);
    assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), cert);
    assert_eq!(first.cert_pem(), second.cert_pem());

    // The loaded CA issues certificates the first one's members accept.
    let c1 = Identity::controller(1).unwrap();
    let creds = second.issue_into(&c1, &[], &tmp.path().join("c1")).unwrap();
    assert_eq!(creds.ca_pem(), first.cert_pem());

    assert!(matches!(
        ClusterCa::create(&dir),
        Err(TrustError::CaExists { .. })
    ));

    // Half a CA is refused, and the remaining half is left alone.
    fs::remove_file(dir.join("ca.pem")).unwrap();
    let err = ClusterCa::init(&dir).unwrap_err();
    assert!(matches!(err, TrustError::IncompleteCa { .. }), "{err}");
    assert!(err.to_string().contains("ca.pem"), "{err}");
    assert_eq!(fs::read(dir.join("ca.key")).unwrap(), key);
    assert!(!dir.join("ca.pem").exists());
}

#[test]
fn loading_names_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::init(&tmp.path().join("ca")).unwrap();
    let other = ClusterCa::init(&tmp.path().join("other")).unwrap();
    let c1 = Identity::controller(1).unwrap();
    let dir = tmp.path().join("c1");
    ca.issue_into(&c1, &[], &dir).unwrap();

    // Asking for another identity.
    let c2 = Identity::controller(2).unwrap();
    fs::copy(dir.join("controller-1.pem"), dir.join("controller-2.pem")).unwrap();
    fs::copy(dir.join("controller-1.key"), dir.join("controller-2.key")).unwrap();
    let err = Credentials::load(&dir, &c2).unwrap_err();
    assert!(matches!(err, TrustError::WrongIdentity { .. }), "{err}");
    assert!(err.to_string().contains("controller-2.pem"), "{err}");

    // A certificate of another CA next to this CA.
    let foreign = other.issue(&c1, &[]).unwrap();
    let fdir = tmp.path().join("foreign");
    foreign.write_to(&fdir).unwrap();
    fs::copy(dir.join("ca.pem"), fdir.join("ca.pem")).unwrap();
    let err = Credentials::load(&fdir, &c1).unwrap_err();
    assert!(matches!(err, TrustError::NotIssuedByCa { .. }), "{err}");

    // A key that is not the certificate's.
    let mismatched = ca.issue(&c1, &[]).unwrap();
    fs::write(dir.join("controller-1.key"), mismatched.key_pem).unwrap();
    let err = Credentials::load(&dir, &c1).unwrap_err();
    assert!(err.to_string().contains("does not belong to"), "{err}");

    // A missing file.
    let err = Credentials::load(&tmp.path().join("nowhere"), &c1).unwrap_err();
    assert!(err.to_string().contains("nowhere/ca.pem"), "{err}");
}

#[test]
fn ensure_member_reuses_then_reissues_when_names_change() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::init(&tmp.path().join("ca")).unwrap();
    let c1 = Identity::controller(1).unwrap();
    let dir = tmp.path().join("c1");
    let a = ca
        .ensure_member(&c1, &["ctl.example".into()], &dir)
        .unwrap();
    let b = ca
        .ensure_member(&c1, &["ctl.example".into()], &dir)
        .unwrap();
    assert_eq!(a.info().serial, b.info().serial, "reused");
    let c = ca
        .ensure_member(&c1, &["ctl.example".into(), "10.0.0.5".into()], &dir)
        .unwrap();
    assert_ne!(
        a.info().serial,
        c.info().serial,
        "a new name means a new certificate"
    );
    ca.revoke(&RevocationEntry::Serial(c.info().serial.clone()))
        .unwrap();
    let d = ca
        .ensure_member(&c1, &["ctl.example".into(), "10.0.0.5".into()], &dir)
        .unwrap();
    assert_ne!(
        c.info().serial,
        d.info().serial,
        "a revoked certificate is replaced"
    );
    assert_eq!(d.revocations().entries().len(), 1, "the list was published");
}

#[test]
fn the_default_is_secure_and_insecure_is_explicit() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = ClusterCa::init(&tmp.path().join("ca")).unwrap();
    let c1 = Identity::controller(1).unwrap();
    let dir = tmp.path().join("c1");
    ca.issue_into(&c1, &[], &dir).unwrap();
    let s = Security::from_flag(false, "test", || Credentials::load(&dir, &c1)).unwrap();
    assert!(!s.is_insecure() && s.server_tls().is_some());
    assert_eq!(s.url("h:1"), "https://h:1");
    // Without --insecure, missing credentials are an error, not plain text.
    let missing = Security::from_flag(false, "test", || {
        Credentials::load(&tmp.path().join("none"), &c1)
    });
    assert!(missing.is_err());
    let s = Security::from_flag(true, "test", || unreachable!()).unwrap();
    assert!(s.is_insecure() && s.server_tls().is_none());
    assert_eq!(s.url("https://h:1"), "http://h:1");
}

#[test]
fn one_directory_for_the_ca_and_every_member_as_ephemera_dev_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tls");
    let ca = ClusterCa::init(&dir).unwrap();
    let ca_pem = fs::read(dir.join("ca.pem")).unwrap();
    let ids = [
        Identity::controller(1).unwrap(),
        Identity::agent("node-1").unwrap(),
        Identity::agent("node-2").unwrap(),
    ];
    for id in &ids {
        ca.ensure_member(id, &[], &dir).unwrap();
    }
    assert_eq!(
        fs::read(dir.join("ca.pem")).unwrap(),
        ca_pem,
        "CA untouched"
    );
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "agent-node-1.key",
            "agent-node-1.pem",
            "agent-node-2.key",
            "agent-node-2.pem",
            "ca.key",
            "ca.pem",
            "controller-1.key",
            "controller-1.pem",
        ]
    );
    // Members there follow the master list itself.
    let node2 = Credentials::load(&dir, &ids[2]).unwrap();
    ca.revoke(&RevocationEntry::Serial(node2.info().serial.clone()))
        .unwrap();
    let c1 = Credentials::load(&dir, &ids[0]).unwrap();
    assert_eq!(
        c1.revocations().path(),
        Some(ca.revocation_path().as_path())
    );
    assert_eq!(c1.revocations().entries().len(), 1);
    // A second start reuses everything but the revoked certificate.
    let again = ca.ensure_member(&ids[2], &[], &dir).unwrap();
    assert_ne!(again.info().serial, node2.info().serial);
    let c1_again = ca.ensure_member(&ids[0], &[], &dir).unwrap();
    assert_eq!(c1_again.info().serial, c1.info().serial);
}
