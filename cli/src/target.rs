//! Where client commands go and with which token, and how a failed call is
//! told to the user.

use anyhow::Context;
use ephemera_control_plane::client::{self, Client};
use ephemera_domain::reason::is_transport_failure;

/// The endpoint used when neither `--endpoint` nor `EPHEMERA_ENDPOINT` is set.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7100";

/// What to tell a user whose controller does not answer.
const UNREACHABLE_HINT: &str = "Is `ephemera dev` running, and is EPHEMERA_ENDPOINT right?";

/// Where client commands go, and with which token.
#[derive(Debug, Clone)]
pub struct Target {
    /// The controller endpoint.
    pub endpoint: String,
    /// `--token`/`EPHEMERA_TOKEN`; else the credentials file's token for the endpoint.
    pub token: Option<String>,
}

impl Target {
    /// A target with an explicit token, or the saved one for `endpoint`.
    pub fn new(endpoint: &str, token: Option<String>) -> Target {
        let token = token
            .filter(|t| !t.trim().is_empty())
            .or_else(|| crate::credentials::lookup(endpoint));
        Target {
            endpoint: endpoint.to_string(),
            token,
        }
    }

    /// The same token, another controller.
    pub fn at(&self, endpoint: String) -> Target {
        Target {
            endpoint,
            token: self.token.clone(),
        }
    }

    /// Connects to the controller.
    pub async fn connect(&self) -> anyhow::Result<Client> {
        client::connect(&self.endpoint, self.token.as_deref(), None)
            .await
            .context(UNREACHABLE_HINT)
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
