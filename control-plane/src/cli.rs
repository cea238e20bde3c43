//! The client side of the `ephemera` CLI: deploy, invoke, show and status,
//! each one gRPC call to the controller at the endpoint.

use std::path::Path;

use crate::client::{self, Client};
use anyhow::Context;
use ephemera_proto::v1 as pb;
use serde_json::json;

use ephemera_domain::{format_size, input::parse as parse_input, FunctionRef};

/// The endpoint used when neither `--endpoint` nor `EPHEMERA_ENDPOINT` is set.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7100";

/// Turns a gRPC status into an error a user can act on.
fn status_error(what: &str, s: tonic::Status) -> anyhow::Error {
    match s.code() {
        tonic::Code::Unavailable
            if s.message().contains("transport") || s.message().contains("connect") =>
        {
            anyhow::anyhow!("{what}: cannot reach the controller ({}). Is `ephemera dev` running, and is EPHEMERA_ENDPOINT right?", s.message())
        }
        _ => anyhow::anyhow!("{what}: {}", s.message()),
    }
}

/// Where client commands go, and with which token.
#[derive(Debug, Clone)]
pub struct Target {
    /// The controller endpoint.
    pub endpoint: String,
    /// `--token`/`EPHEMERA_TOKEN`; else the credentials file's token for the endpoint.
    pub token: Option<String>,
}

impl Target {
    /// A target with an explicit token, or the saved one for `endpoint`.
    pub fn new(endpoint: &str, token: Option<String>) -> Target {
        let token = token
            .filter(|t| !t.trim().is_empty())
            .or_else(|| crate::credentials::lookup(endpoint));
        Target {
            endpoint: endpoint.to_string(),
            token,
        }
    }
}

/// Connects to the controller of `target`.
pub async fn connect(target: &Target) -> anyhow::Result<Client> {
    let endpoint = target.endpoint.as_str();
    client::connect(endpoint, target.token.as_deref(), None)
        .await
        .with_context(|| "Is `ephemera dev` running, and is EPHEMERA_ENDPOINT right?".to_string())
}

/// Splits `tenant/name`.
pub fn split_function(text: &str) -> anyhow::Result<(String, String)> {
    let f = FunctionRef::parse(text)?;
    Ok((f.tenant, f.name))
}

/// What `ephemera fn deploy` sends.
#[derive(Debug, Clone)]
pub struct DeployArgs<'a> {
    /// Tenant.
    pub tenant: &'a str,
    /// Function name.
    pub name: &'a str,
    /// Code directory.
    pub dir: &'a Path,
    /// Launcher command.
    pub cmd: &'a str,
    /// Memory limit.
    pub memory: u64,
    /// Timeout per invocation in ms (0: default).
    pub timeout_ms: u64,
    /// Inputs for the profiler's trial runs.
    pub profile_inputs: &'a [String],
    /// Workflow group.
    pub workflow: &'a str,
}

/// `ephemera fn deploy`.
pub async fn deploy(target: &Target, args: DeployArgs<'_>) -> anyhow::Result<()> {
    for input in args.profile_inputs {
        parse_input(input).map_err(|e| anyhow::anyhow!("--profile-input {input:?}: {e}"))?;
    }
    let code = ephemera_domain::code::read_dir(args.dir)
        .with_context(|| format!("reading the function's code from {}", args.dir.display()))?;
    let mut client = connect(target).await?;
    let spec = pb::FunctionSpec {
        tenant: args.tenant.to_string(),
        name: args.name.to_string(),
        cmd: args.cmd.to_string(),
        memory_bytes: args.memory,
        timeout_ms: args.timeout_ms,
        profile_inputs: args.profile_inputs.to_vec(),
        workflow: args.workflow.to_string(),
        ..Default::default()
    };
    let reply = client
        .deploy_function(pb::DeployRequest {
            spec: Some(spec),
            code,
        })
        .await
        .map_err(|s| status_error(&format!("deploying {}/{}", args.tenant, args.name), s))?
        .into_inner();
    let spec = reply.spec.unwrap_or_default();
    if !reply.profile_error.is_empty() {
        eprintln!(
            "warning: {}; the first invocation will profile it instead",
            reply.profile_error
        );
    }
    if let Some(p) = spec.profile.filter(|p| p.measured) {
        println!(
            "profiled {}/{}: peak native memory {}, largest file {}",
            spec.tenant,
            spec.name,
            format_size(p.u_max_bytes),
            format_size(p.f_max_bytes)
        );
    }
    println!(
        "deployed {}/{} (memory {}, code {} in {}, digest {})",
        spec.tenant,
        spec.name,
        format_size(spec.memory_bytes),
        format_size(spec.code_size),
        args.dir.display(),
        &spec.code_digest[..spec.code_digest.len().min(12)]
    );
    Ok(())
}

