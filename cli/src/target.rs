//! Where client commands go and with which token, and how a failed call is
//! told to the user.

use std::path::PathBuf;

use anyhow::Context;
use ephemera_control_plane::client::{self, Client, ClientError};
use ephemera_domain::reason::is_transport_failure;

/// The endpoint used when neither `--endpoint` nor `EPHEMERA_ENDPOINT` is set.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:7100";

/// What to tell a user whose controller does not answer.
const UNREACHABLE_HINT: &str = "Is `ephemera dev` running, and is EPHEMERA_ENDPOINT right?";

/// Where client commands go, and with which token.
#[derive(Debug, Clone)]
pub struct Target {
    /// The controller endpoint.
    pub endpoint: String,
    /// `--token`/`EPHEMERA_TOKEN`; else the credentials file's token for the endpoint.
    pub token: Option<String>,
    /// `--ca`/`EPHEMERA_CA`; else the credentials file's CA for the endpoint.
    pub ca: Option<PathBuf>,
}

impl Target {
    /// A target with an explicit token and CA, or the ones saved for `endpoint`.
    pub fn new(endpoint: &str, token: Option<String>, ca: Option<PathBuf>) -> Target {
        let saved = crate::credentials::lookup(endpoint);
        let token = token
            .filter(|t| !t.trim().is_empty())
            .or_else(|| saved.as_ref().map(|s| s.token.clone()));
        let ca = ca.or_else(|| saved.and_then(|s| s.ca));
        Target {
            endpoint: endpoint.to_string(),
            token,
            ca,
        }
    }

    /// The same token and CA, another controller.
    pub fn at(&self, endpoint: String) -> Target {
        Target {
            endpoint,
            ..self.clone()
        }
    }

    /// Connects to the controller.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let ca_pem = match &self.ca {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the cluster CA {} (--ca)", path.display()))?,
            ),
            None => None,
        };
        client::connect(
            &self.endpoint,
            ca_pem.as_deref(),
            self.token.as_deref(),
            None,
        )
        .await
        .map_err(|e| match e {
            ClientError::Connect { .. } => anyhow::anyhow!("{e}. {UNREACHABLE_HINT}"),
            other => other.into(),
        })
    }
}

/// Turns a failed call's status into an error a user can act on.
pub fn status_error(what: &str, s: tonic::Status) -> anyhow::Error {
    if is_transport_failure(&s) {
        anyhow::anyhow!(
            "{what}: cannot reach the controller ({}). {UNREACHABLE_HINT}",
            s.message()
        )
    } else {
        anyhow::anyhow!("{what}: {}", s.message())
    }
}
