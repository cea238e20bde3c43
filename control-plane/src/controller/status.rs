//! `status`: the nodes' aggregates from the replicated state, the
//! functions, and every live agent's instances (asked in turn, 2 s each).

use std::time::Duration;

use ephemera_proto::v1 as pb;
use ephemera_proto::v1::agent_client::AgentClient;

use super::Controller;
use crate::convert;

impl Controller {
    /// Nodes, functions and instances, as `ephemera status` shows them;
    /// instances only of `tenant` when it is not empty.
    pub async fn status(&self, tenant: &str) -> pb::StatusReply {
        let functions = self.functions(tenant);
        let (nodes, agents) = {
            let state = self.node.read_state();
            let nodes: Vec<pb::NodeStatus> =
                state.nodes.values().map(convert::node_status).collect();
            let agents: Vec<(String, String)> = state
                .nodes
                .values()
                .filter(|n| n.up)
                .map(|n| (n.node_id.clone(), n.addr.clone()))
                .collect();
            (nodes, agents)
        };
        let mut instances = Vec::new();
        for (node_id, addr) in agents {
            let Ok(channel) = self.agents.agent(&addr, &node_id) else {
                continue;
            };
            let mut call = tonic::Request::new(pb::AgentStatusRequest {});
            call.set_timeout(Duration::from_secs(2));
            match AgentClient::new(channel).status(call).await {
                Ok(reply) => instances.extend(
                    reply
                        .into_inner()
                        .instances
                        .into_iter()
                        .filter(|i| tenant.is_empty() || i.tenant == tenant),
                ),
                Err(e) => {
                    self.agents.forget_after(&addr, &e);
                    tracing::debug!(node = %node_id, error = %e, "agent status unavailable")
                }
            }
        }
        pb::StatusReply {
            nodes,
            functions,
            instances,
            leader_id: self.node.leader().map(|(id, _)| id).unwrap_or(0),
            policy: self.policy.to_string(),
        }
    }
}
