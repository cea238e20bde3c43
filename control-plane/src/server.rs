//! Running a controller: open its Raft member, bootstrap the cluster if asked,
//! and serve the client API, the node registry and the Raft transport on one
//! listener until shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ephemera_proto::raft::raft_service_server::RaftServiceServer;
use ephemera_proto::v1::controller_server::ControllerServer;
use ephemera_proto::v1::node_registry_server::NodeRegistryServer;
use ephemera_storage::{NodeId, Policy};
use ephemera_trust::{limits, Role, Security};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;

use crate::api::Api;
use crate::auth::Authenticator;
use crate::channels::ChannelPool;
use crate::controller::Controller;
use crate::leases::Leases;
use crate::liveness::{self, Liveness};
use crate::raft::{RaftNode, RaftRpc, RaftSettings};

/// Everything a controller needs to start.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Raft member id (non-zero).
    pub id: NodeId,
    /// Where the Raft log and state machine live.
    pub data_dir: PathBuf,
    /// The address peers and agents use to reach this controller (`host:port`).
    pub advertise_addr: String,
    /// Members to bootstrap with (id → address), or none to join an existing
    /// cluster. Bootstrapping a store that already holds a cluster is a no-op.
    pub bootstrap: Option<BTreeMap<NodeId, String>>,
    /// Placement policy.
    pub policy: Policy,
    /// Raft timings.
    pub raft: RaftSettings,
    /// Silence after which an agent is marked down.
    pub node_timeout: Duration,
    /// How long a placement lives without an agent vouching for it.
    pub lease: Duration,
    /// The operator's token (see `auth`); every controller of a cluster needs the same.
    pub admin_token: String,
    /// This controller's certificate and the cluster CA (mutual TLS for
    /// Raft, the registry and the agents; TLS for clients), or `--insecure`.
    pub security: Security,
}

impl ControllerConfig {
    /// A single-voter controller, as `ephemera dev` runs it.
    pub fn single(data_dir: PathBuf, advertise_addr: String, security: Security) -> Self {
        ControllerConfig {
            id: 1,
            bootstrap: Some(BTreeMap::from([(1, advertise_addr.clone())])),
            data_dir,
            advertise_addr,
            policy: Policy::default(),
            raft: RaftSettings::default(),
            node_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            admin_token: String::new(),
            security,
        }
    }
}

/// Opens the Raft member and builds the controller; does not serve yet.
pub async fn start(config: &ControllerConfig) -> anyhow::Result<Arc<Controller>> {
    if config.admin_token.is_empty() {
        anyhow::bail!("controller {}: no admin token configured", config.id);
    }
    // The Raft log holds every tenant's token digest and code: owner only.
    ephemera_sys::process::ensure_dir_mode(&config.data_dir, 0o700)
        .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let pool = ChannelPool::new(config.security.clone());
    let node = RaftNode::start(
        config.id,
        &config.data_dir.join("raft"),
        &config.raft,
        pool.clone(),
    )
    .await?;
    if let Some(members) = &config.bootstrap {
        node.initialize(members.clone()).await?;
    }
    let liveness = Arc::new(Liveness::new(config.node_timeout));
    Ok(Arc::new(Controller::new(
        node,
        config.policy,
        pool,
        liveness,
        Arc::new(Leases::new(config.lease)),
    )))
}

/// Serves `controller` on `listener` until `shutdown` resolves, then stops Raft.
///
/// One listener, four zones: the client API (bearer tokens, over TLS), the
/// node registry (agents only, each for its own node id), and the Raft
/// transport (controllers only); the fourth, controller → agent, is dialed
/// from here. Every zone has its message-size bound.
pub async fn serve(
    controller: Arc<Controller>,
    admin_token: String,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let security = controller.security().clone();
    let verifier = security.verifier();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let live = tokio::spawn(liveness::run(controller.clone(), stop_rx));
    let api = Api::new(
        controller.clone(),
        Authenticator::new(&admin_token),
        verifier.clone(),
    );
    let raft = InterceptedService::new(
        RaftServiceServer::new(RaftRpc::new(controller.node.clone()))
            .max_decoding_message_size(limits::RAFT_MAX_MESSAGE)
            .max_encoding_message_size(limits::RAFT_MAX_MESSAGE),
        verifier.require_member(Role::Controller),
    );
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = security.server_tls() {
        builder = builder
            .tls_config(tls)
            .context("configuring the controller's TLS")?;
    }
    let result = builder
        .add_service(
            ControllerServer::new(api.clone())
                .max_decoding_message_size(limits::CLIENT_API_MAX_MESSAGE)
                .max_encoding_message_size(limits::CLIENT_API_MAX_MESSAGE),
        )
        .add_service(
            NodeRegistryServer::new(api)
                .max_decoding_message_size(limits::REGISTRY_MAX_MESSAGE)
                .max_encoding_message_size(limits::REGISTRY_MAX_MESSAGE),
        )
        .add_service(raft)
        .serve_with_incoming_shutdown(ephemera_sys::net::nodelay_incoming(listener), shutdown)
        .await
        .context("serving the controller API");
    let _ = stop_tx.send(true);
    let _ = live.await;
    controller.node.shutdown().await;
    result
}
