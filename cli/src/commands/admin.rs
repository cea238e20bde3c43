//! The operator's commands: tenant tokens, the controllers' membership, and
//! an agent's health check.

use std::time::Duration;

use anyhow::Context;
use ephemera_domain::Reason;
use ephemera_proto::v1 as pb;
use ephemera_trust::{Credentials, Expect, Identity};

use crate::args::{AddMemberArgs, AgentHealthArgs, QuotaArgs, RemoveMemberArgs, TokenArgs};
use crate::say;
use crate::target::{status_error, Target};

/// `ephemera tenant token`: issues a tenant's token (admin).
pub async fn issue_token(target: &Target, args: TokenArgs) -> anyhow::Result<()> {
    let reply = target
        .connect()
        .await?
        .issue_token(pb::IssueTokenRequest {
            tenant: args.tenant.clone(),
        })
        .await
        .map_err(|s| status_error(&format!("issuing a token for tenant {}", args.tenant), s))?
        .into_inner();
    eprintln!(
        "token for tenant {} (its previous token no longer works):",
        reply.tenant
    );
    say!("{}", reply.token);
    Ok(())
}

/// `ephemera tenant quota`: what a tenant's invocations may hold at once (admin).
pub async fn set_quota(target: &Target, args: QuotaArgs) -> anyhow::Result<()> {
    target
        .connect()
        .await?
        .set_quota(pb::SetQuotaRequest {
            tenant: args.tenant.clone(),
            memory_bytes: args.memory,
            invocations: args.invocations,
        })
        .await
        .map_err(|s| status_error(&format!("setting the quota of tenant {}", args.tenant), s))?;
    say!(
        "tenant {}: at most {} in {} concurrent invocations",
        args.tenant,
        ephemera_domain::format_size(args.memory),
        args.invocations
    );
    Ok(())
}

/// A change of the controllers' membership.
#[derive(Debug)]
pub enum MemberChange {
    /// Add a controller as a voter.
    Add(AddMemberArgs),
    /// Remove a controller from the voters.
    Remove(RemoveMemberArgs),
}

/// `ephemera cluster add-member|remove-member`: sent to the endpoint, and
/// once more to the leader it names if the endpoint does not lead.
pub async fn change_members(target: &Target, change: MemberChange) -> anyhow::Result<()> {
    let mut target = target.clone();
    for _ in 0..2 {
        let mut client = target.connect().await?;
        let result = match &change {
            MemberChange::Add(a) => {
                client
                    .add_member(pb::AddMemberRequest {
                        id: a.id,
                        addr: a.addr.clone(),
                    })
                    .await
            }
            MemberChange::Remove(r) => {
                client
                    .remove_member(pb::RemoveMemberRequest { id: r.id })
                    .await
            }
        };
        match result {
            Ok(reply) => {
                let r = reply.into_inner();
                say!(
                    "voters: {:?}  learners: {:?}  leader: {}",
                    r.voters,
                    r.learners,
                    r.leader_id
                );
                return Ok(());
            }
            Err(s) => match Reason::of(&s) {
                Some(Reason::NotLeader { leader: Some(addr) }) => {
                    // The leader, reached the way this endpoint was.
                    let url = if target.endpoint.starts_with("https://") {
                        ephemera_trust::https_url(&addr)
                    } else {
                        ephemera_trust::http_url(&addr)
                    };
                    target = target.at(url)
                }
                _ => return Err(status_error("changing the controllers", s)),
            },
        }
    }
    anyhow::bail!("changing the controllers: the leader moved twice; retry")
}

/// `ephemera agent-health`: the agent answers its `Status` call. With
/// `--tls-dir` and `--node-id` the call carries the agent's own node
/// certificate (the agent admits only cluster members).
pub async fn agent_health(args: AgentHealthArgs) -> anyhow::Result<()> {
    let agent = &args.agent;
    let endpoint = match (&args.tls_dir, &args.node_id) {
        (Some(dir), Some(node)) => {
            let identity = Identity::agent(node)?;
            let creds = Credentials::load(dir, &identity)?;
            ephemera_trust::member_endpoint(&creds, agent, &Expect::Identity(identity))?
        }
        (None, None) => tonic::transport::Endpoint::from_shared(agent.clone())
            .with_context(|| format!("invalid agent endpoint {agent:?}"))?,
        _ => anyhow::bail!("--tls-dir and --node-id go together"),
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(3))
        .connect()
        .await
        .with_context(|| format!("cannot reach the agent at {agent}"))?;
    let reply = pb::agent_client::AgentClient::new(channel)
        .status(pb::AgentStatusRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("agent at {agent}: {}", s.message()))?;
    say!("ok: {} instances", reply.into_inner().instances.len());
    Ok(())
}
