//! Conversions between the wire types (`ephemera_proto::v1`) and the
//! replicated state's records (`ephemera_storage`).

use ephemera_proto::v1 as pb;
use ephemera_storage::{CodeFileRecord, FunctionRecord, NodeState, Profile};

/// A stored function as the API shows it (without its code).
pub fn spec_of(record: &FunctionRecord) -> pb::FunctionSpec {
    pb::FunctionSpec {
        tenant: record.tenant.clone(),
        name: record.name.clone(),
        cmd: record.cmd.clone(),
        memory_bytes: record.memory_bytes,
        timeout_ms: record.timeout_ms,
        code_digest: record.code_digest.clone(),
        code_size: record.code_size(),
        profile: Some(profile_to_pb(&record.profile)),
        profile_inputs: record.profile_inputs.clone(),
        workflow: record.workflow.clone(),
    }
}

/// The wire form of a profile.
pub fn profile_to_pb(p: &Profile) -> pb::Profile {
    pb::Profile {
        u_max_bytes: p.u_max,
        f_max_bytes: p.f_max,
        measured: p.measured,
    }
}

/// The stored form of a profile.
pub fn profile_from_pb(p: &pb::Profile) -> Profile {
    Profile {
        u_max: p.u_max_bytes,
        f_max: p.f_max_bytes,
        measured: p.measured,
    }
}

/// Code files as the state machine stores them.
pub fn code_to_records(files: Vec<pb::CodeFile>) -> Vec<CodeFileRecord> {
    files
        .into_iter()
        .map(|f| CodeFileRecord {
            path: f.path,
            mode: f.mode,
            data: f.data,
        })
        .collect()
}

/// Code files as the agent receives them.
pub fn code_from_records(files: &[CodeFileRecord]) -> Vec<pb::CodeFile> {
    files
        .iter()
        .map(|f| pb::CodeFile {
            path: f.path.clone(),
            mode: f.mode,
            data: f.data.clone(),
        })
        .collect()
}

/// A node's aggregates as `status` shows them.
pub fn node_status(n: &NodeState) -> pb::NodeStatus {
    pb::NodeStatus {
        node_id: n.node_id.clone(),
        addr: n.addr.clone(),
        n_lim: n.n_lim,
        n_alloc: n.n_alloc,
        n_req: n.n_req,
        active_tasks: n.tasks.len() as u64,
        up: n.up,
    }
}
