//! The long-running commands: `ephemera dev` (the embedded cluster),
//! `ephemera controller` (one Raft member) and `ephemera agent` (one node
//! agent). Each runs until Ctrl-C or SIGTERM.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use ephemera_control_plane::server::{self, ControllerConfig};

use ephemera_trust::Identity;

use super::trust::member_security;
use crate::args::{AgentArgs, ControllerArgs, DevArgs};
use crate::dev::{self, DevConfig};
use crate::signals::{stop_signal, stopped};
use crate::{artifacts, say};

/// `ephemera dev`: one controller and N agents in this process.
pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let stop = stop_signal()?;
    let data_dir = args.data_dir.clone();
    let config = DevConfig {
        insecure: args.insecure,
        lease: Duration::from_secs(args.lease_secs.max(1)),
        agents: args.agents,
        data_dir: args.data_dir,
        listen: args.listen,
        node_memory: args.node_memory,
        policy: args.policy,
    };
    dev::run(config, stop, |info| {
        say!(
            "Ephemera dev cluster is up: 1 controller, {} agents ({}), process runtime, state in {}",
            info.nodes.len(),
            info.nodes.join(", "),
            data_dir.display()
        );
        if !info.tier {
            say!("warning: libephemera_intercept.so not found; functions run without the memory tier");
        }
        say!("endpoint: {}", info.endpoint);
        say!("  export EPHEMERA_ENDPOINT={}", info.endpoint);
        if let Some(path) = &info.credentials {
            say!("admin token saved for the CLI in {}", path.display());
        }
        say!("Press Ctrl-C to stop.");
    })
    .await
}

/// `ephemera controller`: one Raft member serving the API on `--listen`.
pub async fn controller(args: ControllerArgs) -> anyhow::Result<()> {
    let stop = stop_signal()?;
    let listen = args.listen;
    let advertise = args.advertise.unwrap_or_else(|| listen.to_string());
    let security = member_security(
        args.insecure,
        "controller",
        Identity::controller(args.id)?,
        args.tls_dir,
        &args.data_dir,
    )?;
    let mut config = ControllerConfig::single(args.data_dir.clone(), advertise, security);
    config.lease = Duration::from_secs(args.lease_secs.max(1));
    config.admin_token = ephemera_control_plane::auth::admin_token(&args.data_dir)?;
    config.id = args.id;
    config.policy = args.policy;
    config.node_timeout = Duration::from_secs(args.node_timeout_secs);
    config.raft.snapshot_logs = args.snapshot_logs.max(1);
    config.bootstrap = args.bootstrap.as_deref().map(parse_members).transpose()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let controller = server::start(&config).await?;
    tracing::info!(id = args.id, %listen, "controller serving");
    server::serve(
        controller,
        config.admin_token.clone(),
        listener,
        stopped(stop),
    )
    .await
}

/// `ephemera agent`: one node agent registered with the controllers.
pub async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let stop = stop_signal()?;
    let listen = args.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let advertise = args
        .advertise
        .unwrap_or_else(|| format!("http://{}", listener.local_addr().unwrap_or(listen)));
    if args.controller.is_empty() {
        anyhow::bail!("--controller: at least one controller endpoint is needed");
    }
    let security = member_security(
        args.insecure,
        "agent",
        Identity::agent(&args.node_id)?,
        args.tls_dir,
        &args.data_dir,
    )?;
    let controllers = args.controller.iter().map(|c| security.url(c)).collect();
    let mut config = ephemera_node_agent::AgentConfig::new(
        args.node_id,
        args.data_dir,
        args.memory,
        security.url(&advertise),
        controllers,
        artifacts::proxy_bin()?,
        security,
    );
    config.intercept_lib = artifacts::intercept_lib();
    config.runtime = args.runtime;
    config.sharing = args.sharing;
    config.idle_timeout = Duration::from_secs(args.idle_timeout_secs.max(1));
    config.docker_network = args.docker_network;
    config.instance_image = args.instance_image;
    ephemera_node_agent::run(config, listener, stopped(stop)).await
}

/// `1=host:port,2=host:port,…` → id → address.
fn parse_members(text: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    text.split(',')
        .map(|m| {
            let (id, addr) = m
                .split_once('=')
                .with_context(|| format!("bootstrap member {m:?}: expected ID=HOST:PORT"))?;
            let id: u64 = id
                .trim()
                .parse()
                .with_context(|| format!("bootstrap member {m:?}: bad id"))?;
            Ok((id, addr.trim().to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn bootstrap_members_parse_or_say_which_is_wrong() {
        let m = super::parse_members("1=a:1, 2=b:2").unwrap();
        assert_eq!(m[&2], "b:2");
        let e = super::parse_members("1=a:1,x=b").unwrap_err();
        assert!(e.to_string().contains("bad id"), "{e}");
        assert!(super::parse_members("1").is_err());
    }
}
