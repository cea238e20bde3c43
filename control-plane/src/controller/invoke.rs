//! One invocation: place it through Raft (`Schedule`), run it on the
//! chosen agent, release the placement (`Complete`), and record the first
//! invocation's profile when the function was deployed without one.

use std::time::{Duration, Instant};

use ephemera_domain::stages::Stages;
use ephemera_domain::{input, Reason};
use ephemera_proto::v1 as pb;
use ephemera_proto::v1::agent_client::AgentClient;
use ephemera_storage::{Command, FunctionRecord, Response};

use super::{ApiError, Controller};
use crate::convert;

use ephemera_trust::limits::AGENT_MAX_MESSAGE as AGENT_MESSAGE;

impl Controller {
    /// The span of one invocation, `invoke`, continuing the caller's trace
    /// (W3C `traceparent` in `metadata`). [`Controller::invoke`] runs under it
    /// and records the invocation id, the node and the tier's counters.
    pub fn invoke_span(
        &self,
        req: &pb::InvokeRequest,
        metadata: &tonic::metadata::MetadataMap,
    ) -> tracing::Span {
        use tracing::field::Empty;
        let span = tracing::info_span!(
            "invoke",
            tenant = %req.tenant,
            function = %req.name,
            invocation_id = Empty,
            policy = %self.policy,
            node = Empty,
            tier_reads = Empty,
            tier_writes = Empty,
            tier_bytes_read = Empty,
            tier_bytes_written = Empty,
            tier_evictions = Empty,
            error = Empty,
        );
        ephemera_telemetry::set_parent_from(&span, metadata);
        span
    }

    /// Runs one invocation: place it, run it on the chosen agent, release it.
    pub async fn invoke(&self, req: pb::InvokeRequest) -> Result<pb::InvokeReply, ApiError> {
        self.invoke_timed(req, &mut Stages::new()).await
    }

