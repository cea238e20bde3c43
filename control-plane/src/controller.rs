//! The controller's behaviour behind the gRPC API: deploy a function, invoke
//! it (place through Raft, run on the chosen agent, release the placement),
//! report status. The API layer (`api.rs`) only translates to and from gRPC.

use std::sync::Arc;
use std::time::Duration;

use ephemera_proto::v1 as pb;
use ephemera_proto::v1::agent_client::AgentClient;
use ephemera_proto::v1::node_registry_client::NodeRegistryClient;
use ephemera_storage::{Command, FunctionRecord, Policy, Response};
use tonic::Status;

use crate::convert;
use crate::liveness::Liveness;
use crate::raft::{ChannelPool, RaftNode, WriteError};
use ephemera_domain::{format_size, input, name};

/// Smallest memory limit a function may ask for: a Python launcher needs ~10 MiB.
pub const MIN_FUNCTION_MEMORY: u64 = 16 << 20;
/// Largest memory limit a function may ask for.
pub const MAX_FUNCTION_MEMORY: u64 = 1 << 40;
/// Largest code archive a deploy may carry (it is replicated through Raft).
pub const MAX_CODE_BYTES: u64 = 16 << 20;
/// Invocation timeout when the function sets none.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// Longest invocation timeout a function may set.
pub const MAX_TIMEOUT_MS: u64 = 15 * 60_000;
/// How long a write waits for a leader before giving up.
const WRITE_RETRY_FOR: Duration = Duration::from_secs(15);

/// Errors of the controller's API, each a gRPC status for the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// A function or node does not exist.
    #[error("{0}")]
    NotFound(String),
    /// No node can take the invocation.
    #[error("{0}")]
    NoCapacity(String),
    /// The cluster cannot commit right now.
    #[error("{0}")]
    Unavailable(String),
    /// The function ran and failed, or its agent did.
    #[error("{message}")]
    Invocation {
        /// The agent's status code.
        code: tonic::Code,
        /// What happened, naming the function and node.
        message: String,
    },
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        match e {
            ApiError::InvalidArgument(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::NoCapacity(m) => Status::resource_exhausted(m),
            ApiError::Unavailable(m) => Status::unavailable(m),
            ApiError::Invocation { code, message } => Status::new(code, message),
        }
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> ApiError {
        ApiError::Unavailable(e.to_string())
    }
}

/// The controller: a Raft member plus the logic of each API call.
#[derive(Debug)]
pub struct Controller {
    /// This controller's Raft member.
    pub node: RaftNode,
    /// Placement policy written into every `Schedule` command.
    pub policy: Policy,
    /// Channels to agents.
    agents: ChannelPool,
    /// Agents' heartbeats, tracked by the leader.
    pub liveness: Arc<Liveness>,
}

fn check_name(what: &'static str, value: &str) -> Result<(), ApiError> {
    name::check(what, value).map_err(|e| ApiError::InvalidArgument(e.to_string()))
}

fn parse_input(input: &str) -> Result<serde_json::Value, ApiError> {
    input::parse(input).map_err(|e| ApiError::InvalidArgument(e.to_string()))
}

impl Controller {
    /// A controller over `node`, placing with `policy`.
    pub fn new(
        node: RaftNode,
        policy: Policy,
        agents: ChannelPool,
        liveness: Arc<Liveness>,
    ) -> Self {
        Controller {
            node,
            policy,
            agents,
            liveness,
        }
    }

