//! The `ephemera` command line: every command, subcommand and flag, with
//! their help texts. Parsing only; `commands/` does what each one says.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use ephemera_control_block::Mode;
use ephemera_node_agent::{RuntimeKind, SharingScope};
use ephemera_storage::Policy;

use crate::target::DEFAULT_ENDPOINT;

fn parse_size(s: &str) -> Result<u64, String> {
    ephemera_domain::parse_size(s)
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    Mode::parse(s).ok_or_else(|| format!("unknown mode {s:?}: use adaptive, memory or disk"))
}

fn parse_runtime(s: &str) -> Result<RuntimeKind, String> {
    match s {
        "process" => Ok(RuntimeKind::Process),
        "docker" => Ok(RuntimeKind::Docker),
        _ => Err(format!("unknown runtime {s:?}: use process or docker")),
    }
}

fn parse_sharing(s: &str) -> Result<SharingScope, String> {
    SharingScope::parse(s).ok_or_else(|| {
        format!("unknown sharing scope {s:?}: use none, function, workflow or tenant")
    })
}

#[derive(Parser, Debug)]
#[command(
    name = "ephemera",
    version,
    about = "Serverless temporary files at memory speed"
)]
pub struct Args {
    /// Controller endpoint for client commands.
    #[arg(long, global = true, env = "EPHEMERA_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// API token (a tenant's, or the admin's); by default the one saved for the endpoint.
    #[arg(long, global = true, env = "EPHEMERA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The cluster CA certificate an `https://` endpoint must present a
    /// certificate of; by default the one saved for the endpoint.
    #[arg(long, global = true, env = "EPHEMERA_CA")]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run a controller and N agents in this process (the embedded default).
    Dev(DevArgs),
    /// Run one controller (a Raft member).
    Controller(ControllerArgs),
    /// Run one node agent (process runtime).
    Agent(AgentArgs),
    /// Exit 0 if the agent at --agent answers (for health checks).
    AgentHealth(AgentHealthArgs),
    /// Change the controllers' Raft membership (admin).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Manage tenants (admin).
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage functions.
    #[command(subcommand)]
    Fn(FnCmd),
    /// Invoke a function and print its JSON result.
    Invoke(InvokeArgs),
    /// Run any command with its temporary files in the memory tier.
    Run(RunArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Nodes, functions and instances.
    Status(StatusArgs),
}

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// The thesis's mixed trace on one node: I/O task latency on disk, in the
    /// tier without sharing and with each sharing scope; CPU task latency;
    /// tenant actor decision time.
    Sharing(SharingArgs),
    /// Only the CPU task's interleaved rounds of `bench sharing`: its latency
    /// without the preload, with it, and with it while lending memory.
    Cpu(CpuArgs),
    /// The memory tier against a plain directory and tmpfs (runs `tier-bench`).
    Tier(TierArgs),
    /// What confining an instance costs: instance start and a warm no-op
    /// invocation, confined and plain agents interleaved (needs root).
    Sandbox(SandboxArgs),
    /// Committed placements per second through local controller processes.
    Placements(PlacementsArgs),
    /// A warm no-op invocation through local controllers and a real agent, by stage.
    Invoke(InvokeBenchArgs),
    /// Leader SIGKILL to the first successful invocation, local controllers.
    Failover(FailoverArgs),
    /// Placement policies: replay a trace, or time decisions on synthetic clusters.
    Scheduler(SchedulerArgs),
}

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Create the cluster CA (once; an existing one is kept).
    Init(InitArgs),
    /// Issue (or renew) a member's certificate into its directory.
    Issue(IssueArgs),
    /// Revoke a member's certificate; members refuse it once the list reaches them.
    Revoke(RevokeArgs),
    /// Add a controller (started without --bootstrap) as a voter.
    AddMember(AddMemberArgs),
    /// Remove a controller from the voters.
    RemoveMember(RemoveMemberArgs),
}

#[derive(Subcommand, Debug)]
pub enum TenantCmd {
    /// Issue a new API token for a tenant (its previous token stops working).
    Token(TokenArgs),
    /// Set a tenant's quota: memory and concurrent invocations (admin).
    Quota(QuotaArgs),
}

