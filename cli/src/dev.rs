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
use ephemera_trust::{ClusterCa, Identity, Security};

use crate::{artifacts, credentials};

/// Settings of an embedded cluster.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// No TLS, no member authentication, no confinement (`--insecure`).
    pub insecure: bool,
    /// How long a placement lives without an agent vouching for it.
    pub lease: Duration,
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
    ephemera_sys::process::ensure_dir_mode(&config.data_dir, 0o700)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let controller_dir = config.data_dir.join("controller");
    let nodes: Vec<String> = (1..=config.agents).map(|i| format!("node-{i}")).collect();
    let trust = DevTrust::new(&config, &nodes)?;
    let mut controller_config = ControllerConfig::single(
        controller_dir.clone(),
        addr.to_string(),
        trust.controller.clone(),
    );
    controller_config.policy = config.policy;
    controller_config.lease = config.lease;
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

    let endpoint = trust.controller.url(&addr.to_string());
    let proxy_bin = artifacts::proxy_bin()?;
    let intercept = artifacts::intercept_lib();
    if intercept.is_none() {
        tracing::warn!("libephemera_intercept.so not found: functions run without the memory tier");
    }
    let mut agents = Vec::new();
    for (node_id, security) in nodes.iter().zip(trust.agents) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding an agent")?;
        let agent_addr = security.url(&listener.local_addr()?.to_string());
        let mut agent = AgentConfig::new(
            node_id.clone(),
            config.data_dir.join("agents").join(node_id),
            config.node_memory,
            agent_addr,
            vec![endpoint.clone()],
            proxy_bin.clone(),
            security,
        );
        agent.intercept_lib = intercept.clone();
        agent.heartbeat_interval = Duration::from_millis(500);
        let mut stop = stop.clone();
        agents.push(tokio::spawn(ephemera_node_agent::run(
            agent,
            listener,
            async move { wait_changed(&mut stop).await },
        )));
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let registered = {
            let state = controller.node.read_state();
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
    let saved = credentials::Saved {
        token: controller_config.admin_token.clone(),
        ca: trust.ca_pem.clone(),
    };
    let credentials = credentials::store(&endpoint, saved)
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

/// The embedded cluster's credentials: one CA and every member's
/// certificate under `<data-dir>/tls` (0700), made on the first start and
/// renewed when needed; or nothing with `--insecure`.
struct DevTrust {
    controller: Security,
    agents: Vec<Security>,
    /// The CA certificate the CLI trusts (`None` when insecure).
    ca_pem: Option<PathBuf>,
}

impl DevTrust {
    fn new(config: &DevConfig, nodes: &[String]) -> anyhow::Result<DevTrust> {
        if config.insecure {
            return Ok(DevTrust {
                controller: Security::insecure("ephemera dev"),
                agents: nodes.iter().map(|_| Security::Insecure).collect(),
                ca_pem: None,
            });
        }
        let dir = config.data_dir.join("tls");
        let ca = ClusterCa::init(&dir)
            .with_context(|| format!("making the cluster CA in {}", dir.display()))?;
        let member = |identity: Identity| -> anyhow::Result<Security> {
            let creds = ca
                .ensure_member(&identity, &[], &dir)
                .with_context(|| format!("issuing the certificate of {identity}"))?;
            Ok(Security::mutual(creds))
        };
        Ok(DevTrust {
            controller: member(Identity::controller(1)?)?,
            agents: nodes
                .iter()
                .map(|n| member(Identity::agent(n)?))
                .collect::<anyhow::Result<_>>()?,
            ca_pem: Some(dir.join(ephemera_trust::CA_CERT_FILE)),
        })
    }
}