/// `ephemera invoke`: prints the result, or with `details` the whole reply.
pub async fn invoke(
    target: &Target,
    function: &str,
    input: Option<&str>,
    details: bool,
) -> anyhow::Result<()> {
    let (tenant, name) = split_function(function)?;
    let input = input.unwrap_or("{}");
    parse_input(input).map_err(|e| anyhow::anyhow!("--input {input:?}: {e}"))?;
    let mut client = connect(target).await?;
    // The root of the invocation's trace; the controller continues it.
    let span = tracing::info_span!(
        "cli_invoke",
        tenant = %tenant,
        function = %name,
        invocation_id = tracing::field::Empty,
        node = tracing::field::Empty,
    );
    let mut request = tonic::Request::new(pb::InvokeRequest {
        tenant,
        name,
        input_json: input.to_string(),
        invocation_id: String::new(),
    });
    ephemera_telemetry::inject(&span, request.metadata_mut());
    let reply = tracing::Instrument::instrument(client.invoke(request), span.clone())
        .await
        .map_err(|s| status_error(&format!("invoking {function}"), s))?
        .into_inner();
    span.record("invocation_id", reply.invocation_id.as_str());
    span.record("node", reply.node_id.as_str());
    if details {
        let result: serde_json::Value = serde_json::from_str(&reply.result_json)
            .unwrap_or(serde_json::Value::String(reply.result_json.clone()));
        let out = json!({
            "result": result,
            "invocation_id": reply.invocation_id,
            "node_id": reply.node_id,
            "instance_id": reply.instance_id,
            "launcher_pid": reply.launcher_pid,
            "duration_us": reply.duration_us,
            "tier": ephemera_domain::tier::to_json(&reply.tier.unwrap_or_default()),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}", reply.result_json);
    }
    Ok(())
}

fn spec_json(f: &pb::FunctionSpec) -> serde_json::Value {
    let p = f.profile.unwrap_or_default();
    json!({
        "tenant": f.tenant, "name": f.name, "cmd": f.cmd,
        "memory_bytes": f.memory_bytes, "timeout_ms": f.timeout_ms,
        "code_digest": f.code_digest, "code_size": f.code_size,
        "profile": {"u_max_bytes": p.u_max_bytes, "f_max_bytes": p.f_max_bytes, "measured": p.measured},
        "workflow": f.workflow,
    })
}

/// `ephemera fn show`.
pub async fn show(target: &Target, function: &str) -> anyhow::Result<()> {
    let (tenant, name) = split_function(function)?;
    let mut client = connect(target).await?;
    let info = client
        .get_function(pb::GetFunctionRequest { tenant, name })
        .await
        .map_err(|s| status_error(&format!("showing {function}"), s))?
        .into_inner();
    println!(
        "{}",
        serde_json::to_string_pretty(&spec_json(&info.spec.unwrap_or_default()))?
    );
    Ok(())
}

/// `ephemera fn list`.
pub async fn list(target: &Target, tenant: &str) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let reply = client
        .list_functions(pb::ListFunctionsRequest {
            tenant: tenant.to_string(),
        })
        .await
        .map_err(|s| status_error("listing functions", s))?
        .into_inner();
    for f in reply.functions {
        println!(
            "{}/{}\t{}\t{}",
            f.tenant,
            f.name,
            format_size(f.memory_bytes),
            f.cmd
        );
    }
    Ok(())
}

/// `ephemera tenant token`: issues a tenant's token (admin).
pub async fn issue_token(target: &Target, tenant: &str) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let reply = client
        .issue_token(pb::IssueTokenRequest {
            tenant: tenant.to_string(),
        })
        .await
        .map_err(|s| status_error(&format!("issuing a token for tenant {tenant}"), s))?
        .into_inner();
    eprintln!(
        "token for tenant {} (its previous token no longer works):",
        reply.tenant
    );
    println!("{}", reply.token);
    Ok(())
}

/// A membership change: `add` (id, address) or remove (id).
#[derive(Debug, Clone)]
pub enum MemberChange {
    /// Add controller `id` at `addr` (`host:port`).
    Add(u64, String),
    /// Remove controller `id`.
    Remove(u64),
}

