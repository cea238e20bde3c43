//! Incoming Raft RPCs: the `RaftService` gRPC server. Each call hands the
//! decoded request to the local openraft instance and returns its `Result`
//! as JSON. `ClientWrite` is how a follower forwards a write to the leader.

use ephemera_proto::raft::raft_service_server::RaftService;
use ephemera_proto::raft::RaftPayload;
use ephemera_storage::{Command, Raft};

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

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = serde_json::to_vec(value)
        .map_err(|e| Status::internal(format!("cannot encode raft reply: {e}")))?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftService for RaftRpc {
    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let result = self.raft.vote(decode(req)?).await;
        encode(&result)
    }

    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let result = self.raft.append_entries(decode(req)?).await;
        encode(&result)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let result = self.raft.install_snapshot(decode(req)?).await;
        encode(&result)
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
