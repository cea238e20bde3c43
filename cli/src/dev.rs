//! `ephemera dev`: the embedded default. One single-voter controller and N
//! node agents (process runtime) in one process, with state under one data
//! directory, so a new user needs nothing but this binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ephemera_node_agent::AgentConfig;
use ephemera_storage::Policy;
use tokio::net::TcpListener;
use tokio::sync::watch;

use ephemera_control_plane::auth;
use ephemera_control_plane::server::{self, ControllerConfig};

use crate::{artifacts, credentials};

/// Settings of an embedded cluster.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// Number of node agents.
    pub agents: usize,
    /// Root of all state: `controller/` and `agents/node-N/`.
    pub data_dir: PathBuf,
    /// The controller's listen address (port 0 picks one).
    pub listen: SocketAddr,
    /// Memory each agent offers (N_lim).
    pub node_memory: u64,
    /// Placement policy.
    pub policy: Policy,
}

/// What a started embedded cluster tells its user.
#[derive(Debug, Clone)]
pub struct DevInfo {
    /// The endpoint for `EPHEMERA_ENDPOINT`.
    pub endpoint: String,
    /// Agent node ids.
    pub nodes: Vec<String>,
    /// Whether instances get the memory tier.
    pub tier: bool,
    /// The file where the CLI's admin token was saved, if it could be.
    pub credentials: Option<PathBuf>,
}

async fn wait_changed(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the embedded cluster until `stop` turns true. `ready` is called once
/// every agent has registered.
pub async fn run(
    config: DevConfig,
    stop: watch::Receiver<bool>,
    ready: impl FnOnce(&DevInfo),
) -> anyhow::Result<()> {
    if config.agents == 0 {
        anyhow::bail!("--agents must be at least 1");
    }
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the controller to {}", config.listen))?;
    let addr = listener.local_addr()?;
    let controller_dir = config.data_dir.join("controller");
    let mut controller_config = ControllerConfig::single(controller_dir.clone(), addr.to_string());
    controller_config.policy = config.policy;
    controller_config.admin_token = auth::admin_token(&controller_dir)?;
    let controller = server::start(&controller_config).await?;
    let mut serving = {
        let mut stop = stop.clone();
        let token = controller_config.admin_token.clone();
        tokio::spawn(server::serve(
            controller.clone(),
            token,
            listener,
            async move { wait_changed(&mut stop).await },
        ))
    };
    controller
        .node
        .wait_for_leader(Duration::from_secs(20))
        .await?;

    let endpoint = format!("http://{addr}");
    let proxy_bin = artifacts::proxy_bin()?;
    let intercept = artifacts::intercept_lib();
    if intercept.is_none() {
        tracing::warn!("libephemera_intercept.so not found: functions run without the memory tier");
    }
    let mut agents = Vec::new();
    let mut nodes = Vec::new();
    for i in 1..=config.agents {
        let node_id = format!("node-{i}");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding an agent")?;
        let agent_addr = format!("http://{}", listener.local_addr()?);
        let mut agent = AgentConfig::new(
            node_id.clone(),
            config.data_dir.join("agents").join(&node_id),
            config.node_memory,
            agent_addr,
            vec![endpoint.clone()],
            proxy_bin.clone(),
        );
        agent.intercept_lib = intercept.clone();
        agent.heartbeat_interval = Duration::from_millis(500);
        let mut stop = stop.clone();
        agents.push(tokio::spawn(ephemera_node_agent::run(
            agent,
            listener,
            async move { wait_changed(&mut stop).await },
        )));
        nodes.push(node_id);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let registered = {
            let state = controller
                .node
                .state
                .read()
                .unwrap_or_else(|e| e.into_inner());
            nodes
                .iter()
                .all(|n| state.nodes.get(n).is_some_and(|s| s.up))
        };
        if registered {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("agents did not register within 30 s");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            r = &mut serving => anyhow::bail!("the controller stopped while starting: {:?}", r),
        }
    }
    // The CLI finds the admin token by itself: no token ceremony in dev.
    let credentials = credentials::store(&endpoint, &controller_config.admin_token)
        .map_err(|e| tracing::warn!(error = %e, "could not save the CLI's token"))
        .ok();
    ready(&DevInfo {
        endpoint: endpoint.clone(),
        nodes,
        tier: intercept.is_some(),
        credentials,
    });

    let served = serving.await.context("controller task")?;
    if let Err(e) = credentials::remove(&endpoint) {
        tracing::warn!(error = %e, "could not remove the CLI's token");
    }
    for agent in agents {
        match agent.await {
            Ok(Err(e)) => tracing::warn!(error = %e, "agent stopped with an error"),
            Err(e) => tracing::warn!(error = %e, "agent task failed"),
            Ok(Ok(())) => {}
        }
    }
    served
}
