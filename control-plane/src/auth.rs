//! Who is calling. Every client call carries `authorization: Bearer TOKEN`.
//! The operator's admin token (configured on each controller) may act for any
//! tenant; a tenant's token (issued by the admin, replicated as its SHA-256)
//! may act only for its own tenant. Agents' and peers' services are internal
//! and carry no tenant token.

use std::path::Path;

use anyhow::Context;
use ephemera_storage::ClusterState;
use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::Status;

/// Environment variable holding the admin token of a controller.
pub const ADMIN_TOKEN_ENV: &str = "EPHEMERA_ADMIN_TOKEN";

/// The caller of an API method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator: any tenant, and cluster-wide calls.
    Admin,
    /// One tenant.
    Tenant(String),
}

impl Principal {
    /// Refuses unless the caller may act for `tenant`.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), Status> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant(t) if t == tenant => Ok(()),
            Principal::Tenant(t) => Err(Status::permission_denied(format!(
                "the token of tenant {t} cannot act for tenant {tenant}"
            ))),
        }
    }

    /// Refuses unless the caller is the admin.
    pub fn check_admin(&self, what: &str) -> Result<(), Status> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant(t) => Err(Status::permission_denied(format!(
                "{what} needs the admin token; the token of tenant {t} cannot"
            ))),
        }
    }

    /// The tenant a listing is limited to: a tenant sees only itself.
    pub fn scope(&self, requested: &str) -> Result<String, Status> {
        match self {
            Principal::Admin => Ok(requested.to_string()),
            Principal::Tenant(t) => {
                self.check_tenant(if requested.is_empty() { t } else { requested })?;
                Ok(t.clone())
            }
        }
    }
}

/// Hex SHA-256 of a token: what the replicated state keeps.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token.
pub fn new_token() -> String {
    format!(
        "eph_{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

/// The admin token of a controller: `EPHEMERA_ADMIN_TOKEN` if set, else the
/// file `admin-token` in its data dir, created (mode 0600) on first start.
pub fn admin_token(data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(t) = std::env::var(ADMIN_TOKEN_ENV) {
        if t.trim().is_empty() {
            anyhow::bail!("{ADMIN_TOKEN_ENV} is set but empty");
        }
        return Ok(t.trim().to_string());
    }
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::create_dir_all(data_dir)
                .with_context(|| format!("creating {}", data_dir.display()))?;
            let token = new_token();
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("writing the admin token to {}", path.display()))?;
            writeln!(f, "{token}").with_context(|| format!("writing {}", path.display()))?;
            Ok(token)
        }
    }
}

/// Resolves the caller of a request from its `authorization` metadata.
#[derive(Debug, Clone)]
pub struct Authenticator {
    admin_sha256: String,
}

impl Authenticator {
    /// Accepts `admin_token` as the admin.
    pub fn new(admin_token: &str) -> Self {
        Authenticator {
            admin_sha256: token_digest(admin_token),
        }
    }

    /// The caller, or `UNAUTHENTICATED` for a missing or unknown token.
    pub fn principal(
        &self,
        metadata: &MetadataMap,
        state: &ClusterState,
    ) -> Result<Principal, Status> {
        let value = metadata.get("authorization").ok_or_else(|| {
            Status::unauthenticated(
                "missing token: set EPHEMERA_TOKEN (or --token) to a tenant or admin token",
            )
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("malformed authorization: expected `Bearer TOKEN`")
            })?;
        let digest = token_digest(token);
        if digest == self.admin_sha256 {
            return Ok(Principal::Admin);
        }
        state
            .tenant_of_token(&digest)
            .map(|t| Principal::Tenant(t.to_string()))
            .ok_or_else(|| Status::unauthenticated("invalid token: it belongs to no tenant"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ephemera_storage::Command;

    fn with_token(token: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", format!("Bearer {token}").parse().unwrap());
        m
    }

    #[test]
    fn resolves_admin_tenant_and_refuses_the_rest() {
        let auth = Authenticator::new("root-secret");
        let mut state = ClusterState::default();
        let tok = new_token();
        let r = state.apply(&Command::SetTenantToken {
            tenant: "acme".into(),
            token_sha256: token_digest(&tok),
        });
        assert!(r.is_accepted());
        assert_eq!(
            auth.principal(&with_token("root-secret"), &state).unwrap(),
            Principal::Admin
        );
        let acme = auth.principal(&with_token(&tok), &state).unwrap();
        assert_eq!(acme, Principal::Tenant("acme".into()));
        assert!(acme.check_tenant("acme").is_ok());
        let e = acme.check_tenant("globex").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().contains("acme") && e.message().contains("globex"));
        assert!(acme.check_admin("dump").is_err());
        assert_eq!(acme.scope("").unwrap(), "acme");
        assert!(acme.scope("globex").is_err());
        let e = auth.principal(&with_token("guess"), &state).unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = auth.principal(&MetadataMap::new(), &state).unwrap_err();
        assert!(e.message().contains("missing token"));
    }
}
