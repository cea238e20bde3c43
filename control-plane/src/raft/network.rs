//! Outgoing Raft RPCs: openraft's network traits over the `RaftService` gRPC
//! transport. Requests and replies are openraft's own types as JSON; a reply
//! carries the remote's `Result`, so a remote Raft error stays a Raft error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ephemera_proto::raft::raft_service_client::RaftServiceClient;
use ephemera_proto::raft::RaftPayload;
use ephemera_storage::{Node, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

/// Opens (and caches) one gRPC channel per peer address.
#[derive(Clone, Default)]
pub struct ChannelPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl std::fmt::Debug for ChannelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelPool").finish_non_exhaustive()
    }
}

fn url_of(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl ChannelPool {
    /// A lazily connecting channel to `addr` (`http://host:port` or `host:port`).
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let url = url_of(addr);
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = channels.get(&url) {
            return Ok(ch.clone());
        }
        let ch = Endpoint::from_shared(url.clone())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(url, ch.clone());
        Ok(ch)
    }

    /// After a call to `addr` failed with `status`: a transport failure
    /// drops the cached channel, so the next call dials anew and resolves
    /// the name again (a restarted container may come back elsewhere, and
    /// a channel stuck on a dead connection must not outlive it).
    pub fn forget_after(&self, addr: &str, status: &tonic::Status) {
        if status.code() == tonic::Code::Unavailable {
            let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            channels.remove(&url_of(addr));
        }
    }
}

/// Creates a [`PeerConnection`] per target node.
#[derive(Clone, Debug, Default)]
pub struct GrpcNetwork {
    pool: ChannelPool,
}

impl GrpcNetwork {
    /// A network sharing `pool` with the rest of the controller.
    pub fn new(pool: ChannelPool) -> Self {
        GrpcNetwork { pool }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerConnection {
            target,
            node: node.clone(),
            pool: self.pool.clone(),
        }
    }
}

/// One peer, reached through the shared channel pool.
#[derive(Debug)]
pub struct PeerConnection {
    target: NodeId,
    node: Node,
    pool: ChannelPool,
}

type RpcErr<E> = RPCError<NodeId, Node, RaftError<NodeId, E>>;

impl PeerConnection {
    async fn call<Req, Resp, E>(
        &self,
        rpc: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let channel = self
            .pool
            .get(&self.node.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let reply = match rpc {
            "vote" => client.vote(request).await,
            "append" => client.append_entries(request).await,
            _ => client.install_snapshot(request).await,
        };
        if let Err(status) = &reply {
            self.pool.forget_after(&self.node.addr, status);
        }
        let reply = reply.map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                RPCError::Unreachable(Unreachable::new(&status))
            }
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            serde_json::from_slice(&reply.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call("vote", &rpc, &option).await
    }
}