#[derive(Subcommand, Debug)]
pub enum FnCmd {
    /// Register (or replace) a function.
    Deploy(DeployArgs),
    /// Show one function.
    Show(ShowArgs),
    /// List functions.
    List(ListArgs),
}

/// Run a controller and N agents in this process (the embedded default).
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Run WITHOUT TLS and without member authentication (prints a warning).
    #[arg(long)]
    pub insecure: bool,
    /// Number of node agents.
    #[arg(long, default_value_t = 2)]
    pub agents: usize,
    /// Where state lives; reuse it to keep deployed functions.
    #[arg(long, default_value = ".ephemera")]
    pub data_dir: PathBuf,
    /// Controller listen address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,
    /// Memory each agent offers.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    pub node_memory: u64,
    /// Placement policy: feature-aware, pairing or most-free.
    #[arg(long, default_value = "feature-aware")]
    pub policy: Policy,
    /// Seconds a placement lives without an agent vouching for it.
    #[arg(long, default_value_t = 30)]
    pub lease_secs: u64,
}

/// Run one controller (a Raft member).
#[derive(clap::Args, Debug)]
pub struct ControllerArgs {
    /// Member certificates: the cluster CA, this member's certificate and key
    /// (default: `<data-dir>/tls`).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Run WITHOUT TLS and without member authentication (prints a warning).
    #[arg(long)]
    pub insecure: bool,
    /// Raft member id (1, 2, 3, ...).
    #[arg(long)]
    pub id: u64,
    /// Listen address.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address others use to reach this controller (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Bootstrap a cluster: `1=host:port,2=host:port,3=host:port`.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Placement policy.
    #[arg(long, default_value = "feature-aware")]
    pub policy: Policy,
    /// Seconds of silence after which an agent is marked down.
    #[arg(long, default_value_t = 10)]
    pub node_timeout_secs: u64,
    /// Seconds a placement lives without an agent vouching for it.
    #[arg(long, default_value_t = 30)]
    pub lease_secs: u64,
    /// Build a snapshot (and purge the log) after this many entries.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_logs: u64,
}

/// Run one node agent (process runtime).
#[derive(clap::Args, Debug)]
pub struct AgentArgs {
    /// Member certificates: the cluster CA, this member's certificate and key
    /// (default: `<data-dir>/tls`).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// Run WITHOUT TLS and without member authentication (prints a warning).
    #[arg(long)]
    pub insecure: bool,
    /// Node id.
    #[arg(long)]
    pub node_id: String,
    /// Listen address of the agent service.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Address the controller uses to reach this agent (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// Controller endpoints, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub controller: Vec<String>,
    /// Data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Memory this node offers.
    #[arg(long, value_parser = parse_size)]
    pub memory: u64,
    /// How instances run: `process` (a child in a memory cgroup) or `docker`.
    #[arg(long, default_value = "process", value_parser = parse_runtime)]
    pub runtime: RuntimeKind,
    /// Which instances of a tenant share memory: none, function, workflow, tenant.
    #[arg(long, default_value = "tenant", value_parser = parse_sharing)]
    pub sharing: SharingScope,
    /// Seconds a warm instance may stay idle before it is stopped.
    #[arg(long, default_value_t = 600)]
    pub idle_timeout_secs: u64,
    /// Network mode of instance containers (docker runtime).
    #[arg(long, default_value = "none")]
    pub docker_network: String,
    /// Create instance containers from this local image (which holds the
    /// proxy, intercept and launcher under /opt/ephemera), mounting only
    /// the instance and code dirs: for agents that run in a container.
    #[arg(long)]
    pub instance_image: Option<String>,
}

/// Exit 0 if the agent at --agent answers (for health checks).
#[derive(clap::Args, Debug)]
pub struct AgentHealthArgs {
    /// The agent's own certificate directory (its node certificate answers for it).
    #[arg(long)]
    pub tls_dir: Option<PathBuf>,
    /// The agent's node id (with --tls-dir).
    #[arg(long)]
    pub node_id: Option<String>,
    /// The agent's endpoint.
    #[arg(long, default_value = "http://127.0.0.1:7200")]
    pub agent: String,
}

