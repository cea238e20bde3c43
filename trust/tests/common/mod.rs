//! A real gRPC server on 127.0.0.1:0 laid out like a controller: the client
//! API (`Controller`, token-guarded), the `NodeRegistry` (agents, node id
//! checked per call) and the `RaftService` (controllers, behind the
//! interceptor) on one TLS listener; plus a cluster CA in a temporary
//! directory issuing members.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ephemera_proto::raft::raft_service_client::RaftServiceClient;
use ephemera_proto::raft::raft_service_server::{RaftService, RaftServiceServer};
use ephemera_proto::raft::RaftPayload;
use ephemera_proto::v1 as pb;
use ephemera_proto::v1::controller_client::ControllerClient;
use ephemera_proto::v1::controller_server::{Controller, ControllerServer};
use ephemera_proto::v1::node_registry_client::NodeRegistryClient;
use ephemera_proto::v1::node_registry_server::{NodeRegistry, NodeRegistryServer};
use ephemera_trust::limits::{CLIENT_API_MAX_MESSAGE, RAFT_MAX_MESSAGE, REGISTRY_MAX_MESSAGE};
use ephemera_trust::{
    authorized_peer, ClusterCa, Credentials, Identity, Peer, PeerVerifier, Role, Security,
};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status};

/// Every network step of a test gets this long, then the test fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Runs `f` with [`DEADLINE`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {DEADLINE:?}"),
    }
}

/// A cluster CA in a temporary directory, and its members' directories.
pub struct Cluster {
    pub tmp: TempDir,
    pub ca: ClusterCa,
}

impl Cluster {
    pub fn new() -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::init(&tmp.path().join("ca")).expect("init CA");
        Cluster { tmp, ca }
    }

    pub fn member_dir(&self, identity: &Identity) -> PathBuf {
        self.tmp.path().join("members").join(identity.file_stem())
    }

    /// Issues (or re-issues) `identity`'s certificate into its own directory.
    pub fn member(&self, identity: &Identity) -> Credentials {
        self.ca
            .issue_into(identity, &[], &self.member_dir(identity))
            .expect("issue member")
    }

    pub fn controller(&self, id: u64) -> Credentials {
        self.member(&Identity::controller(id).unwrap())
    }

    pub fn agent(&self, node: &str) -> Credentials {
        self.member(&Identity::agent(node).unwrap())
    }
}

/// What reached the services' code: the effect a test asserts on.
#[derive(Default)]
pub struct Calls {
    pub raft: AtomicUsize,
    pub raft_peers: Mutex<Vec<Peer>>,
    pub registered: Mutex<Vec<String>>,
    pub heartbeats: AtomicUsize,
    pub api: AtomicUsize,
}

impl Calls {
    pub fn raft_calls(&self) -> usize {
        self.raft.load(Ordering::SeqCst)
    }
    pub fn registered(&self) -> Vec<String> {
        self.registered.lock().unwrap().clone()
    }
}

struct RaftDummy(Arc<Calls>);

impl RaftDummy {
    fn echo(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let peer = authorized_peer(&req).cloned().expect("the interceptor ran");
        self.0.raft.fetch_add(1, Ordering::SeqCst);
        self.0.raft_peers.lock().unwrap().push(peer);
        Ok(Response::new(req.into_inner()))
    }
}

#[tonic::async_trait]
impl RaftService for RaftDummy {
    async fn vote(&self, r: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.echo(r)
    }
    async fn append_entries(
        &self,
        r: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.echo(r)
    }
    async fn install_snapshot(
        &self,
        r: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.echo(r)
    }
    async fn client_write(&self, r: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.echo(r)
    }
    async fn read_index(&self, r: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.echo(r)
    }
}

struct RegistryDummy {
    verifier: PeerVerifier,
    calls: Arc<Calls>,
}

