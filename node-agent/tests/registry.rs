//! Registration: the agent keeps trying while no controller answers,
//! registers once one does, heartbeats, and registers again when the
//! controller forgets it.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestAgent;
use ephemera_proto::v1::node_registry_server::{NodeRegistry, NodeRegistryServer};
use ephemera_proto::v1::{
    HeartbeatReply, HeartbeatRequest, RegisterNodeReply, RegisterNodeRequest,
};
use ephemera_trust::Identity;
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Seen {
    registrations: Vec<RegisterNodeRequest>,
    heartbeats: usize,
    forget: bool,
}

#[derive(Clone, Default)]
struct FakeController(Arc<Mutex<Seen>>);

#[tonic::async_trait]
impl NodeRegistry for FakeController {
    async fn register_node(
        &self,
        r: Request<RegisterNodeRequest>,
    ) -> Result<Response<RegisterNodeReply>, Status> {
        let mut s = self.0.lock().unwrap();
        s.registrations.push(r.into_inner());
        s.forget = false;
        Ok(Response::new(RegisterNodeReply {}))
    }

    async fn heartbeat(
        &self,
        _r: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let mut s = self.0.lock().unwrap();
        s.heartbeats += 1;
        Ok(Response::new(HeartbeatReply { known: !s.forget }))
    }
}

async fn wait_for(what: &str, fake: &FakeController, cond: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if cond(&fake.0.lock().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_when_the_controller_appears_and_again_when_forgotten() {
    // A port nobody listens on yet.
    let port = ephemera_sys::net::free_ports(1).expect("a free port")[0];
    let endpoint = format!("https://127.0.0.1:{port}");

    let agent = TestAgent::start_with("test-registry", |c| {
        c.controller_endpoints = vec!["https://127.0.0.1:1".into(), endpoint.clone()];
        c.heartbeat_interval = Duration::from_millis(50);
        c.memory_bytes = 8 << 30;
    })
    .await;

    // The agent is up and failing to reach anyone; now the controller starts.
    let fake = FakeController::default();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // A controller of the agent's cluster (the agent checks it is one).
    let controller = common::member(&agent.tls, Identity::controller(1).unwrap());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(ephemera_trust::server_tls(&controller))
            .unwrap()
            .add_service(NodeRegistryServer::new(fake.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stopped.await;
                },
            ),
    );

    wait_for("registration", &fake, |s| !s.registrations.is_empty()).await;
    {
        let s = fake.0.lock().unwrap();
        let r = &s.registrations[0];
        assert_eq!(r.node_id, "test-registry");
        assert_eq!(r.memory_bytes, 8 << 30);
        assert!(r.addr.starts_with("https://127.0.0.1:"), "{}", r.addr);
        assert!(!r.resumed, "a fresh agent's placements are stale: {r:?}");
    }
    wait_for("heartbeats", &fake, |s| s.heartbeats >= 3).await;
    fake.0.lock().unwrap().forget = true;
    wait_for("registration again", &fake, |s| s.registrations.len() >= 2).await;
    assert!(
        fake.0.lock().unwrap().registrations[1].resumed,
        "the same agent process registering again keeps its placements"
    );

    agent.stop().await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