/// Invoke a function and print its JSON result.
#[derive(clap::Args, Debug)]
pub struct InvokeArgs {
    /// TENANT/FUNCTION.
    pub function: String,
    /// Input, a JSON document.
    #[arg(long)]
    pub input: Option<String>,
    /// Print the whole reply (node, instance, tier counters) as JSON.
    #[arg(long)]
    pub details: bool,
}

/// Run any command with its temporary files in the memory tier.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The directory the tier serves.
    #[arg(long, default_value = "/tmp")]
    pub tier_dir: PathBuf,
    /// Placement: adaptive, memory or disk.
    #[arg(long, default_value = "adaptive", value_parser = parse_mode)]
    pub mode: Mode,
    /// Memory budget (and the cgroup limit with --cgroup), e.g. 64MiB.
    #[arg(long, value_parser = parse_size)]
    pub mem_limit: Option<u64>,
    /// Run inside a fresh memory cgroup limited to --mem-limit.
    #[arg(long)]
    pub cgroup: bool,
    /// Print the tier's counters as JSON on stderr when the command ends.
    #[arg(long)]
    pub stats: bool,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

/// Nodes, functions and instances.
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Only this tenant's functions and instances.
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The thesis's mixed trace on one node: I/O task latency on disk, in the
/// tier without sharing and with each sharing scope; CPU task latency;
/// tenant actor decision time.
#[derive(clap::Args, Debug)]
pub struct SharingArgs {
    /// Random 8 KiB writes (and as many reads) of the I/O task.
    #[arg(long, default_value_t = 500_000)]
    pub io_ops: u64,
    /// Size of the I/O task's file, MiB.
    #[arg(long, default_value_t = 128)]
    pub io_file_mib: u64,
    /// Invocations of each task per scenario.
    #[arg(long, default_value_t = 2)]
    pub repetitions: usize,
    /// Rounds of the interleaved CPU measurement (0 skips it).
    #[arg(long, default_value_t = 40)]
    pub cpu_ab_rounds: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Only the CPU task's interleaved rounds of `bench sharing`: its latency
/// without the preload, with it, and with it while lending memory.
#[derive(clap::Args, Debug)]
pub struct CpuArgs {
    /// Rounds (one invocation of each condition per round).
    #[arg(long, default_value_t = 60)]
    pub rounds: usize,
    /// Target length of one CPU invocation, ms.
    #[arg(long, default_value_t = 300)]
    pub ms: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What confining an instance costs, interleaved.
#[derive(clap::Args, Debug)]
pub struct SandboxArgs {
    /// Rounds (one new instance on each agent per round).
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Warm no-op invocations per instance per round.
    #[arg(long, default_value_t = 20)]
    pub warm: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The memory tier against a plain directory and tmpfs (runs `tier-bench`).
#[derive(clap::Args, Debug)]
pub struct TierArgs {
    /// Arguments for tier-bench: [--ops N] [--size BYTES] [--reps N] [--no-limit] [--sweeps].
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Committed placements per second through local controller processes.
#[derive(clap::Args, Debug)]
pub struct PlacementsArgs {
    /// Group sizes to measure in this run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub controllers: Vec<u64>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Simulated nodes.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Leader SIGKILL to the first successful invocation, local controllers.
#[derive(clap::Args, Debug)]
pub struct FailoverArgs {
    /// Leader kills.
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// A warm no-op invocation through local controllers and a real agent, by stage.
#[derive(clap::Args, Debug)]
pub struct InvokeBenchArgs {
    /// Controllers in the Raft group.
    #[arg(long, default_value_t = 3)]
    pub controllers: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Invoke through the leader or a follower.
    #[arg(long, default_value = "leader", value_parser = ["leader", "follower"])]
    pub via: String,
    /// Measured invocations per client.
    #[arg(long, default_value_t = 1000)]
    pub invocations: usize,
    /// Unmeasured warm-up invocations per client.
    #[arg(long, default_value_t = 50)]
    pub warmup: usize,
    /// Commit each release before the reply (the path before issue 15), for A/B runs.
    #[arg(long)]
    pub inline_release: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Placement policies: replay a trace, or time decisions on synthetic clusters.
#[derive(clap::Args, Debug)]
pub struct SchedulerArgs {
    /// Placement policy: feature-aware, pairing or most-free.
    #[arg(long, default_value = "feature-aware")]
    pub policy: Policy,
    /// Nodes in the cluster (with --trace).
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    /// Memory of each node (with --trace).
    #[arg(long, default_value = "1GiB", value_parser = parse_size)]
    pub node_memory: u64,
    /// A trace of `name T_lim U_max F_max` lines (MiB).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Add a controller (started without --bootstrap) as a voter.
#[derive(clap::Args, Debug)]
pub struct AddMemberArgs {
    /// Its Raft id.
    #[arg(long)]
    pub id: u64,
    /// Its address, `host:port`.
    #[arg(long)]
    pub addr: String,
}

/// Remove a controller from the voters.
#[derive(clap::Args, Debug)]
pub struct RemoveMemberArgs {
    /// Its Raft id.
    #[arg(long)]
    pub id: u64,
}

/// Issue a new API token for a tenant (its previous token stops working).
#[derive(clap::Args, Debug)]
pub struct TokenArgs {
    /// The tenant.
    pub tenant: String,
}

/// Register (or replace) a function.
#[derive(clap::Args, Debug)]
pub struct DeployArgs {
    /// Tenant.
    #[arg(long)]
    pub tenant: String,
    /// Function name.
    #[arg(long)]
    pub name: String,
    /// Directory holding the function's code.
    #[arg(long)]
    pub dir: PathBuf,
    /// Launcher command, run by /bin/sh inside the code directory
    /// (for Python: `ephemera-python handler.py`).
    #[arg(long)]
    pub cmd: String,
    /// Memory limit of an instance.
    #[arg(long, value_parser = parse_size)]
    pub memory: u64,
    /// Timeout per invocation, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// An input for a profiling trial run (repeatable).
    #[arg(long)]
    pub profile_input: Vec<String>,
    /// Workflow this function belongs to (for the `workflow` sharing scope).
    #[arg(long, default_value = "")]
    pub workflow: String,
}

/// Show one function.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// TENANT/FUNCTION.
    pub function: String,
}

/// List functions.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Only this tenant.
    #[arg(long, default_value = "")]
    pub tenant: String,
}

/// Create the cluster CA.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Where the CA's key and certificate live (keep it private: 0700).
    #[arg(long)]
    pub ca_dir: PathBuf,
}

/// Issue a member's certificate.
#[derive(clap::Args, Debug)]
pub struct IssueArgs {
    /// The cluster CA's directory.
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// A controller's Raft member id.
    #[arg(long, conflicts_with = "agent", required_unless_present = "agent")]
    pub controller: Option<u64>,
    /// An agent's node id.
    #[arg(long)]
    pub agent: Option<String>,
    /// A DNS name or IP address the member is reached at (repeatable;
    /// 127.0.0.1 and localhost are always included).
    #[arg(long)]
    pub san: Vec<String>,
    /// The member's directory (its `--tls-dir`).
    #[arg(long)]
    pub out: PathBuf,
    /// Issue a new certificate even if the current one is still good (rotation).
    #[arg(long)]
    pub force: bool,
}

/// Revoke a member's certificate.
#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The cluster CA's directory.
    #[arg(long)]
    pub ca_dir: PathBuf,
    /// A certificate serial (hex), as `cluster issue` printed it.
    #[arg(long, required_unless_present_any = ["controller", "agent"])]
    pub serial: Option<String>,
    /// Every certificate of this controller.
    #[arg(long)]
    pub controller: Option<u64>,
    /// Every certificate of this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Member directories to copy the updated list into (repeatable).
    #[arg(long)]
    pub publish: Vec<PathBuf>,
}

/// A tenant's quota.
#[derive(clap::Args, Debug)]
pub struct QuotaArgs {
    /// The tenant.
    pub tenant: String,
    /// Most memory its active invocations may hold (Σ of their limits).
    #[arg(long, value_parser = parse_size)]
    pub memory: u64,
    /// Most concurrent invocations.
    #[arg(long)]
    pub invocations: u64,
}
