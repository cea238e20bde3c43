//! One module per command family; [`run`] dispatches a parsed command line.
//!
//! - [`serve`]: `dev`, `controller`, `agent` (long-running).
//! - [`functions`]: `fn deploy|show|list`.
//! - [`invoke`]: running a function once.
//! - [`status`]: nodes, functions and instances.
//! - [`admin`]: `tenant token`, `cluster add-member|remove-member`, `agent-health`.
//! - [`run`]: `run` (any command under the tier, outside a cluster).
//! - [`bench`]: `bench …`.
//! - [`trust`]: `cluster init|issue|revoke`, and each member's credentials.

mod admin;
mod bench;
mod functions;
mod invoke;
mod run;
mod serve;
mod status;
mod trust;

use crate::args::{Args, ClusterCmd, Cmd, FnCmd, TenantCmd};
use crate::target::Target;

/// Runs the command `args` names.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let target = Target::new(&args.endpoint, args.token, args.ca);
    match args.command {
        Cmd::Dev(a) => serve::dev(a).await,
        Cmd::Controller(a) => serve::controller(a).await,
        Cmd::Agent(a) => serve::agent(a).await,
        Cmd::AgentHealth(a) => admin::agent_health(a).await,
        Cmd::Cluster(ClusterCmd::Init(a)) => trust::init(a),
        Cmd::Cluster(ClusterCmd::Issue(a)) => trust::issue(a),
        Cmd::Cluster(ClusterCmd::Revoke(a)) => trust::revoke(a),
        Cmd::Cluster(ClusterCmd::AddMember(a)) => {
            admin::change_members(&target, admin::MemberChange::Add(a)).await
        }
        Cmd::Cluster(ClusterCmd::RemoveMember(a)) => {
            admin::change_members(&target, admin::MemberChange::Remove(a)).await
        }
        Cmd::Tenant(TenantCmd::Token(a)) => admin::issue_token(&target, a).await,
        Cmd::Tenant(TenantCmd::Quota(a)) => admin::set_quota(&target, a).await,
        Cmd::Fn(FnCmd::Deploy(a)) => functions::deploy(&target, a).await,
        Cmd::Fn(FnCmd::Show(a)) => functions::show(&target, a).await,
        Cmd::Fn(FnCmd::List(a)) => functions::list(&target, a).await,
        Cmd::Invoke(a) => invoke::invoke(&target, a).await,
        Cmd::Status(a) => status::status(&target, a).await,
        Cmd::Run(a) => std::process::exit(run::run(a)?),
        Cmd::Bench(b) => bench::run(b).await,
    }
}