    /// [`Controller::invoke`], recording where its time went in `stages`
    /// (`lookup`, `schedule`, `agent_rpc` with the agent's own stages under
    /// `agent.`, `launcher`, `release`). The release and a first
    /// invocation's profile are queued before the reply and commit after
    /// it (`background.rs`).
    pub async fn invoke_timed(
        &self,
        req: pb::InvokeRequest,
        stages: &mut Stages,
    ) -> Result<pb::InvokeReply, ApiError> {
        let t = Instant::now();
        let input =
            input::parse(&req.input_json).map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        let function = self.function(&req.tenant, &req.name).await?;
        let invocation_id = if req.invocation_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.invocation_id.clone()
        };
        let span = tracing::Span::current();
        span.record("invocation_id", invocation_id.as_str());
        let t = stages.lap("lookup", t);
        let (node_id, addr) = self.place(&function, &invocation_id).await?;
        let t = stages.lap("schedule", t);
        span.record("node", node_id.as_str());
        tracing::debug!(%invocation_id, function = %function.key(), node = %node_id, "placed");
        let mut agent = Stages::new();
        let result = self
            .run_on(
                &function,
                &node_id,
                &addr,
                &invocation_id,
                input.to_string(),
                &mut agent,
            )
            .await;
        let t = stages.lap("agent_rpc", t);
        stages.nest("agent.", &agent);
        if let Ok(reply) = &result {
            stages.record("launcher", Duration::from_micros(reply.duration_us));
        }
        if self.inline_release {
            if let Err(e) = self.release(&invocation_id).await {
                tracing::warn!(%invocation_id, error = %e, "could not release the placement");
            }
        } else {
            self.release_later(&invocation_id).await;
        }
        let reply = result.inspect_err(|e| {
            span.record("error", tracing::field::display(e));
        })?;
        let tier = reply.tier.unwrap_or_default();
        ephemera_domain::tier::record(&span, &tier);
        if !function.profile.measured && function.profile_inputs.is_empty() {
            self.profile_from_first_invocation(&function, &tier).await;
        }
        stages.lap(
            if self.inline_release {
                "release"
            } else {
                "release_queued"
            },
            t,
        );
        Ok(pb::InvokeReply {
            invocation_id,
            node_id,
            result_json: reply.result_json,
            duration_us: reply.duration_us,
            tier: reply.tier,
            instance_id: reply.instance_id,
            launcher_pid: reply.launcher_pid,
        })
    }

    /// A deploy without profile inputs is profiled by its first
    /// invocation: what the tier measured in the instance. Committed in
    /// the background, like the release.
    async fn profile_from_first_invocation(
        &self,
        function: &FunctionRecord,
        tier: &pb::TierCounters,
    ) {
        if tier.peak_native_bytes == 0 {
            return;
        }
        let profile = ephemera_storage::Profile {
            u_max: tier.peak_native_bytes,
            f_max: tier.largest_file_bytes,
            measured: true,
        };
        let cmd = Command::SetProfile {
            tenant: function.tenant.clone(),
            name: function.name.clone(),
            profile,
        };
        let what = format!("recording {}'s first-invocation profile", function.key());
        if self.inline_release {
            if let Err(e) = self.write(cmd).await {
                tracing::warn!(error = %e, "{what}");
            }
        } else {
            self.write_later(cmd, what).await;
        }
    }

    /// Commits the placement of one invocation of `function`; returns the
    /// chosen node's id and address.
    #[tracing::instrument(
        name = "schedule",
        skip_all,
        fields(
            invocation_id = %invocation_id,
            function = %function.key(),
            policy = %self.policy,
            t_lim = function.memory_bytes,
            t_mem = function.t_mem(),
            node = tracing::field::Empty,
        )
    )]
    pub async fn place(
        &self,
        function: &FunctionRecord,
        invocation_id: &str,
    ) -> Result<(String, String), ApiError> {
        let schedule = Command::Schedule {
            invocation_id: invocation_id.to_string(),
            tenant: function.tenant.clone(),
            function: function.name.clone(),
            t_lim: function.memory_bytes,
            t_mem: function.t_mem(),
            policy: self.policy,
        };
        let mut placed = self.write(schedule.clone()).await?;
        // Refused while this controller's own releases are still committing
        // (`background.rs`): once they have, the memory or quota they held
        // may be free, so try once more.
        if matches!(
            placed,
            Response::Rejected { .. } | Response::OverQuota { .. }
        ) && self.background.busy()
        {
            self.settle().await;
            placed = self.write(schedule).await?;
        }
        match placed {
            Response::Placed { node_id, addr } => {
                tracing::Span::current().record("node", node_id.as_str());
                Ok((node_id, addr))
            }
            Response::Rejected { reason } => Err(ApiError::NoCapacity(reason)),
            Response::OverQuota { reason } => Err(ApiError::Quota(reason)),
            other => Err(ApiError::InvalidArgument(format!(
                "invocation {invocation_id} of {}: Schedule returned {other:?}, not a placement",
                function.key()
            ))),
        }
    }

    /// Commits the release of a placement (idempotent).
    pub async fn release(&self, invocation_id: &str) -> Result<(), ApiError> {
        if invocation_id.is_empty() {
            return Err(ApiError::InvalidArgument(
                "release: the invocation id is empty".into(),
            ));
        }
        match self
            .write(Command::Complete {
                invocation_id: invocation_id.to_string(),
            })
            .await?
        {
            Response::Rejected { reason } => Err(ApiError::InvalidArgument(reason)),
            _ => Ok(()),
        }
    }

    /// Runs the invocation on the agent at `addr`; sends the code along
    /// when the agent says it has none cached.
    async fn run_on(
        &self,
        function: &FunctionRecord,
        node_id: &str,
        addr: &str,
        invocation_id: &str,
        input_json: String,
        stages: &mut Stages,
    ) -> Result<pb::RunReply, ApiError> {
        let unreachable = |detail: String| ApiError::NodeUnreachable {
            what: format!("invocation {invocation_id} of {}", function.key()),
            node: node_id.to_string(),
            addr: addr.to_string(),
            detail,
        };
        let channel = self
            .agents
            .agent(addr, node_id)
            .map_err(|e| unreachable(e.to_string()))?;
        let mut client = AgentClient::new(channel)
            .max_decoding_message_size(AGENT_MESSAGE)
            .max_encoding_message_size(AGENT_MESSAGE);
        let timeout = Duration::from_millis(function.timeout_ms.max(1)) + Duration::from_secs(30);
        let mut request = pb::RunRequest {
            invocation_id: invocation_id.to_string(),
            function: Some(convert::spec_of(function)),
            input_json,
            code: Vec::new(),
        };
        for attempt in 0..2 {
            let mut call = tonic::Request::new(request.clone());
            // The agent's span continues this invocation's trace.
            ephemera_telemetry::inject_current(call.metadata_mut());
            call.set_timeout(timeout);
            Stages::ask(call.metadata_mut());
            let status = match client.run(call).await {
                Ok(reply) => {
                    *stages = Stages::from_metadata(reply.metadata());
                    return Ok(reply.into_inner());
                }
                Err(s) => s,
            };
            self.agents.forget_after(addr, &status);
            let reason = Reason::of(&status);
            if attempt == 0 && reason == Some(Reason::CodeMissing) {
                request.code = convert::code_from_records(&function.code);
                continue;
            }
            if ephemera_domain::reason::is_transport_failure(&status) {
                return Err(unreachable(status.message().to_string()));
            }
            return Err(ApiError::Agent {
                code: status.code(),
                reason,
                message: format!(
                    "invocation {invocation_id} on node {node_id}: {}",
                    status.message()
                ),
            });
        }
        Err(unreachable("agent asked for the code twice".into()))
    }
}