#[tonic::async_trait]
impl NodeRegistry for RegistryDummy {
    async fn register_node(
        &self,
        req: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeReply>, Status> {
        self.verifier.require_agent(&req, &req.get_ref().node_id)?;
        self.calls
            .registered
            .lock()
            .unwrap()
            .push(req.get_ref().node_id.clone());
        Ok(Response::new(pb::RegisterNodeReply {}))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        self.verifier.require_agent(&req, &req.get_ref().node_id)?;
        self.calls.heartbeats.fetch_add(1, Ordering::SeqCst);
        let known = self
            .calls
            .registered
            .lock()
            .unwrap()
            .contains(&req.get_ref().node_id);
        Ok(Response::new(pb::HeartbeatReply { known }))
    }
}

/// The client API stand-in: only `Status`, guarded by a bearer token.
struct ApiDummy(Arc<Calls>);

pub const TOKEN: &str = "eph_test_admin_token";

fn no(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not part of this test server"))
}

#[tonic::async_trait]
impl Controller for ApiDummy {
    async fn issue_token(
        &self,
        _: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenReply>, Status> {
        Err(no("IssueToken"))
    }
    async fn set_quota(
        &self,
        _: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::SetQuotaReply>, Status> {
        Err(no("SetQuota"))
    }
    async fn add_member(
        &self,
        _: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        Err(no("AddMember"))
    }
    async fn remove_member(
        &self,
        _: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MembershipReply>, Status> {
        Err(no("RemoveMember"))
    }
    async fn place(
        &self,
        _: Request<pb::PlaceRequest>,
    ) -> Result<Response<pb::PlaceReply>, Status> {
        Err(no("Place"))
    }
    async fn release(
        &self,
        _: Request<pb::ReleaseRequest>,
    ) -> Result<Response<pb::ReleaseReply>, Status> {
        Err(no("Release"))
    }
    async fn dump(&self, _: Request<pb::DumpRequest>) -> Result<Response<pb::DumpReply>, Status> {
        Err(no("Dump"))
    }
    async fn deploy_function(
        &self,
        _: Request<pb::DeployRequest>,
    ) -> Result<Response<pb::DeployReply>, Status> {
        Err(no("DeployFunction"))
    }
    async fn get_function(
        &self,
        _: Request<pb::GetFunctionRequest>,
    ) -> Result<Response<pb::FunctionInfo>, Status> {
        Err(no("GetFunction"))
    }
    async fn list_functions(
        &self,
        _: Request<pb::ListFunctionsRequest>,
    ) -> Result<Response<pb::ListFunctionsReply>, Status> {
        Err(no("ListFunctions"))
    }
    async fn invoke(
        &self,
        _: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeReply>, Status> {
        Err(no("Invoke"))
    }
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        let ok = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&format!("Bearer {TOKEN}"));
        if !ok {
            return Err(Status::unauthenticated("a valid bearer token is required"));
        }
        self.0.api.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::StatusReply::default()))
    }
}

/// The controller-shaped server; stopped (and awaited) on [`TestServer::stop`]
/// or, failing that, aborted on drop.
pub struct TestServer {
    pub addr: SocketAddr,
    pub calls: Arc<Calls>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl TestServer {
    /// Serves on one listener as `control-plane/src/server.rs` would with
    /// this crate: TLS with optional client certificates, Raft behind the
    /// controller-only interceptor, the registry's handlers guarding the node id.
    pub async fn controller(security: &Security) -> TestServer {
        let verifier = security.verifier();
        let calls = Arc::new(Calls::default());
        let mut builder = Server::builder();
        if let Some(tls) = security.server_tls() {
            builder = builder.tls_config(tls).expect("server TLS config");
        }
        let raft = InterceptedService::new(
            RaftServiceServer::new(RaftDummy(calls.clone()))
                .max_decoding_message_size(RAFT_MAX_MESSAGE)
                .max_encoding_message_size(RAFT_MAX_MESSAGE),
            verifier.require_member(Role::Controller),
        );
        let registry = NodeRegistryServer::new(RegistryDummy {
            verifier: verifier.clone(),
            calls: calls.clone(),
        })
        .max_decoding_message_size(REGISTRY_MAX_MESSAGE)
        .max_encoding_message_size(REGISTRY_MAX_MESSAGE);
        let api = ControllerServer::new(ApiDummy(calls.clone()))
            .max_decoding_message_size(CLIENT_API_MAX_MESSAGE)
            .max_encoding_message_size(CLIENT_API_MAX_MESSAGE);
        let router = builder
            .add_service(api)
            .add_service(registry)
            .add_service(raft);
        Self::serve(router, calls).await
    }

    /// Serves the registry alone on a members-only listener
    /// (`server_tls_mutual`: no client certificate, no handshake).
    pub async fn members_only(security: &Security) -> TestServer {
        let calls = Arc::new(Calls::default());
        let mut builder = Server::builder();
        if let Some(tls) = security.server_tls_mutual() {
            builder = builder.tls_config(tls).expect("server TLS config");
        }
        let router = builder.add_service(NodeRegistryServer::new(RegistryDummy {
            verifier: security.verifier(),
            calls: calls.clone(),
        }));
        Self::serve(router, calls).await
    }

    async fn serve(router: tonic::transport::server::Router, calls: Arc<Calls>) -> TestServer {
        // Bound before the task starts: connections wait in the backlog, so
        // no test has to wait for the server to be "up".
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(router.serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            async {
                let _ = rx.await;
            },
        ));
        TestServer {
            addr,
            calls,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// `host:port` to dial.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// Stops the server and waits (with the deadline) until it has.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let served = within("server shutdown", task).await.expect("server task");
            served.expect("server ended with an error");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Connects `endpoint`; the error text if the connection (or TLS) fails.
pub async fn connect(endpoint: Endpoint) -> Result<Channel, String> {
    within("connect", endpoint.connect())
        .await
        .map_err(|e| format!("{e:?}"))
}

pub async fn vote(ch: Channel, data: &[u8]) -> Result<Vec<u8>, Status> {
    let mut c = RaftServiceClient::new(ch);
    within(
        "Raft vote",
        c.vote(RaftPayload {
            data: data.to_vec(),
        }),
    )
    .await
    .map(|r| r.into_inner().data)
}

pub async fn register(ch: Channel, node: &str) -> Result<(), Status> {
    register_at(ch, node, "agent:7200").await
}

pub async fn register_at(ch: Channel, node: &str, addr: &str) -> Result<(), Status> {
    let mut c = NodeRegistryClient::new(ch);
    within(
        "RegisterNode",
        c.register_node(pb::RegisterNodeRequest {
            node_id: node.into(),
            addr: addr.into(),
            memory_bytes: 1 << 30,
            resumed: false,
        }),
    )
    .await
    .map(|_| ())
}

pub async fn heartbeat(ch: Channel, node: &str) -> Result<bool, Status> {
    let mut c = NodeRegistryClient::new(ch);
    within(
        "Heartbeat",
        c.heartbeat(pb::HeartbeatRequest {
            node_id: node.into(),
            running: Vec::new(),
        }),
    )
    .await
    .map(|r| r.into_inner().known)
}

pub async fn api_status(ch: Channel, token: Option<&str>) -> Result<(), Status> {
    let mut c = ControllerClient::new(ch);
    let mut req = Request::new(pb::StatusRequest {
        tenant: String::new(),
    });
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    within("Controller.Status", c.status(req)).await.map(|_| ())
}
