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
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::Api;
use crate::auth::Authenticator;
use crate::channels::ChannelPool;
use crate::controller::Controller;
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
    /// The operator's token (see `auth`); every controller of a cluster needs the same.
    pub admin_token: String,
}

impl ControllerConfig {
    /// A single-voter controller, as `ephemera dev` runs it.
    pub fn single(data_dir: PathBuf, advertise_addr: String) -> Self {
        ControllerConfig {
            id: 1,
            bootstrap: Some(BTreeMap::from([(1, advertise_addr.clone())])),
            data_dir,
            advertise_addr,
            policy: Policy::default(),
            raft: RaftSettings::default(),
            node_timeout: Duration::from_secs(10),
            admin_token: String::new(),
        }
    }
}

/// Opens the Raft member and builds the controller; does not serve yet.
pub async fn start(config: &ControllerConfig) -> anyhow::Result<Arc<Controller>> {
    if config.admin_token.is_empty() {
        anyhow::bail!("controller {}: no admin token configured", config.id);
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
    let pool = ChannelPool::default();
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
    )))
}

/// Serves `controller` on `listener` until `shutdown` resolves, then stops Raft.
pub async fn serve(
    controller: Arc<Controller>,
    admin_token: String,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let live = tokio::spawn(liveness::run(controller.clone(), stop_rx));
    let api = Api::new(controller.clone(), Authenticator::new(&admin_token));
    let raft_rpc = RaftRpc::new(controller.node.clone());
    let result = tonic::transport::Server::builder()
        .add_service(
            ControllerServer::new(api.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        )
        .add_service(NodeRegistryServer::new(api))
        .add_service(
            RaftServiceServer::new(raft_rpc)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .context("serving the controller API");
    let _ = stop_tx.send(true);
    let _ = live.await;
    controller.node.shutdown().await;
    result
}
