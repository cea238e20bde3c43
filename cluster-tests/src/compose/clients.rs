//! gRPC clients of the cluster's controllers (carrying its admin token):
//! their applied state (`Dump`), the cluster `Status`, and waiting until
//! the controllers agree on a leader.

use std::time::Duration;

use ephemera_proto::v1::{DumpReply, DumpRequest, StatusReply, StatusRequest};

use super::ComposeCluster;

pub use ephemera_control_plane::client::Client;

/// Connects to the controller at `endpoint` (TLS against `ca_pem`) with
/// `token`; `timeout` per request.
pub async fn connect(
    endpoint: &str,
    ca_pem: &str,
    token: &str,
    timeout: Duration,
) -> anyhow::Result<Client> {
    Ok(
        ephemera_control_plane::client::connect(endpoint, Some(ca_pem), Some(token), Some(timeout))
            .await?,
    )
}

impl ComposeCluster {
    /// A client of controller `id` with per-request `timeout`.
    pub async fn client_with_timeout(&self, id: u64, timeout: Duration) -> anyhow::Result<Client> {
        connect(&self.endpoint(id), &self.ca_pem(), &self.token, timeout).await
    }

    /// A client of controller `id` (5 s per request).
    pub async fn client(&self, id: u64) -> anyhow::Result<Client> {
        self.client_with_timeout(id, Duration::from_secs(5)).await
    }

    /// Controller `id`'s applied state.
    pub async fn dump(&self, id: u64) -> anyhow::Result<DumpReply> {
        Ok(self
            .client(id)
            .await?
            .dump(DumpRequest {})
            .await?
            .into_inner())
    }

    /// Cluster status as controller `id` reports it.
    pub async fn status(&self, id: u64) -> anyhow::Result<StatusReply> {
        Ok(self
            .client(id)
            .await?
            .status(StatusRequest {
                tenant: String::new(),
            })
            .await?
            .into_inner())
    }

    /// Waits until every controller in `members` names the same leader, one
    /// of `members`; returns it.
    pub async fn agreed_leader(&self, members: &[u64], timeout: Duration) -> u64 {
        let what = format!("controllers {members:?} agreeing on a leader");
        crate::wait_until(&what, timeout, || async {
            let mut seen = Vec::new();
            for &id in members {
                seen.push(match self.dump(id).await {
                    Ok(d) => Ok((d.leader_id, d.term)),
                    Err(e) => Err(format!("{e:#}")),
                });
            }
            let leaders: Vec<u64> = seen.iter().flatten().map(|r| r.0).collect();
            match leaders.first() {
                Some(&first)
                    if leaders.len() == members.len()
                        && first != 0
                        && members.contains(&first)
                        && leaders.iter().all(|l| *l == first) =>
                {
                    Ok(first)
                }
                _ => Err(format!("(leader, term) per member: {seen:?}")),
            }
        })
        .await
    }
}
