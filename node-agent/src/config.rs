//! The agent's configuration: who it is, where it keeps its files, how to
//! reach the controllers and how to start function instances.

use std::path::PathBuf;
use std::time::Duration;

use ephemera_trust::Security;

/// Which container runtime starts function instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RuntimeKind {
    /// A child process in a fresh memory cgroup (the embedded default).
    #[default]
    Process,
    /// Docker containers through the host engine.
    Docker,
}

/// Which instances of one tenant may lend memory to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SharingScope {
    /// No sharing at all.
    None,
    /// Only instances of the same function.
    Function,
    /// Only instances of functions in the same (non-empty) workflow.
    Workflow,
    /// Any two instances of the tenant (the default).
    #[default]
    Tenant,
}

impl SharingScope {
    /// Parses `none`, `function`, `workflow` or `tenant`.
    pub fn parse(s: &str) -> Option<SharingScope> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Some(SharingScope::None),
            "function" => Some(SharingScope::Function),
            "workflow" => Some(SharingScope::Workflow),
            "tenant" => Some(SharingScope::Tenant),
            _ => None,
        }
    }
}

/// Everything `run` needs to serve one node.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node's id, unique in the cluster.
    pub node_id: String,
    /// Instances, code cache, ledger and helper binaries live under here.
    pub data_dir: PathBuf,
    /// N_lim: the memory this node offers, reported to the controller.
    pub memory_bytes: u64,
    /// Where the controller reaches our Agent service, e.g. `http://127.0.0.1:7201`.
    pub advertise_addr: String,
    /// Controller endpoints for registration and heartbeats, tried in turn.
    pub controller_endpoints: Vec<String>,
    /// Which runtime starts instances.
    pub runtime: RuntimeKind,
    /// `libephemera_intercept.so`; `None` runs functions without the tier.
    pub intercept_lib: Option<PathBuf>,
    /// The `ephemera-proxy` executable.
    pub proxy_bin: PathBuf,
    /// A warm instance idle this long is stopped.
    pub idle_timeout: Duration,
    /// How often the agent heartbeats to the controller.
    pub heartbeat_interval: Duration,
    /// Which instances of a tenant may share memory.
    pub sharing: SharingScope,
    /// Network mode of instance containers (docker runtime only).
    pub docker_network: String,
    /// Docker runtime only: create instance containers from this local image
    /// (e.g. `ephemera/python:dev`), which holds the proxy, intercept and
    /// launchers under `/opt/ephemera`; only the instance and code
    /// directories are mounted. Needed when the agent itself runs in a
    /// container. `None`: an empty image plus the host's `/usr`, `/lib`, ...
    /// and the agent's own `proxy_bin`/`intercept_lib` (see
    /// [`crate::runtime::docker`]).
    pub instance_image: Option<String>,
    /// This node's certificate and the cluster CA: the Agent service admits
    /// controllers only, and the agent registers as this node alone.
    /// `Security::Insecure` only with `--insecure`.
    pub security: Security,
    /// Run each instance under its tenant's uid, sandboxed (see
    /// [`crate::runtime::confine`]); off only with `--insecure`.
    pub confine: bool,
}

impl AgentConfig {
    /// A configuration with defaults for the rest: process runtime, no
    /// intercept, 10 minutes idle timeout, 1 s heartbeat, tenant-wide sharing.
    pub fn new(
        node_id: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        memory_bytes: u64,
        advertise_addr: impl Into<String>,
        controller_endpoints: Vec<String>,
        proxy_bin: impl Into<PathBuf>,
        security: Security,
    ) -> Self {
        AgentConfig {
            node_id: node_id.into(),
            data_dir: data_dir.into(),
            memory_bytes,
            advertise_addr: advertise_addr.into(),
            controller_endpoints,
            runtime: RuntimeKind::Process,
            intercept_lib: None,
            proxy_bin: proxy_bin.into(),
            idle_timeout: Duration::from_secs(600),
            heartbeat_interval: Duration::from_secs(1),
            sharing: SharingScope::Tenant,
            docker_network: "none".into(),
            instance_image: None,
            confine: !security.is_insecure(),
            security,
        }
    }

    /// The name of this agent's cgroup subtree: the node id and a short hash
    /// of the data directory. Two agents with one node id on one machine (two
    /// embedded clusters) never touch each other's instances, and a restarted
    /// agent still finds the stale instances of its previous run.
    pub fn cgroup_name(&self) -> String {
        use sha2::Digest;
        let dir = std::path::absolute(&self.data_dir).unwrap_or_else(|_| self.data_dir.clone());
        let hash = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
        format!("{}-{}", self.node_id, &hex::encode(hash)[..8])
    }
}
