//! What mutual TLS costs a unary gRPC call, against plain text.
//!
//! Two servers in this process on 127.0.0.1, each serving the `RaftService`
//! echo behind the controller-only interceptor: one plain text with the
//! insecure verifier, one with `server_tls` and the per-call peer check. A
//! controller certificate dials both. Rounds alternate which mode goes first,
//! so drift (CPU frequency, other load) hits both alike; each statistic is
//! the median over rounds with the 10th–90th percentile spread.
//!
//! - connect: a new channel (TCP, TLS handshake with client certificate, HTTP/2
//!   preface) plus its first call, minus nothing: what a fresh peer pays once;
//! - call: one unary call on an established channel (mean of a batch),
//!   for a 64-byte and a 64 KiB payload.
//!
//! `cargo run --release -p ephemera-trust --example tls_cost [rounds]`

use std::time::Instant;

use ephemera_proto::raft::raft_service_client::RaftServiceClient;
use ephemera_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
use ephemera_proto::raft::RaftPayload;
use ephemera_trust::limits::RAFT_MAX_MESSAGE;
use ephemera_trust::{ClusterCa, Credentials, Expect, Identity, Role, Security};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Server};
use tonic::{Request, Response, Status};

struct Echo;

#[tonic::async_trait]
impl RaftService for Echo {
    async fn vote(&self, r: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        Ok(Response::new(r.into_inner()))
    }
    async fn append_entries(
        &self,
        r: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        Ok(Response::new(r.into_inner()))
    }
    async fn install_snapshot(
        &self,
        r: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        Ok(Response::new(r.into_inner()))
    }
    async fn client_write(&self, r: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        Ok(Response::new(r.into_inner()))
    }
    async fn read_index(&self, r: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        Ok(Response::new(r.into_inner()))
    }
}

type AnyError = Box<dyn std::error::Error + Send + Sync>;

async fn serve(security: &Security) -> Result<String, AnyError> {
    let mut builder = Server::builder();
    if let Some(tls) = security.server_tls() {
        builder = builder.tls_config(tls)?;
    }
    let svc = InterceptedService::new(
        RaftServiceServer::new(Echo)
            .max_decoding_message_size(RAFT_MAX_MESSAGE)
            .max_encoding_message_size(RAFT_MAX_MESSAGE),
        security.verifier().require_member(Role::Controller),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let router = builder.add_service(svc);
    // `Server::tcp_nodelay` applies only to listeners tonic binds itself: with
    // our own incoming stream, each accepted socket must be set here, or
    // Nagle + delayed ACK add ~40 ms to every response that spans two writes.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|s| {
        if let Ok(s) = &s {
            let _ = s.set_nodelay(true);
        }
        s
    });
    tokio::spawn(router.serve_with_incoming(incoming));
    Ok(addr)
}

/// One series: wall-clock and CPU microseconds per operation, one value per round.
#[derive(Default)]
struct Series {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

struct Side {
    security: Security,
    addr: String,
    connect: Series,
    small: Series,
    large: Series,
}

/// CPU time consumed by every thread of this process (client and server
/// alike), in nanoseconds, from `/proc/self/task/*/schedstat`. On a shared
/// machine wall-clock times include waiting for a core; CPU time does not.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// Runs `n` operations of `op`, adding wall and CPU microseconds per operation to `series`.
async fn measure<F, Fut>(series: &mut Series, n: usize, mut op: F) -> Result<(), AnyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), AnyError>>,
{
    let cpu0 = cpu_ns();
    let start = Instant::now();
    for _ in 0..n {
        op().await?;
    }
    let wall = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    let cpu = cpu_ns().saturating_sub(cpu0) as f64 / 1e3 / n as f64;
    series.wall.push(wall);
    series.cpu.push(cpu);
    Ok(())
}

async fn channel(security: &Security, addr: &str) -> Result<Channel, AnyError> {
    let ep = security
        .member_endpoint(addr, &Expect::Identity(Identity::controller(1)?))?
        .tcp_nodelay(true);
    Ok(ep.connect().await?)
}

async fn call(ch: &Channel, payload: &[u8]) -> Result<(), AnyError> {
    let ch = ch.clone();
    let reply = RaftServiceClient::new(ch)
        .max_decoding_message_size(RAFT_MAX_MESSAGE)
        .vote(RaftPayload {
            data: payload.to_vec(),
        })
        .await?;
    if reply.get_ref().data.len() != payload.len() {
        return Err("echo mismatch".into());
    }
    Ok(())
}

