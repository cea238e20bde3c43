//! Agents joining and staying alive: registration (with the node's memory,
//! N_lim) and heartbeats, which the leader tracks (`liveness`).

use std::time::Duration;

use ephemera_proto::v1 as pb;
use ephemera_proto::v1::node_registry_client::NodeRegistryClient;
use ephemera_storage::{Command, Response};

use super::{ApiError, Controller};

impl Controller {
    /// An agent joins, or rejoins: after a restart (`resumed` false) its old
    /// placements are released; after losing its controller (`resumed`
    /// true) they are still running and are kept.
    pub async fn register_node(
        &self,
        node_id: String,
        addr: String,
        memory_bytes: u64,
        resumed: bool,
    ) -> Result<(), ApiError> {
        ephemera_domain::name::check("node id", &node_id)?;
        if memory_bytes == 0 {
            return Err(ApiError::InvalidArgument(format!(
                "node {node_id}: memory must be positive"
            )));
        }
        let stale = !resumed
            && self
                .node
                .read_state()
                .nodes
                .get(&node_id)
                .is_some_and(|n| !n.tasks.is_empty());
        if stale {
            self.write(Command::SetNodeUp {
                node_id: node_id.clone(),
                up: false,
            })
            .await?;
        }
        match self
            .write(Command::RegisterNode {
                node_id: node_id.clone(),
                addr,
                memory_bytes,
            })
            .await?
        {
            Response::Rejected { reason } => Err(ApiError::InvalidArgument(reason)),
            _ => {
                self.liveness.seen(&node_id);
                Ok(())
            }
        }
    }

    /// An agent's heartbeat; `false` asks it to register again. Liveness is
    /// tracked by the leader, so a follower forwards the heartbeat there and
    /// an agent may talk to any controller.
    pub async fn heartbeat(&self, node_id: &str, running: Vec<String>) -> Result<bool, ApiError> {
        if !self.node.is_leader() {
            return self.forward_heartbeat(node_id, running).await;
        }
        let state = self.node.read_state();
        let up = state.nodes.get(node_id).is_some_and(|n| n.up);
        if up {
            self.liveness.seen(node_id);
            self.leases.renew(&state, node_id, &running);
        }
        Ok(up)
    }

    async fn forward_heartbeat(
        &self,
        node_id: &str,
        running: Vec<String>,
    ) -> Result<bool, ApiError> {
        let (leader, addr) = self
            .node
            .leader()
            .ok_or(ApiError::Write(crate::raft::WriteError::NoLeader))?;
        let unavailable = |reason: String| {
            ApiError::Write(crate::raft::WriteError::Forward {
                leader,
                addr: addr.clone(),
                reason: format!("forwarding the heartbeat of {node_id}: {reason}"),
            })
        };
        let channel = self
            .agents
            .controller(&addr, leader)
            .map_err(|e| unavailable(e.to_string()))?;
        let mut call = tonic::Request::new(pb::HeartbeatRequest {
            node_id: node_id.to_string(),
            running,
        });
        call.set_timeout(Duration::from_secs(2));
        let reply = NodeRegistryClient::new(channel)
            .heartbeat(call)
            .await
            .map_err(|s| {
                self.agents.forget_after(&addr, &s);
                unavailable(s.message().to_string())
            })?;
        Ok(reply.into_inner().known)
    }
}
