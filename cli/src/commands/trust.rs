//! The cluster's credentials: `ephemera cluster init|issue|revoke`, and how
//! each long-running command finds its own (`--tls-dir`, `--insecure`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use ephemera_trust::{ClusterCa, Credentials, Identity, RevocationEntry, Security};

use crate::args::{InitArgs, IssueArgs, RevokeArgs};
use crate::say;

/// `ephemera cluster init`: the cluster CA, created once.
pub fn init(args: InitArgs) -> anyhow::Result<()> {
    let ca = ClusterCa::init(&args.ca_dir)?;
    if ca.created() {
        say!("created the cluster CA in {}", args.ca_dir.display());
    } else {
        say!(
            "the cluster CA in {} already exists; kept",
            args.ca_dir.display()
        );
    }
    say!("  certificate: {}", args.ca_dir.join("ca.pem").display());
    Ok(())
}

/// `ephemera cluster issue`: a member's certificate into its directory.
pub fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let ca = ClusterCa::load(&args.ca_dir)?;
    let identity = match (&args.controller, &args.agent) {
        (Some(id), None) => Identity::controller(*id)?,
        (None, Some(node)) => Identity::agent(node)?,
        _ => anyhow::bail!("name exactly one member: --controller ID or --agent NODE"),
    };
    let creds = if args.force {
        ca.issue_into(&identity, &args.san, &args.out)?
    } else {
        ca.ensure_member(&identity, &args.san, &args.out)?
    };
    say!(
        "{identity}: certificate serial {} in {}",
        creds.info().serial,
        args.out.display()
    );
    Ok(())
}

/// `ephemera cluster revoke`: adds to the CA's list and copies it to members.
pub fn revoke(args: RevokeArgs) -> anyhow::Result<()> {
    let ca = ClusterCa::load(&args.ca_dir)?;
    let entry = match (&args.serial, &args.controller, &args.agent) {
        (Some(serial), None, None) => {
            RevocationEntry::parse(serial).map_err(|e| anyhow::anyhow!("--serial: {e}"))?
        }
        (None, Some(id), None) => RevocationEntry::Identity(Identity::controller(*id)?),
        (None, None, Some(node)) => RevocationEntry::Identity(Identity::agent(node)?),
        _ => anyhow::bail!("name exactly one of --serial, --controller, --agent"),
    };
    ca.revoke(&entry)?;
    for dir in &args.publish {
        ca.publish_revocations(dir)?;
    }
    say!(
        "revoked {}; members refuse it once {} reaches their tls dir ({} updated now)",
        entry.line(),
        ca.revocation_path().display(),
        args.publish.len()
    );
    Ok(())
}

/// How a controller or agent protects itself: its credentials from
/// `tls_dir` (default `<data_dir>/tls`), or nothing with `--insecure`.
pub fn member_security(
    insecure: bool,
    component: &str,
    identity: Identity,
    tls_dir: Option<PathBuf>,
    data_dir: &Path,
) -> anyhow::Result<Security> {
    let dir = tls_dir.unwrap_or_else(|| data_dir.join("tls"));
    Security::from_flag(insecure, component, || Credentials::load(&dir, &identity)).with_context(
        || {
            format!(
                "loading {identity}'s credentials from {} (make them with `ephemera cluster init` \
                 and `ephemera cluster issue`, or run with --insecure)",
                dir.display()
            )
        },
    )
}
