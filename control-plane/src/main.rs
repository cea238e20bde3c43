//! `ephemera`: run the embedded cluster, a controller or an agent, or talk to
//! a running cluster. Parses arguments, sets up logging, calls one function.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ephemera_control_block::Mode;
use ephemera_control_plane::cli::{self, DEFAULT_ENDPOINT};
use ephemera_control_plane::dev::{self, DevConfig};
use ephemera_control_plane::server::{self, ControllerConfig};
use ephemera_control_plane::{artifacts, bench, run as run_cmd};
use ephemera_node_agent::{RuntimeKind, SharingScope};
use ephemera_storage::Policy;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    name = "ephemera",
    version,
    about = "Serverless temporary files at memory speed"
)]
struct Args {
    /// Controller endpoint for client commands.
    #[arg(long, global = true, env = "EPHEMERA_ENDPOINT", default_value = DEFAULT_ENDPOINT)]
    endpoint: String,
    /// API token (a tenant's, or the admin's); by default the one saved for the endpoint.
    #[arg(long, global = true, env = "EPHEMERA_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

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

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a controller and N agents in this process (the embedded default).
    Dev {
        /// Number of node agents.
        #[arg(long, default_value_t = 2)]
        agents: usize,
        /// Where state lives; reuse it to keep deployed functions.
        #[arg(long, default_value = ".ephemera")]
        data_dir: PathBuf,
        /// Controller listen address.
        #[arg(long, default_value = "127.0.0.1:7100")]
        listen: SocketAddr,
        /// Memory each agent offers.
        #[arg(long, default_value = "2GiB", value_parser = parse_size)]
        node_memory: u64,
        /// Placement policy: feature-aware, pairing or most-free.
        #[arg(long, default_value = "feature-aware")]
        policy: Policy,
    },
    /// Run one controller (a Raft member).
    Controller {
        /// Raft member id (1, 2, 3, ...).
        #[arg(long)]
        id: u64,
        /// Listen address.
        #[arg(long)]
        listen: SocketAddr,
        /// Address others use to reach this controller (default: --listen).
        #[arg(long)]
        advertise: Option<String>,
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Bootstrap a cluster: `1=host:port,2=host:port,3=host:port`.
        #[arg(long)]
        bootstrap: Option<String>,
        /// Placement policy.
        #[arg(long, default_value = "feature-aware")]
        policy: Policy,
        /// Seconds of silence after which an agent is marked down.
        #[arg(long, default_value_t = 10)]
        node_timeout_secs: u64,
        /// Build a snapshot (and purge the log) after this many entries.
        #[arg(long, default_value_t = 10_000)]
        snapshot_logs: u64,
    },
    /// Run one node agent (process runtime).
    Agent {
        /// Node id.
        #[arg(long)]
        node_id: String,
        /// Listen address of the agent service.
        #[arg(long)]
        listen: SocketAddr,
        /// Address the controller uses to reach this agent (default: --listen).
        #[arg(long)]
        advertise: Option<String>,
        /// Controller endpoints, comma separated.
        #[arg(long, value_delimiter = ',')]
        controller: Vec<String>,
        /// Data directory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Memory this node offers.
        #[arg(long, value_parser = parse_size)]
        memory: u64,
        /// How instances run: `process` (a child in a memory cgroup) or `docker`.
        #[arg(long, default_value = "process", value_parser = parse_runtime)]
        runtime: RuntimeKind,
        /// Which instances of a tenant share memory: none, function, workflow, tenant.
        #[arg(long, default_value = "tenant", value_parser = parse_sharing)]
        sharing: SharingScope,
        /// Seconds a warm instance may stay idle before it is stopped.
        #[arg(long, default_value_t = 600)]
        idle_timeout_secs: u64,
        /// Network mode of instance containers (docker runtime).
        #[arg(long, default_value = "none")]
        docker_network: String,
        /// Create instance containers from this local image (which holds the
        /// proxy, intercept and launcher under /opt/ephemera), mounting only
        /// the instance and code dirs: for agents that run in a container.
        #[arg(long)]
        instance_image: Option<String>,
    },
    /// Exit 0 if the agent at --agent answers (for health checks).
    AgentHealth {
        /// The agent's endpoint.
        #[arg(long, default_value = "http://127.0.0.1:7200")]
        agent: String,
    },
    /// Change the controllers' Raft membership (admin).
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// Manage tenants (admin).
    Tenant {
        #[command(subcommand)]
        command: TenantCmd,
    },
    /// Manage functions.
    Fn {
        #[command(subcommand)]
        command: FnCmd,
    },
    /// Invoke a function and print its JSON result.
    Invoke {
        /// TENANT/FUNCTION.
        function: String,
        /// Input, a JSON document.
        #[arg(long)]
        input: Option<String>,
        /// Print the whole reply (node, instance, tier counters) as JSON.
        #[arg(long)]
        details: bool,
    },
    /// Run any command with its temporary files in the memory tier.
    Run {
        /// The directory the tier serves.
        #[arg(long, default_value = "/tmp")]
        tier_dir: PathBuf,
        /// Placement: adaptive, memory or disk.
        #[arg(long, default_value = "adaptive", value_parser = parse_mode)]
        mode: Mode,
        /// Memory budget (and the cgroup limit with --cgroup), e.g. 64MiB.
        #[arg(long, value_parser = parse_size)]
        mem_limit: Option<u64>,
        /// Run inside a fresh memory cgroup limited to --mem-limit.
        #[arg(long)]
        cgroup: bool,
        /// Print the tier's counters as JSON on stderr when the command ends.
        #[arg(long)]
        stats: bool,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        command: BenchCmd,
    },
    /// Nodes, functions and instances.
    Status {
        /// Only this tenant's functions and instances.
        #[arg(long, default_value = "")]
        tenant: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCmd {
    /// The thesis's mixed trace on one node: I/O task latency on disk, in the
    /// tier without sharing and with each sharing scope; CPU task latency;
    /// tenant actor decision time.
    Sharing {
        /// Random 8 KiB writes (and as many reads) of the I/O task.
        #[arg(long, default_value_t = 500_000)]
        io_ops: u64,
        /// Size of the I/O task's file, MiB.
        #[arg(long, default_value_t = 128)]
        io_file_mib: u64,
        /// Invocations of each task per scenario.
        #[arg(long, default_value_t = 2)]
        repetitions: usize,
        /// Rounds of the interleaved CPU measurement (0 skips it).
        #[arg(long, default_value_t = 40)]
        cpu_ab_rounds: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Only the CPU task's interleaved rounds of `bench sharing`: its latency
    /// without the preload, with it, and with it while lending memory.
    Cpu {
        /// Rounds (one invocation of each condition per round).
        #[arg(long, default_value_t = 60)]
        rounds: usize,
        /// Target length of one CPU invocation, ms.
        #[arg(long, default_value_t = 300)]
        ms: u64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The memory tier against a plain directory and tmpfs (runs `tier-bench`).
    Tier {
        /// Arguments for tier-bench: [--ops N] [--size BYTES] [--reps N] [--no-limit] [--sweeps].
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Committed placements per second through local controller processes.
    Placements {
        /// Controllers in the Raft group.
        #[arg(long, default_value_t = 3)]
        controllers: u64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Simulated nodes.
        #[arg(long, default_value_t = 100)]
        nodes: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Placement policies: replay a trace, or time decisions on synthetic clusters.
    Scheduler {
        /// Placement policy: feature-aware, pairing or most-free.
        #[arg(long, default_value = "feature-aware")]
        policy: Policy,
        /// Nodes in the cluster (with --trace).
        #[arg(long, default_value_t = 2)]
        nodes: usize,
        /// Memory of each node (with --trace).
        #[arg(long, default_value = "1GiB", value_parser = parse_size)]
        node_memory: u64,
        /// A trace of `name T_lim U_max F_max` lines (MiB).
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// Add a controller (started without --bootstrap) as a voter.
    AddMember {
        /// Its Raft id.
        #[arg(long)]
        id: u64,
        /// Its address, `host:port`.
        #[arg(long)]
        addr: String,
    },
    /// Remove a controller from the voters.
    RemoveMember {
        /// Its Raft id.
        #[arg(long)]
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
enum TenantCmd {
    /// Issue a new API token for a tenant (its previous token stops working).
    Token {
        /// The tenant.
        tenant: String,
    },
}

#[derive(Subcommand, Debug)]
enum FnCmd {
    /// Register (or replace) a function.
    Deploy {
        /// Tenant.
        #[arg(long)]
        tenant: String,
        /// Function name.
        #[arg(long)]
        name: String,
        /// Directory holding the function's code.
        #[arg(long)]
        dir: PathBuf,
        /// Launcher command, run by /bin/sh inside the code directory
        /// (for Python: `ephemera-python handler.py`).
        #[arg(long)]
        cmd: String,
        /// Memory limit of an instance.
        #[arg(long, value_parser = parse_size)]
        memory: u64,
        /// Timeout per invocation, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// An input for a profiling trial run (repeatable).
        #[arg(long)]
        profile_input: Vec<String>,
        /// Workflow this function belongs to (for the `workflow` sharing scope).
        #[arg(long, default_value = "")]
        workflow: String,
    },
    /// Show one function.
    Show {
        /// TENANT/FUNCTION.
        function: String,
    },
    /// List functions.
    List {
        /// Only this tenant.
        #[arg(long, default_value = "")]
        tenant: String,
    },
}

/// A watch that turns true on Ctrl-C or SIGTERM.
fn stop_signal() -> anyhow::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// The node-agent benches' options, with the proxy and the intercept
/// library found next to this binary.
fn mix_options(bench: &str) -> anyhow::Result<ephemera_bench::MixOptions> {
    let lib = artifacts::intercept_lib()
        .with_context(|| format!("{bench} needs libephemera_intercept.so next to this binary"))?;
    Ok(ephemera_bench::MixOptions::new(
        artifacts::proxy_bin()?,
        lib,
    ))
}

/// Prints a bench report as JSON or as its text (which ends in a newline).
fn print_report(
    report: &(impl serde::Serialize + std::fmt::Display),
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

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

/// Printing into a closed pipe (`ephemera status | head`) ends the CLI
/// quietly, as other Unix tools do. SIGPIPE itself stays ignored (Rust's
/// default): its default action kills a process whenever a peer resets a
/// socket it writes with `writev`, as hyper does — that killed controllers
/// whose peer restarted mid-reply.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let text = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.contains("failed printing to stdout") && text.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    quiet_on_closed_stdout();
    let service = match args.command {
        Cmd::Dev { .. } => Some("ephemera-dev"),
        Cmd::Controller { .. } => Some("ephemera-controller"),
        Cmd::Agent { .. } => Some("ephemera-agent"),
        _ => None,
    };
    // Logs to stderr; spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is
    // set. Dropping the guard at the end of `main` flushes them.
    let _telemetry = match service {
        Some(service) => ephemera_telemetry::init(service, "info,openraft=warn"),
        None => ephemera_telemetry::init("ephemera-cli", "warn"),
    };
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let target = cli::Target::new(&args.endpoint, args.token.clone());
    let endpoint = &target;
    match args.command {
        Cmd::Dev {
            agents,
            data_dir,
            listen,
            node_memory,
            policy,
        } => {
            let stop = stop_signal()?;
            let config = DevConfig {
                agents,
                data_dir: data_dir.clone(),
                listen,
                node_memory,
                policy,
            };
            dev::run(config, stop, |info| {
                println!(
                    "Ephemera dev cluster is up: 1 controller, {} agents ({}), process runtime, state in {}",
                    info.nodes.len(),
                    info.nodes.join(", "),
                    data_dir.display()
                );
                if !info.tier {
                    println!("warning: libephemera_intercept.so not found; functions run without the memory tier");
                }
                println!("endpoint: {}", info.endpoint);
                println!("  export EPHEMERA_ENDPOINT={}", info.endpoint);
                println!("Press Ctrl-C to stop.");
            })
            .await
        }
        Cmd::Controller {
            id,
            listen,
            advertise,
            data_dir,
            bootstrap,
            policy,
            node_timeout_secs,
            snapshot_logs,
        } => {
            let stop = stop_signal()?;
            let advertise = advertise.unwrap_or_else(|| listen.to_string());
            let admin_token = ephemera_control_plane::auth::admin_token(&data_dir)?;
            let mut config = ControllerConfig::single(data_dir, advertise);
            config.admin_token = admin_token;
            config.id = id;
            config.policy = policy;
            config.node_timeout = Duration::from_secs(node_timeout_secs);
            config.raft.snapshot_logs = snapshot_logs.max(1);
            config.bootstrap = bootstrap.as_deref().map(parse_members).transpose()?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let controller = server::start(&config).await?;
            tracing::info!(id, %listen, "controller serving");
            server::serve(
                controller,
                config.admin_token.clone(),
                listener,
                stopped(stop),
            )
            .await
        }
        Cmd::Agent {
            node_id,
            listen,
            advertise,
            controller,
            data_dir,
            memory,
            runtime,
            sharing,
            idle_timeout_secs,
            docker_network,
            instance_image,
        } => {
            let stop = stop_signal()?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            let advertise = advertise
                .unwrap_or_else(|| format!("http://{}", listener.local_addr().unwrap_or(listen)));
            if controller.is_empty() {
                anyhow::bail!("--controller: at least one controller endpoint is needed");
            }
            let mut config = ephemera_node_agent::AgentConfig::new(
                node_id,
                data_dir,
                memory,
                advertise,
                controller,
                artifacts::proxy_bin()?,
            );
            config.intercept_lib = artifacts::intercept_lib();
            config.runtime = runtime;
            config.sharing = sharing;
            config.idle_timeout = Duration::from_secs(idle_timeout_secs.max(1));
            config.docker_network = docker_network;
            config.instance_image = instance_image;
            ephemera_node_agent::run(config, listener, stopped(stop)).await
        }
        Cmd::AgentHealth { agent } => cli::agent_health(&agent).await,
        Cmd::Cluster { command } => {
            let change = match command {
                ClusterCmd::AddMember { id, addr } => cli::MemberChange::Add(id, addr),
                ClusterCmd::RemoveMember { id } => cli::MemberChange::Remove(id),
            };
            cli::change_members(endpoint, change).await
        }
        Cmd::Tenant {
            command: TenantCmd::Token { tenant },
        } => cli::issue_token(endpoint, &tenant).await,
        Cmd::Fn { command } => match command {
            FnCmd::Deploy {
                tenant,
                name,
                dir,
                cmd,
                memory,
                timeout,
                profile_input,
                workflow,
            } => {
                cli::deploy(
                    endpoint,
                    cli::DeployArgs {
                        tenant: &tenant,
                        name: &name,
                        dir: &dir,
                        cmd: &cmd,
                        memory,
                        timeout_ms: timeout.saturating_mul(1000),
                        profile_inputs: &profile_input,
                        workflow: &workflow,
                    },
                )
                .await
            }
            FnCmd::Show { function } => cli::show(endpoint, &function).await,
            FnCmd::List { tenant } => cli::list(endpoint, &tenant).await,
        },
        Cmd::Invoke {
            function,
            input,
            details,
        } => cli::invoke(endpoint, &function, input.as_deref(), details).await,
        Cmd::Run {
            tier_dir,
            mode,
            mem_limit,
            cgroup,
            stats,
            command,
        } => {
            let code = run_cmd::run(run_cmd::RunArgs {
                tier_dir,
                mode,
                mem_limit,
                cgroup,
                stats,
                command,
            })?;
            std::process::exit(code);
        }
        Cmd::Bench { command } => match command {
            BenchCmd::Sharing {
                io_ops,
                io_file_mib,
                repetitions,
                cpu_ab_rounds,
                json,
            } => {
                let mut opts = mix_options("bench sharing")?;
                opts.io_ops = io_ops;
                opts.io_file_mib = io_file_mib;
                opts.repetitions = repetitions.max(1);
                opts.cpu_ab_rounds = cpu_ab_rounds;
                let report = ephemera_bench::sharing_mix(opts).await?;
                print_report(&report, json)
            }
            BenchCmd::Cpu { rounds, ms, json } => {
                let mut opts = mix_options("bench cpu")?;
                opts.cpu_ab_rounds = rounds;
                opts.cpu_ab_ms = ms;
                let report = ephemera_bench::cpu_interleaved(opts).await?;
                print_report(&report, json)
            }
            BenchCmd::Tier { args } => {
                let bench = artifacts::tool("tier-bench")?;
                let status = std::process::Command::new(&bench)
                    .args(&args)
                    .status()
                    .with_context(|| format!("running {}", bench.display()))?;
                if !status.success() {
                    anyhow::bail!("{} failed: {status}", bench.display());
                }
                Ok(())
            }
            BenchCmd::Placements {
                controllers,
                clients,
                seconds,
                nodes,
                json,
            } => {
                let cfg = bench::placements::PlacementBench {
                    controllers,
                    clients,
                    duration: Duration::from_secs(seconds),
                    nodes,
                };
                bench::placements::run(cfg, json).await
            }
            BenchCmd::Scheduler {
                policy,
                nodes,
                node_memory,
                trace,
                json,
            } => match trace {
                Some(trace) => bench::replay(policy, nodes, node_memory, &trace, json),
                None => bench::time_decisions(policy, &[10, 100, 1_000, 10_000], json),
            },
        },
        Cmd::Status { tenant, json } => cli::status(endpoint, &tenant, json).await,
    }
}
