//! Outgoing Raft RPCs: openraft's network traits over the `RaftService` gRPC
//! transport, on the controller's shared [`ChannelPool`]. Requests and
//! replies are openraft's own types as JSON; a reply
//! carries the remote's `Result`, so a remote Raft error stays a Raft error.

use ephemera_proto::raft::raft_service_client::RaftServiceClient;
use ephemera_proto::raft::RaftPayload;
use ephemera_storage::{Node, NodeId, TypeConfig};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use ephemera_trust::limits::RAFT_MAX_MESSAGE;

use crate::channels::ChannelPool;

/// Creates a [`PeerConnection`] per target node.
#[derive(Clone, Debug)]
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
        entries: u64,
        option: &RPCOption,
    ) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: DeserializeOwned + std::error::Error,
    {
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if data.len() > RAFT_MAX_MESSAGE {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries.div_ceil(2).max(1)),
            ));
        }
        let channel = self
            .pool
            .controller(&self.node.addr, self.target)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = RaftServiceClient::new(channel)
            .max_decoding_message_size(RAFT_MAX_MESSAGE)
            .max_encoding_message_size(RAFT_MAX_MESSAGE);
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
        let entries = rpc.entries.len() as u64;
        self.call("append", &rpc, entries, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call("snapshot", &rpc, 1, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<openraft::error::Infallible>> {
        self.call("vote", &rpc, 1, &option).await
    }
}