async fn round(side: &mut Side, connects: usize, calls: usize) -> Result<(), AnyError> {
    let small = vec![7u8; 64];
    let large = vec![7u8; 64 << 10];
    let (security, addr) = (side.security.clone(), side.addr.clone());
    measure(&mut side.connect, connects, || {
        let (security, addr, small) = (security.clone(), addr.clone(), small.clone());
        async move {
            let ch = channel(&security, &addr).await?;
            call(&ch, &small).await
        }
    })
    .await?;
    let ch = channel(&security, &addr).await?;
    for _ in 0..calls / 10 {
        call(&ch, &small).await?; // warm the connection
    }
    measure(&mut side.small, calls, || call(&ch, &small)).await?;
    measure(&mut side.large, calls / 4, || call(&ch, &large)).await?;
    Ok(())
}

/// Picks one measurement series of a side.
type Column = fn(&Side) -> &Series;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

fn stat(v: &[f64]) -> (f64, f64, f64) {
    let mut v = v.to_vec();
    (
        percentile(&mut v, 0.5),
        percentile(&mut v, 0.1),
        percentile(&mut v, 0.9),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), AnyError> {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(15);
    let (connects, calls) = (20, 2000);
    let tmp = tempfile::tempdir()?;
    let ca = ClusterCa::init(&tmp.path().join("ca"))?;
    let c1 = Identity::controller(1)?;
    let server_creds = ca.issue_into(&c1, &[], &tmp.path().join("c1"))?;
    let client_dir = tmp.path().join("c2");
    ca.issue_into(&Identity::controller(2)?, &[], &client_dir)?;
    let client_creds = Credentials::load(&client_dir, &Identity::controller(2)?)?;

    // The server's and the client's Security differ (their own certificates);
    // a Side holds the client's, and its server is started with the server's.
    let plain_addr = serve(&Security::Insecure).await?;
    let tls_addr = serve(&Security::mutual(server_creds)).await?;
    let mut sides = [
        Side {
            security: Security::Insecure,
            addr: plain_addr,
            connect: Series::default(),
            small: Series::default(),
            large: Series::default(),
        },
        Side {
            security: Security::mutual(client_creds),
            addr: tls_addr,
            connect: Series::default(),
            small: Series::default(),
            large: Series::default(),
        },
    ];

    // Warm-up round, discarded.
    for side in sides.iter_mut() {
        round(side, 3, 200).await?;
        side.connect = Series::default();
        side.small = Series::default();
        side.large = Series::default();
    }
    for r in 0..rounds {
        let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            round(&mut sides[i], connects, calls).await?;
        }
    }

    println!(
        "unary RaftService echo over 127.0.0.1, controller-only interceptor on both; \
         {rounds} interleaved rounds ({connects} connects, {calls} small / {} large calls each)",
        calls / 4
    );
    println!(
        "per operation, microseconds: wall = median over rounds [p10 .. p90]; \
         cpu = median over rounds of client+server CPU time\n"
    );
    println!(
        "{:<30} {:>26} {:>8} {:>26} {:>8} {:>9} {:>9}",
        "", "plaintext wall", "cpu", "mutual TLS wall", "cpu", "+wall", "+cpu"
    );
    let rows: [(&str, Column); 3] = [
        ("new connection + first call", |s| &s.connect),
        ("call, 64 B payload", |s| &s.small),
        ("call, 64 KiB payload", |s| &s.large),
    ];
    for (label, get) in rows {
        let (pm, p10, p90) = stat(&get(&sides[0]).wall);
        let (tm, t10, t90) = stat(&get(&sides[1]).wall);
        let (pc, _, _) = stat(&get(&sides[0]).cpu);
        let (tc, _, _) = stat(&get(&sides[1]).cpu);
        println!(
            "{label:<30} {:>26} {pc:>8.1} {:>26} {tc:>8.1} {:>+9.1} {:>+9.1}",
            format!("{pm:.1} [{p10:.1} .. {p90:.1}]"),
            format!("{tm:.1} [{t10:.1} .. {t90:.1}]"),
            tm - pm,
            tc - pc
        );
    }
    // The servers end with the process (and the runtime).
    Ok(())
}
