//! `ephemera invoke`: one invocation, the root of its trace.

use anyhow::Context;
use ephemera_domain::{input, FunctionRef};
use ephemera_proto::v1 as pb;
use serde_json::json;

use crate::args::InvokeArgs;
use crate::say;
use crate::target::{status_error, Target};

/// Prints the function's result, or with `--details` the whole reply.
pub async fn invoke(target: &Target, args: InvokeArgs) -> anyhow::Result<()> {
    let f = FunctionRef::parse(&args.function)?;
    let input = args.input.as_deref().unwrap_or("{}");
    input::parse(input).with_context(|| format!("--input {input:?}"))?;
    let mut client = target.connect().await?;
    // The root of the invocation's trace; the controller continues it.
    let span = tracing::info_span!(
        "cli_invoke",
        tenant = %f.tenant,
        function = %f.name,
        invocation_id = tracing::field::Empty,
        node = tracing::field::Empty,
    );
    let mut request = tonic::Request::new(pb::InvokeRequest {
        tenant: f.tenant.clone(),
        name: f.name.clone(),
        input_json: input.to_string(),
        invocation_id: String::new(),
    });
    ephemera_telemetry::inject(&span, request.metadata_mut());
    let reply = tracing::Instrument::instrument(client.invoke(request), span.clone())
        .await
        .map_err(|s| status_error(&format!("invoking {f}"), s))?
        .into_inner();
    span.record("invocation_id", reply.invocation_id.as_str());
    span.record("node", reply.node_id.as_str());
    if !args.details {
        say!("{}", reply.result_json);
        return Ok(());
    }
    let result: serde_json::Value = serde_json::from_str(&reply.result_json)
        .unwrap_or(serde_json::Value::String(reply.result_json.clone()));
    crate::output::json(&json!({
        "result": result,
        "invocation_id": reply.invocation_id,
        "node_id": reply.node_id,
        "instance_id": reply.instance_id,
        "launcher_pid": reply.launcher_pid,
        "duration_us": reply.duration_us,
        "tier": ephemera_domain::tier::to_json(&reply.tier.unwrap_or_default()),
    }))
}
