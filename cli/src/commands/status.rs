//! `ephemera status`: nodes (N_lim/N_alloc/N_req), functions and instances.

use ephemera_domain::format_size;
use ephemera_proto::v1 as pb;
use serde_json::json;

use super::functions::spec_json;
use crate::args::StatusArgs;
use crate::say;
use crate::target::{status_error, Target};

/// `ephemera status`.
pub async fn status(target: &Target, args: StatusArgs) -> anyhow::Result<()> {
    let s = target
        .connect()
        .await?
        .status(pb::StatusRequest {
            tenant: args.tenant,
        })
        .await
        .map_err(|s| status_error("reading status", s))?
        .into_inner();
    if args.json {
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
        return crate::output::json(&out);
    }
    say!("leader: controller {}   policy: {}", s.leader_id, s.policy);
    say!(
        "\n{:<12} {:<4} {:>10} {:>10} {:>10} {:>6}  ADDR",
        "NODE",
        "UP",
        "N_LIM",
        "N_ALLOC",
        "N_REQ",
        "TASKS"
    );
    for n in &s.nodes {
        say!(
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
    say!(
        "\n{:<28} {:>10} {:>22}  CMD",
        "FUNCTION",
        "MEMORY",
        "PROFILE U_max/F_max"
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
        say!(
            "{:<28} {:>10} {:>22}  {}",
            format!("{}/{}", f.tenant, f.name),
            format_size(f.memory_bytes),
            profile,
            f.cmd
        );
    }
    say!(
        "\n{:<14} {:<10} {:<24} {:>10} {:>10} {:>8} {:>6}  STATE",
        "INSTANCE",
        "NODE",
        "FUNCTION",
        "LIMIT",
        "INITIAL",
        "PID",
        "CALLS"
    );
    for i in &s.instances {
        say!(
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
