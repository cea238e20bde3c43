//! The client side of the controller API, for the CLI, the benches and the
//! tests: a channel to one controller and a `Controller` client that sends
//! a bearer token with every call.

use std::time::Duration;

use ephemera_proto::v1::controller_client::ControllerClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// Largest message a client sends or accepts (a deploy carries code).
pub const MAX_MESSAGE: usize = 64 << 20;

/// A controller client that sends its token with every call.
pub type Client = ControllerClient<InterceptedService<Channel, BearerToken>>;

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The endpoint is not a URL tonic accepts.
    #[error("invalid endpoint {endpoint:?}: {source}")]
    Endpoint {
        /// As given.
        endpoint: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// Nobody answered at the endpoint.
    #[error("cannot reach the controller at {endpoint}: {source}")]
    Connect {
        /// As given.
        endpoint: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// The token cannot travel in an HTTP header.
    #[error("the token holds characters that cannot be sent")]
    Token,
    /// An `https://` endpoint, and no CA to check its certificate against.
    #[error("{endpoint} serves TLS: give the cluster CA (--ca or EPHEMERA_CA)")]
    NoCa {
        /// As given.
        endpoint: String,
    },
    /// The CA or the TLS settings are unusable.
    #[error("TLS to {endpoint}: {source}")]
    Tls {
        /// As given.
        endpoint: String,
        /// Why.
        source: ephemera_trust::TrustError,
    },
}

/// Adds `authorization: Bearer TOKEN` to every request (nothing without a token).
#[derive(Debug, Clone)]
pub struct BearerToken(Option<AsciiMetadataValue>);

impl BearerToken {
    /// Sends `token`, or nothing when `None`.
    pub fn new(token: Option<&str>) -> Result<BearerToken, ClientError> {
        token
            .map(|t| {
                format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| ClientError::Token)
            })
            .transpose()
            .map(BearerToken)
    }
}

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// Connects to the controller at `endpoint`; `timeout` bounds each call.
/// An `https://` endpoint needs `ca_pem`, the cluster CA the controller's
/// certificate must chain to; an `http://` one is plain text (a controller
/// started with `--insecure`).
pub async fn connect_channel(
    endpoint: &str,
    ca_pem: Option<&str>,
    timeout: Option<Duration>,
) -> Result<Channel, ClientError> {
    let e = if endpoint.starts_with("https://") {
        let ca = ca_pem.ok_or_else(|| ClientError::NoCa {
            endpoint: endpoint.to_string(),
        })?;
        ephemera_trust::anonymous_endpoint(ca, endpoint, &ephemera_trust::Expect::ClientApi)
            .map_err(|source| ClientError::Tls {
                endpoint: endpoint.to_string(),
                source,
            })?
    } else {
        Endpoint::from_shared(endpoint.to_string()).map_err(|source| ClientError::Endpoint {
            endpoint: endpoint.to_string(),
            source,
        })?
    };
    let mut e = e.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true);
    if let Some(t) = timeout {
        e = e.timeout(t);
    }
    e.connect().await.map_err(|source| ClientError::Connect {
        endpoint: endpoint.to_string(),
        source,
    })
}

/// A client over `channel` sending `token`.
pub fn with_token(channel: Channel, token: Option<&str>) -> Result<Client, ClientError> {
    Ok(
        ControllerClient::with_interceptor(channel, BearerToken::new(token)?)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
    )
}

/// Connects to the controller at `endpoint` (trusting `ca_pem` for
/// `https://`) with `token`.
pub async fn connect(
    endpoint: &str,
    ca_pem: Option<&str>,
    token: Option<&str>,
    timeout: Option<Duration>,
) -> Result<Client, ClientError> {
    with_token(connect_channel(endpoint, ca_pem, timeout).await?, token)
}
