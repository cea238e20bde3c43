//! The operator's commands: tenant tokens, the controllers' membership, and
//! an agent's health check.

use std::time::Duration;

use anyhow::Context;
use ephemera_domain::Reason;
use ephemera_proto::v1 as pb;

use crate::args::{AgentHealthArgs, ClusterCmd, TokenArgs};
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

/// `ephemera cluster add-member|remove-member`: sent to the endpoint, and
/// once more to the leader it names if the endpoint does not lead.
pub async fn change_members(target: &Target, change: ClusterCmd) -> anyhow::Result<()> {
    let mut target = target.clone();
    for _ in 0..2 {
        let mut client = target.connect().await?;
        let result = match &change {
            ClusterCmd::AddMember(a) => {
                client
                    .add_member(pb::AddMemberRequest {
                        id: a.id,
                        addr: a.addr.clone(),
                    })
                    .await
            }
            ClusterCmd::RemoveMember(r) => {
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
                    target = target.at(format!("http://{addr}"))
                }
                _ => return Err(status_error("changing the controllers", s)),
            },
        }
    }
    anyhow::bail!("changing the controllers: the leader moved twice; retry")
}

/// `ephemera agent-health`: the agent answers its `Status` call.
pub async fn agent_health(args: AgentHealthArgs) -> anyhow::Result<()> {
    let agent = &args.agent;
    let channel = tonic::transport::Endpoint::from_shared(agent.clone())
        .with_context(|| format!("invalid agent endpoint {agent:?}"))?
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
