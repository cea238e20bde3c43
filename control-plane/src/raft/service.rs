//! Incoming Raft RPCs: the `RaftService` gRPC server. Each call hands the
//! decoded request to the local openraft instance and returns its `Result`
//! as JSON. `ClientWrite` is how a follower forwards a write to the leader.
//!
//! Only controllers reach this service (`server.rs` puts a mutual-TLS
//! interceptor in front of it); a vote, an append or a snapshot must also
//! come *from* the member it claims to come from: a controller's
//! certificate cannot speak for another controller.

use ephemera_proto::raft::raft_service_server::RaftService;
use ephemera_proto::raft::RaftPayload;
use ephemera_storage::{Command, NodeId, Raft, TypeConfig};
use ephemera_trust::Peer;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use super::RaftNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

/// Serves the Raft transport for one controller.
#[derive(Clone)]
pub struct RaftRpc {
    raft: Raft,
    node: RaftNode,
}

impl RaftRpc {
    /// Serves `node`'s Raft member.
    pub fn new(node: RaftNode) -> Self {
        RaftRpc {
            raft: node.raft.clone(),
            node,
        }
    }
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("malformed raft payload: {e}")))
}

/// Decodes a request whose `vote` names its sender, and refuses it unless
/// the caller's certificate is that controller's.
fn decode_from_sender<T: DeserializeOwned>(
    req: Request<RaftPayload>,
    sender: impl Fn(&T) -> Option<NodeId>,
) -> Result<T, Status> {
    let peer = ephemera_trust::authorized_peer(&req).cloned();
    let msg: T = decode(req)?;
    match (peer, sender(&msg)) {
        (Some(Peer::Insecure), _) => Ok(msg),
        (Some(Peer::Controller(id)), Some(claimed)) if id == claimed => Ok(msg),
        (peer, claimed) => Err(Status::permission_denied(format!(
            "a Raft message from controller {claimed:?} was sent by {}",
            peer.map_or("an unauthenticated caller".to_string(), |p| p.to_string())
        ))),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = serde_json::to_vec(value)
        .map_err(|e| Status::internal(format!("cannot encode raft reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let vote: VoteRequest<NodeId> = decode_from_sender(req, |v: &VoteRequest<NodeId>| {
            v.vote.leader_id().voted_for()
        })?;
        encode(&self.raft.vote(vote).await)
    }

    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let append = decode_from_sender(req, |a: &AppendEntriesRequest<TypeConfig>| {
            a.vote.leader_id().voted_for()
        })?;
        encode(&self.raft.append_entries(append).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let snapshot = decode_from_sender(req, |s: &InstallSnapshotRequest<TypeConfig>| {
            s.vote.leader_id().voted_for()
        })?;
        encode(&self.raft.install_snapshot(snapshot).await)
    }

    async fn client_write(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let cmd: Command = decode(req)?;
        let result = match cmd {
            // A follower's batch is already one entry's worth.
            Command::Batch { .. } => self.raft.client_write(cmd).await.map(|r| r.data),
            // Single forwarded commands join the leader's own group commit.
            cmd => match self.node.write(cmd).await {
                Ok(resp) => Ok(resp),
                Err(e) => return Err(Status::unavailable(e.to_string())),
            },
        };
        encode(&result)
    }

    async fn read_index(
        &self,
        _req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let result = self.raft.ensure_linearizable().await;
        encode(&result)
    }
}