/// `ephemera cluster add-member|remove-member`: sent to the endpoint, and
/// once more to the leader if the endpoint is not it.
pub async fn change_members(target: &Target, change: MemberChange) -> anyhow::Result<()> {
    let mut target = target.clone();
    for _ in 0..2 {
        let mut client = connect(&target).await?;
        let result = match &change {
            MemberChange::Add(id, addr) => {
                client
                    .add_member(pb::AddMemberRequest {
                        id: *id,
                        addr: addr.clone(),
                    })
                    .await
            }
            MemberChange::Remove(id) => {
                client
                    .remove_member(pb::RemoveMemberRequest { id: *id })
                    .await
            }
        };
        match result {
            Ok(reply) => {
                let r = reply.into_inner();
                println!(
                    "voters: {:?}  learners: {:?}  leader: {}",
                    r.voters, r.learners, r.leader_id
                );
                return Ok(());
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                let Some(addr) = s
                    .message()
                    .rsplit("the leader is at ")
                    .next()
                    .filter(|a| *a != s.message())
                else {
                    return Err(status_error("changing the controllers", s));
                };
                target = Target {
                    endpoint: format!("http://{addr}"),
                    token: target.token.clone(),
                };
            }
            Err(s) => return Err(status_error("changing the controllers", s)),
        }
    }
    anyhow::bail!("changing the controllers: the leader moved twice; retry")
}

/// `ephemera agent-health`: the agent answers its `Status` call.
pub async fn agent_health(agent: &str) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(agent.to_string())
        .with_context(|| format!("invalid agent endpoint {agent:?}"))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .timeout(std::time::Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("cannot reach the agent at {agent}"))?;
    let reply = ephemera_proto::v1::agent_client::AgentClient::new(channel)
        .status(pb::AgentStatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("agent at {agent}: {}", s.message()))?;
    println!("ok: {} instances", reply.into_inner().instances.len());
    Ok(())
}

/// `ephemera status`.
pub async fn status(target: &Target, tenant: &str, as_json: bool) -> anyhow::Result<()> {
    let mut client = connect(target).await?;
    let s = client
        .status(pb::StatusRequest {
            tenant: tenant.to_string(),
        })
        .await
        .map_err(|s| status_error("reading status", s))?
        .into_inner();
    if as_json {
        let out = json!({
            "leader_id": s.leader_id,
            "policy": s.policy,
            "nodes": s.nodes.iter().map(|n| json!({
                "node_id": n.node_id, "addr": n.addr, "up": n.up,
                "n_lim": n.n_lim, "n_alloc": n.n_alloc, "n_req": n.n_req, "active_tasks": n.active_tasks,
            })).collect::<Vec<_>>(),
            "functions": s.functions.iter().map(spec_json).collect::<Vec<_>>(),
            "instances": s.instances.iter().map(|i| json!({
                "instance_id": i.instance_id, "node_id": i.node_id, "tenant": i.tenant,
                "function": i.function, "limit_bytes": i.limit_bytes,
                "initial_limit_bytes": i.initial_limit_bytes, "launcher_pid": i.launcher_pid,
                "invocations": i.invocations, "state": i.state,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("leader: controller {}   policy: {}", s.leader_id, s.policy);
    println!(
        "\n{:<12} {:<4} {:>10} {:>10} {:>10} {:>6}  ADDR",
        "NODE", "UP", "N_LIM", "N_ALLOC", "N_REQ", "TASKS"
    );
    for n in &s.nodes {
        println!(
            "{:<12} {:<4} {:>10} {:>10} {:>10} {:>6}  {}",
            n.node_id,
            if n.up { "yes" } else { "no" },
            format_size(n.n_lim),
            format_size(n.n_alloc),
            format_size(n.n_req),
            n.active_tasks,
            n.addr
        );
    }
    println!(
        "\n{:<28} {:>10} {:>22}  CMD",
        "FUNCTION", "MEMORY", "PROFILE U_max/F_max"
    );
    for f in &s.functions {
        let p = f.profile.unwrap_or_default();
        let profile = if p.measured {
            format!(
                "{}/{}",
                format_size(p.u_max_bytes),
                format_size(p.f_max_bytes)
            )
        } else {
            "not measured".to_string()
        };
        println!(
            "{:<28} {:>10} {:>22}  {}",
            format!("{}/{}", f.tenant, f.name),
            format_size(f.memory_bytes),
            profile,
            f.cmd
        );
    }
    println!(
        "\n{:<14} {:<10} {:<24} {:>10} {:>10} {:>8} {:>6}  STATE",
        "INSTANCE", "NODE", "FUNCTION", "LIMIT", "INITIAL", "PID", "CALLS"
    );
    for i in &s.instances {
        println!(
            "{:<14} {:<10} {:<24} {:>10} {:>10} {:>8} {:>6}  {}",
            &i.instance_id[..i.instance_id.len().min(14)],
            i.node_id,
            format!("{}/{}", i.tenant, i.function),
            format_size(i.limit_bytes),
            format_size(i.initial_limit_bytes),
            i.launcher_pid,
            i.invocations,
            i.state
        );
    }
    Ok(())
}
