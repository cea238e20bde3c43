//! The profiler (thesis §3.4.1): trial runs of a function, one per profile
//! input, in parallel in `disk` mode on one agent; the maxima of peak
//! native memory and largest file are committed as its profile.

use std::time::Duration;

use ephemera_proto::v1 as pb;
use ephemera_proto::v1::agent_client::AgentClient;
use ephemera_storage::{Command, FunctionRecord, Profile, Response};

use super::{ApiError, Controller};
use crate::convert;

impl Controller {
    /// Profiles `function` on the agent with the most headroom and commits
    /// the result.
    pub async fn profile(&self, function: &FunctionRecord) -> Result<Profile, ApiError> {
        let key = function.key();
        let (node_id, addr) = self
            .node
            .read_state()
            .nodes
            .values()
            .filter(|n| n.up)
            .max_by_key(|n| (n.headroom(), std::cmp::Reverse(n.node_id.clone())))
            .map(|n| (n.node_id.clone(), n.addr.clone()))
            .ok_or_else(|| ApiError::NoCapacity(format!("no agent is up to profile {key}")))?;
        let unreachable = |detail: String| ApiError::NodeUnreachable {
            what: format!("profiling {key}"),
            node: node_id.clone(),
            addr: addr.clone(),
            detail,
        };
        let channel = self
            .agents
            .agent(&addr, &node_id)
            .map_err(|e| unreachable(e.to_string()))?;
        let mut call = tonic::Request::new(pb::ProfileRequest {
            function: Some(convert::spec_of(function)),
            code: convert::code_from_records(&function.code),
            inputs: function.profile_inputs.clone(),
        });
        call.set_timeout(
            Duration::from_millis(function.timeout_ms.max(1)) * 2 + Duration::from_secs(30),
        );
        let reply = AgentClient::new(channel)
            .max_encoding_message_size(ephemera_trust::limits::AGENT_MAX_MESSAGE)
            .profile(call)
            .await
            .map_err(|s| ApiError::Agent {
                code: s.code(),
                reason: ephemera_domain::Reason::of(&s),
                message: format!("profiling {key} on node {node_id}: {}", s.message()),
            })?
            .into_inner();
        let profile = reply
            .profile
            .map(|p| convert::profile_from_pb(&p))
            .unwrap_or_default();
        self.set_profile(function, profile).await?;
        Ok(profile)
    }

    /// Commits `profile` as `function`'s.
    pub(super) async fn set_profile(
        &self,
        function: &FunctionRecord,
        profile: Profile,
    ) -> Result<(), ApiError> {
        let cmd = Command::SetProfile {
            tenant: function.tenant.clone(),
            name: function.name.clone(),
            profile,
        };
        match self.write(cmd).await? {
            Response::Rejected { reason } => Err(ApiError::NotFound(reason)),
            _ => Ok(()),
        }
    }
}
