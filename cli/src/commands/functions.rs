//! `ephemera fn deploy|show|list`: a function's code, launcher and limits.

use anyhow::Context;
use ephemera_domain::{format_size, input, FunctionRef};
use ephemera_proto::v1 as pb;
use serde_json::json;

use crate::args::{DeployArgs, ListArgs, ShowArgs};
use crate::say;
use crate::target::{status_error, Target};

/// `ephemera fn deploy`: reads the code directory and registers the function.
pub async fn deploy(target: &Target, args: DeployArgs) -> anyhow::Result<()> {
    for i in &args.profile_input {
        input::parse(i).with_context(|| format!("--profile-input {i:?}"))?;
    }
    let code = ephemera_domain::code::read_dir(&args.dir)
        .with_context(|| format!("reading the function's code from {}", args.dir.display()))?;
    let spec = pb::FunctionSpec {
        tenant: args.tenant.clone(),
        name: args.name.clone(),
        cmd: args.cmd.clone(),
        memory_bytes: args.memory,
        timeout_ms: args.timeout.saturating_mul(1000),
        profile_inputs: args.profile_input.clone(),
        workflow: args.workflow.clone(),
        ..Default::default()
    };
    let reply = target
        .connect()
        .await?
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
        say!(
            "profiled {}/{}: peak native memory {}, largest file {}",
            spec.tenant,
            spec.name,
            format_size(p.u_max_bytes),
            format_size(p.f_max_bytes)
        );
    }
    say!(
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

/// A function as `fn show` and `status --json` print it.
pub fn spec_json(f: &pb::FunctionSpec) -> serde_json::Value {
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
pub async fn show(target: &Target, args: ShowArgs) -> anyhow::Result<()> {
    let f = FunctionRef::parse(&args.function)?;
    let info = target
        .connect()
        .await?
        .get_function(pb::GetFunctionRequest {
            tenant: f.tenant,
            name: f.name,
        })
        .await
        .map_err(|s| status_error(&format!("showing {}", args.function), s))?
        .into_inner();
    crate::output::json(&spec_json(&info.spec.unwrap_or_default()))
}

/// `ephemera fn list`.
pub async fn list(target: &Target, args: ListArgs) -> anyhow::Result<()> {
    let reply = target
        .connect()
        .await?
        .list_functions(pb::ListFunctionsRequest {
            tenant: args.tenant,
        })
        .await
        .map_err(|s| status_error("listing functions", s))?
        .into_inner();
    for f in reply.functions {
        say!(
            "{}/{}\t{}\t{}",
            f.tenant,
            f.name,
            format_size(f.memory_bytes),
            f.cmd
        );
    }
    Ok(())
}