    /// Commits a command, retrying while a leader is being elected.
    pub async fn write(&self, cmd: Command) -> Result<Response, ApiError> {
        let deadline = tokio::time::Instant::now() + WRITE_RETRY_FOR;
        loop {
            match self.node.write(cmd.clone()).await {
                Ok(resp) => return Ok(resp),
                Err(e @ (WriteError::NoLeader | WriteError::Forward { .. }))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tracing::debug!(error = %e, "write not committed yet; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Registers or replaces a function.
    pub async fn deploy(
        &self,
        spec: pb::FunctionSpec,
        code: Vec<pb::CodeFile>,
    ) -> Result<pb::DeployReply, ApiError> {
        check_name("tenant", &spec.tenant)?;
        check_name("function name", &spec.name)?;
        let key = format!("{}/{}", spec.tenant, spec.name);
        if spec.cmd.trim().is_empty() {
            return Err(ApiError::InvalidArgument(format!(
                "function {key}: the launcher command is empty"
            )));
        }
        if spec.memory_bytes < MIN_FUNCTION_MEMORY || spec.memory_bytes > MAX_FUNCTION_MEMORY {
            return Err(ApiError::InvalidArgument(format!(
                "function {key}: memory {} is outside {}..={}",
                format_size(spec.memory_bytes),
                format_size(MIN_FUNCTION_MEMORY),
                format_size(MAX_FUNCTION_MEMORY)
            )));
        }
        let timeout_ms = if spec.timeout_ms == 0 {
            DEFAULT_TIMEOUT_MS
        } else {
            spec.timeout_ms
        };
        if timeout_ms > MAX_TIMEOUT_MS {
            return Err(ApiError::InvalidArgument(format!(
                "function {key}: timeout {timeout_ms} ms exceeds {MAX_TIMEOUT_MS} ms"
            )));
        }
        if code.is_empty() {
            return Err(ApiError::InvalidArgument(format!(
                "function {key}: the code directory is empty"
            )));
        }
        let code_size: u64 = code.iter().map(|f| f.data.len() as u64).sum();
        if code_size > MAX_CODE_BYTES {
            return Err(ApiError::InvalidArgument(format!(
                "function {key}: code is {}, more than the {} a deploy may carry",
                format_size(code_size),
                format_size(MAX_CODE_BYTES)
            )));
        }
        for input in &spec.profile_inputs {
            parse_input(input).map_err(|e| {
                ApiError::InvalidArgument(format!("function {key}: profile input: {e}"))
            })?;
        }
        let code_digest = ephemera_domain::code::digest(&code);
        let record = FunctionRecord {
            tenant: spec.tenant.clone(),
            name: spec.name.clone(),
            cmd: spec.cmd.clone(),
            memory_bytes: spec.memory_bytes,
            timeout_ms,
            code_digest,
            code: convert::code_to_records(code),
            profile: spec
                .profile
                .as_ref()
                .map(convert::profile_from_pb)
                .unwrap_or_default(),
            profile_inputs: spec.profile_inputs.clone(),
            workflow: spec.workflow.clone(),
        };
        if let Response::Rejected { reason } = self
            .write(Command::DeployFunction {
                function: record.clone(),
            })
            .await?
        {
            return Err(ApiError::InvalidArgument(reason));
        }
        let mut reply = pb::DeployReply {
            spec: Some(convert::spec_of(&record)),
            profile_error: String::new(),
        };
        if !record.profile_inputs.is_empty() {
            match self.profile(&record).await {
                Ok(profile) => {
                    let mut profiled = record;
                    profiled.profile = profile;
                    reply.spec = Some(convert::spec_of(&profiled));
                }
                Err(e) => reply.profile_error = e.to_string(),
            }
        }
        Ok(reply)
    }

    /// The profiler (thesis §3.4.1): trial runs of `function`, one per
    /// profile input, in parallel in `disk` mode on one agent; the maxima of
    /// peak native memory and largest file are committed as its profile.
    pub async fn profile(
        &self,
        function: &FunctionRecord,
    ) -> Result<ephemera_storage::Profile, ApiError> {
        let key = function.key();
        let (node_id, addr) = {
            let state = self.node.state.read().unwrap_or_else(|e| e.into_inner());
            state
                .nodes
                .values()
                .filter(|n| n.up)
                .max_by_key(|n| (n.headroom(), std::cmp::Reverse(n.node_id.clone())))
                .map(|n| (n.node_id.clone(), n.addr.clone()))
                .ok_or_else(|| ApiError::NoCapacity(format!("no agent is up to profile {key}")))?
        };
        let channel = self.agents.get(&addr).map_err(|e| {
            ApiError::Unavailable(format!("profiling {key}: agent {node_id} at {addr}: {e}"))
        })?;
        let mut call = tonic::Request::new(pb::ProfileRequest {
            function: Some(convert::spec_of(function)),
            code: convert::code_from_records(&function.code),
            inputs: function.profile_inputs.clone(),
        });
        call.set_timeout(
            Duration::from_millis(function.timeout_ms.max(1)) * 2 + Duration::from_secs(30),
        );
        let reply = AgentClient::new(channel)
            .max_encoding_message_size(96 << 20)
            .profile(call)
            .await
            .map_err(|s| ApiError::Invocation {
                code: s.code(),
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

    async fn set_profile(
        &self,
        function: &FunctionRecord,
        profile: ephemera_storage::Profile,
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

    /// Issues a new API token for `tenant` (creating the tenant if needed);
    /// the tenant's previous token stops working.
    pub async fn issue_token(&self, tenant: &str) -> Result<String, ApiError> {
        check_name("tenant", tenant)?;
        let token = crate::auth::new_token();
        let cmd = Command::SetTenantToken {
            tenant: tenant.to_string(),
            token_sha256: crate::auth::token_digest(&token),
        };
        match self.write(cmd).await? {
            Response::Rejected { reason } => Err(ApiError::InvalidArgument(reason)),
            _ => Ok(token),
        }
    }

    /// The stored record of a function, or a not-found error naming it.
    /// A miss is confirmed by a linearizable read, so a function deployed
    /// through another controller a moment ago is found here too.
    pub async fn function(&self, tenant: &str, name: &str) -> Result<FunctionRecord, ApiError> {
        if let Some(f) = self.lookup(tenant, name) {
            return Ok(f);
        }
        self.node.ensure_fresh(Duration::from_secs(5)).await?;
        self.lookup(tenant, name).ok_or_else(|| {
            let state = self.node.state.read().unwrap_or_else(|e| e.into_inner());
            let known: Vec<&str> = state
                .functions
                .values()
                .filter(|f| f.tenant == tenant)
                .map(|f| f.name.as_str())
                .collect();
            ApiError::NotFound(if known.is_empty() {
                format!(
                    "function {tenant}/{name} does not exist (tenant {tenant} has no functions)"
                )
            } else {
                format!(
                    "function {tenant}/{name} does not exist (tenant {tenant} has: {})",
                    known.join(", ")
                )
            })
        })
    }

    fn lookup(&self, tenant: &str, name: &str) -> Option<FunctionRecord> {
        let state = self.node.state.read().unwrap_or_else(|e| e.into_inner());
        state.function(tenant, name).cloned()
    }

    /// Every function of `tenant` (all tenants when empty).
    pub fn functions(&self, tenant: &str) -> Vec<pb::FunctionSpec> {
        let state = self.node.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .functions
            .values()
            .filter(|f| tenant.is_empty() || f.tenant == tenant)
            .map(convert::spec_of)
            .collect()
    }

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
        let input = parse_input(&req.input_json)?;
        let function = self.function(&req.tenant, &req.name).await?;
        let key = function.key();
        let invocation_id = if req.invocation_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.invocation_id.clone()
        };
        let span = tracing::Span::current();
        span.record("invocation_id", invocation_id.as_str());
        let (node_id, addr) = self.place(&function, &invocation_id).await?;
        span.record("node", node_id.as_str());
        tracing::debug!(%invocation_id, function = %key, node = %node_id, "placed");
        let result = self
            .run_on(
                &function,
                &node_id,
                &addr,
                &invocation_id,
                input.to_string(),
            )
            .await;
        if let Err(e) = self.release(&invocation_id).await {
            // The placement stays until the node is marked down or re-registers.
            tracing::warn!(%invocation_id, error = %e, "could not release the placement");
        }
        let reply = result.inspect_err(|e| {
            span.record("error", tracing::field::display(e));
        })?;
        if let Some(tier) = &reply.tier {
            span.record("tier_reads", tier.reads);
            span.record("tier_writes", tier.writes);
            span.record("tier_bytes_read", tier.bytes_read);
            span.record("tier_bytes_written", tier.bytes_written);
            span.record("tier_evictions", tier.evictions);
        }
        if !function.profile.measured && function.profile_inputs.is_empty() {
            // A deploy without profile inputs is profiled by its first
            // invocation: what the tier measured in the instance.
            let tier = reply.tier.unwrap_or_default();
            if tier.peak_native_bytes > 0 {
                let profile = ephemera_storage::Profile {
                    u_max: tier.peak_native_bytes,
                    f_max: tier.largest_file_bytes,
                    measured: true,
                };
                if let Err(e) = self.set_profile(&function, profile).await {
                    tracing::warn!(function = %key, error = %e, "could not record the first invocation's profile");
                }
            }
        }
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
        let placed = self
            .write(Command::Schedule {
                invocation_id: invocation_id.to_string(),
                tenant: function.tenant.clone(),
                function: function.name.clone(),
                t_lim: function.memory_bytes,
                t_mem: function.t_mem(),
                policy: self.policy,
            })
            .await?;
        match placed {
            Response::Placed { node_id, addr } => {
                tracing::Span::current().record("node", node_id.as_str());
                Ok((node_id, addr))
            }
            Response::Rejected { reason } => Err(ApiError::NoCapacity(reason)),
            other => Err(ApiError::Unavailable(format!(
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

    /// This controller's applied state as JSON, with its applied index.
    pub fn dump(&self) -> Result<pb::DumpReply, ApiError> {
        let state_json = {
            let state = self.node.state.read().unwrap_or_else(|e| e.into_inner());
            serde_json::to_string(&*state)
                .map_err(|e| ApiError::Unavailable(format!("cannot encode the state: {e}")))?
        };
        let metrics = self.node.raft.metrics().borrow().clone();
        Ok(pb::DumpReply {
            state_json,
            last_applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            controller_id: self.node.id,
            leader_id: metrics.current_leader.unwrap_or(0),
            snapshot_index: metrics.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: metrics.purged.map(|l| l.index).unwrap_or(0),
            term: metrics.current_term,
        })
    }

    async fn run_on(
        &self,
        function: &FunctionRecord,
        node_id: &str,
        addr: &str,
        invocation_id: &str,
        input_json: String,
    ) -> Result<pb::RunReply, ApiError> {
        let key = function.key();
        let unreachable = |e: String| {
            ApiError::Invocation {
            code: tonic::Code::Unavailable,
            message: format!("invocation {invocation_id} of {key}: agent {node_id} at {addr} is unreachable: {e}"),
        }
        };
        let channel = self
            .agents
            .get(addr)
            .map_err(|e| unreachable(e.to_string()))?;
        let mut client = AgentClient::new(channel)
            .max_decoding_message_size(96 << 20)
            .max_encoding_message_size(96 << 20);
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
            let reply = client.run(call).await;
            if let Err(s) = &reply {
                self.agents.forget_after(addr, s);
            }
            match reply {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(s)
                    if attempt == 0
                        && s.code() == tonic::Code::FailedPrecondition
                        && s.message().starts_with("code missing") =>
                {
                    request.code = convert::code_from_records(&function.code);
                }
                Err(s)
                    if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
                        && s.message().contains("transport") =>
                {
                    return Err(unreachable(s.message().to_string()));
                }
                Err(s) => {
                    return Err(ApiError::Invocation {
                        code: s.code(),
                        message: format!(
                            "invocation {invocation_id} on node {node_id}: {}",
                            s.message()
                        ),
                    })
                }
            }
        }
        Err(unreachable("agent asked for the code twice".into()))
    }

    /// Nodes, functions and instances, as `ephemera status` shows them.
    pub async fn status(&self, tenant: &str) -> pb::StatusReply {
        let functions = self.functions(tenant);
        let (nodes, agents) = {
            let state = self.node.state.read().unwrap_or_else(|e| e.into_inner());
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
            let Ok(channel) = self.agents.get(&addr) else {
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
        check_name("node id", &node_id)?;
        if memory_bytes == 0 {
            return Err(ApiError::InvalidArgument(format!(
                "node {node_id}: memory must be positive"
            )));
        }
        let stale = !resumed && {
            let state = self.node.state.read().unwrap_or_else(|e| e.into_inner());
            state
                .nodes
                .get(&node_id)
                .is_some_and(|n| !n.tasks.is_empty())
        };
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
    pub async fn heartbeat(&self, node_id: &str) -> Result<bool, ApiError> {
        if !self.node.is_leader() {
            let (leader, addr) = self
                .node
                .leader()
                .ok_or_else(|| ApiError::Unavailable("no leader is known yet".into()))?;
            let unavailable = |e: String| {
                ApiError::Unavailable(format!(
                    "forwarding the heartbeat of {node_id} to leader {leader} at {addr}: {e}"
                ))
            };
            let channel = self
                .agents
                .get(&addr)
                .map_err(|e| unavailable(e.to_string()))?;
            let mut call = tonic::Request::new(pb::HeartbeatRequest {
                node_id: node_id.to_string(),
            });
            call.set_timeout(Duration::from_secs(2));
            let reply = NodeRegistryClient::new(channel)
                .heartbeat(call)
                .await
                .map_err(|s| {
                    self.agents.forget_after(&addr, &s);
                    unavailable(s.message().to_string())
                })?;
            return Ok(reply.into_inner().known);
        }
        let up = {
            let state = self.node.state.read().unwrap_or_else(|e| e.into_inner());
            state.nodes.get(node_id).is_some_and(|n| n.up)
        };
        if up {
            self.liveness.seen(node_id);
        }
        Ok(up)
    }
}
