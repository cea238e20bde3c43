//! Registration with the controllers: `RegisterNode` at start and whenever a
//! heartbeat answers `known = false`, then `Heartbeat` every interval. While
//! no controller answers, retry with capped exponential backoff across every
//! endpoint, forever: the agent keeps serving invocations meanwhile.

use std::time::Duration;

use ephemera_proto::v1::node_registry_client::NodeRegistryClient;
use ephemera_proto::v1::{HeartbeatRequest, RegisterNodeRequest};
use ephemera_trust::limits::REGISTRY_MAX_MESSAGE;
use ephemera_trust::{Expect, Role, Security};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::running::Running;

/// Who we are, as the controller sees us.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Node id.
    pub node_id: String,
    /// Where the controller reaches our Agent service.
    pub advertise_addr: String,
    /// N_lim.
    pub memory_bytes: u64,
    /// Controller endpoints, tried in turn.
    pub endpoints: Vec<String>,
    /// Heartbeat period.
    pub interval: Duration,
    /// Our node certificate (controllers accept registrations and
    /// heartbeats only from the holder of the node's certificate).
    pub security: Security,
    /// The invocations running here, listed in every heartbeat.
    pub running: Running,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Registers and heartbeats until `stop` turns true.
pub async fn maintain(reg: Registration, mut stop: watch::Receiver<bool>) {
    if reg.endpoints.is_empty() {
        tracing::warn!(node = %reg.node_id, "no controller endpoints configured: not registering");
        return;
    }
    let mut client: Option<NodeRegistryClient<Channel>> = None;
    let mut next = 0usize;
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u64;
    let mut registered = false;
    loop {
        let ok = match client.as_mut() {
            None => match register(&reg, next, registered).await {
                Ok(c) => {
                    registered = true;
                    tracing::info!(
                        node = %reg.node_id,
                        controller = %reg.endpoints[next % reg.endpoints.len()],
                        "registered with the controller"
                    );
                    client = Some(c);
                    true
                }
                Err(e) => {
                    failures += 1;
                    // Loud at attempts 1, 2, 4, 8, ...: visible, not flooding.
                    if failures.is_power_of_two() {
                        tracing::warn!(
                            node = %reg.node_id,
                            attempts = failures,
                            "cannot register with {}: {e}",
                            reg.endpoints[next % reg.endpoints.len()]
                        );
                    }
                    next += 1;
                    false
                }
            },
            Some(c) => {
                let hb = HeartbeatRequest {
                    node_id: reg.node_id.clone(),
                    running: reg.running.list(),
                };
                match tokio::time::timeout(Duration::from_secs(5), c.heartbeat(hb)).await {
                    Ok(Ok(r)) if r.get_ref().known => true,
                    Ok(Ok(_)) => {
                        tracing::info!(node = %reg.node_id, "controller does not know this node: registering again");
                        client = None;
                        continue;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(node = %reg.node_id, "heartbeat failed: {e}");
                        client = None;
                        next += 1;
                        false
                    }
                    Err(_) => {
                        tracing::warn!(node = %reg.node_id, "heartbeat timed out");
                        client = None;
                        next += 1;
                        false
                    }
                }
            }
        };
        let wait = if ok {
            failures = 0;
            backoff = BACKOFF_MIN;
            reg.interval
        } else {
            let w = backoff;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            w
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Registers with controller `index`; `resumed` says this process has
/// registered before, so its running placements must be kept.
async fn register(
    reg: &Registration,
    index: usize,
    resumed: bool,
) -> Result<NodeRegistryClient<Channel>, String> {
    let ep = &reg.endpoints[index % reg.endpoints.len()];
    // Any controller of the cluster will do: it forwards to the leader.
    let endpoint = reg
        .security
        .member_endpoint(ep, &Expect::Role(Role::Controller))
        .map_err(|e| format!("endpoint {ep:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = NodeRegistryClient::new(channel)
        .max_decoding_message_size(REGISTRY_MAX_MESSAGE)
        .max_encoding_message_size(REGISTRY_MAX_MESSAGE);
    client
        .register_node(RegisterNodeRequest {
            node_id: reg.node_id.clone(),
            addr: reg.advertise_addr.clone(),
            memory_bytes: reg.memory_bytes,
            resumed,
        })
        .await
        .map_err(|s| format!("RegisterNode: {s}"))?;
    Ok(client)
}
