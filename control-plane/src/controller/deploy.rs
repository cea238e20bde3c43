//! Deploying a function: every field checked with a message naming it,
//! then one `DeployFunction` command; with profile inputs, the profiler
//! runs before the reply.

use ephemera_domain::{format_size, input, name};
use ephemera_proto::v1 as pb;
use ephemera_storage::{Command, FunctionRecord, Response};

use super::{ApiError, Controller};
use crate::convert;

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
/// Most profile inputs one deploy may carry: each is a trial instance.
pub const MAX_PROFILE_INPUTS: usize = 8;

/// The stored record of a deploy request, or why it is refused.
fn record_of(spec: &pb::FunctionSpec, code: Vec<pb::CodeFile>) -> Result<FunctionRecord, ApiError> {
    name::check("tenant", &spec.tenant)?;
    name::check("function name", &spec.name)?;
    let key = format!("{}/{}", spec.tenant, spec.name);
    let invalid = |what: String| ApiError::InvalidArgument(format!("function {key}: {what}"));
    if spec.cmd.trim().is_empty() {
        return Err(invalid("the launcher command is empty".into()));
    }
    if spec.memory_bytes < MIN_FUNCTION_MEMORY || spec.memory_bytes > MAX_FUNCTION_MEMORY {
        return Err(invalid(format!(
            "memory {} is outside {}..={}",
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
        return Err(invalid(format!(
            "timeout {timeout_ms} ms exceeds {MAX_TIMEOUT_MS} ms"
        )));
    }
    if code.is_empty() {
        return Err(invalid("the code directory is empty".into()));
    }
    let code_size = ephemera_domain::code::size(&code);
    if code_size > MAX_CODE_BYTES {
        return Err(invalid(format!(
            "code is {}, more than the {} a deploy may carry",
            format_size(code_size),
            format_size(MAX_CODE_BYTES)
        )));
    }
    if spec.profile_inputs.len() > MAX_PROFILE_INPUTS {
        return Err(invalid(format!(
            "{} profile inputs; at most {MAX_PROFILE_INPUTS} (each is a trial instance)",
            spec.profile_inputs.len()
        )));
    }
    for i in &spec.profile_inputs {
        input::parse(i).map_err(|e| invalid(format!("profile input: {e}")))?;
    }
    Ok(FunctionRecord {
        tenant: spec.tenant.clone(),
        name: spec.name.clone(),
        cmd: spec.cmd.clone(),
        memory_bytes: spec.memory_bytes,
        timeout_ms,
        code_digest: ephemera_domain::code::digest(&code),
        code: convert::code_to_records(code),
        profile: spec
            .profile
            .as_ref()
            .map(convert::profile_from_pb)
            .unwrap_or_default(),
        profile_inputs: spec.profile_inputs.clone(),
        workflow: spec.workflow.clone(),
    })
}

impl Controller {
    /// Registers or replaces a function.
    pub async fn deploy(
        &self,
        spec: pb::FunctionSpec,
        code: Vec<pb::CodeFile>,
    ) -> Result<pb::DeployReply, ApiError> {
        let record = record_of(&spec, code)?;
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
}
