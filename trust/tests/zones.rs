//! The trust zones over real sockets: each test starts a controller-shaped
//! TLS server on 127.0.0.1:0 and asserts what reached the services' code.

mod common;

use std::time::Instant;

use common::*;
use ephemera_trust::{
    anonymous_endpoint, client_tls, member_endpoint, Expect, Identity, Peer, RevocationEntry, Role,
    Security, RELOAD_INTERVAL,
};
use tonic::transport::{ClientTlsConfig, Endpoint};
use tonic::Code;

fn ctl(id: u64) -> Identity {
    Identity::controller(id).unwrap()
}

/// Dials the server as a member, expecting it to be controller 1.
async fn dial(
    server: &TestServer,
    creds: &ephemera_trust::Credentials,
) -> tonic::transport::Channel {
    let ep = member_endpoint(creds, &server.addr(), &Expect::Identity(ctl(1))).unwrap();
    connect(ep).await.expect("member connects")
}

#[tokio::test]
async fn a_controller_reaches_raft_and_the_interceptor_names_it() {
    let cluster = Cluster::new();
    let server = TestServer::controller(&Security::mutual(cluster.controller(1))).await;
    let ch = dial(&server, &cluster.controller(2)).await;

    let echoed = vote(ch.clone(), b"vote-1")
        .await
        .expect("controller 2 may vote");
    assert_eq!(echoed, b"vote-1");
    assert_eq!(server.calls.raft_calls(), 1);
    assert_eq!(
        server.calls.raft_peers.lock().unwrap().as_slice(),
        &[Peer::Controller(2)]
    );
    server.stop().await;
}

#[tokio::test]
async fn an_agent_is_refused_by_raft() {
    let cluster = Cluster::new();
    let server = TestServer::controller(&Security::mutual(cluster.controller(1))).await;
    let ch = dial(&server, &cluster.agent("node-1")).await;

    let err = vote(ch, b"forged")
        .await
        .expect_err("an agent may not vote");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("agent node-1"), "{}", err.message());
    assert!(
        err.message().contains("controllers only"),
        "{}",
        err.message()
    );
    assert_eq!(server.calls.raft_calls(), 0, "the forged vote reached Raft");
    server.stop().await;
}

#[tokio::test]
async fn an_agent_registers_its_own_node_only() {
    let cluster = Cluster::new();
    let server = TestServer::controller(&Security::mutual(cluster.controller(1))).await;
    let ch = dial(&server, &cluster.agent("node-1")).await;

    register(ch.clone(), "node-1").await.expect("own node");
    assert!(heartbeat(ch.clone(), "node-1")
        .await
        .expect("own heartbeat"));

    let err = register(ch.clone(), "node-2")
        .await
        .expect_err("other node");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("agent node-1 cannot act for node \"node-2\""),
        "{}",
        err.message()
    );
    let err = heartbeat(ch.clone(), "node-2")
        .await
        .expect_err("other heartbeat");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // A controller's certificate is no node credential either.
    let ctl2 = dial(&server, &cluster.controller(2)).await;
    let err = register(ctl2, "node-1")
        .await
        .expect_err("controller as node");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    assert_eq!(server.calls.registered(), vec!["node-1".to_string()]);
    assert_eq!(
        server
            .calls
            .heartbeats
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    server.stop().await;
}

#[tokio::test]
async fn a_certificate_from_another_ca_fails_the_handshake() {
    let cluster = Cluster::new();
    let other = Cluster::new();
    let server = TestServer::controller(&Security::mutual(cluster.controller(1))).await;
    let foreign = other.controller(2);

    // The client trusts the right CA but presents the other CA's controller
    // certificate: the server's handshake refuses it.
    let tls = ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            cluster.ca.cert_pem(),
        ))
        .identity(foreign.tonic_identity())
        .domain_name("localhost");
    let ep = Endpoint::from_shared(format!("https://{}", server.addr()))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let refused = match connect(ep).await {
        Err(e) => e,
        // TLS 1.3: the client may finish before the server's alert arrives;
        // the first call then fails on the dead connection.
        Ok(ch) => format!("{:?}", vote(ch, b"x").await.expect_err("foreign cert")),
    };
    assert_eq!(server.calls.raft_calls(), 0);
    // The server's alert says why: it does not know the issuer.
    assert!(refused.contains("UnknownCA"), "{refused}");

    // And a member dialing a server of the other CA refuses that server.
    let other_server = TestServer::controller(&Security::mutual(other.controller(1))).await;
    let ep = member_endpoint(
        &cluster.controller(2),
        &other_server.addr(),
        &Expect::Role(Role::Controller),
    )
    .unwrap();
    let err = connect(ep).await.expect_err("server of another CA");
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert_eq!(other_server.calls.raft_calls(), 0);
    other_server.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn without_a_certificate_only_the_token_guarded_api_answers() {
    let cluster = Cluster::new();
    let server = TestServer::controller(&Security::mutual(cluster.controller(1))).await;
    let ep = anonymous_endpoint(cluster.ca.cert_pem(), &server.addr(), &Expect::ClientApi).unwrap();
    let ch = connect(ep)
        .await
        .expect("the CLI connects without a certificate");

    api_status(ch.clone(), Some(TOKEN))
        .await
        .expect("token accepted");
    let err = api_status(ch.clone(), Some("wrong")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let err = vote(ch.clone(), b"forged")
        .await
        .expect_err("Raft without cert");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("cluster members only"),
        "{}",
        err.message()
    );
    let err = register(ch.clone(), "node-9")
        .await
        .expect_err("registry without cert");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    assert_eq!(
        server.calls.api.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(server.calls.raft_calls(), 0);
    assert!(server.calls.registered().is_empty());

    // Plain text to the TLS port gets nowhere either.
    let plain = Endpoint::from_shared(format!("http://{}", server.addr())).unwrap();
    let plain_failed = match connect(plain).await {
        Err(_) => true,
        Ok(ch) => vote(ch, b"forged").await.is_err(),
    };
    assert!(plain_failed);
    assert_eq!(server.calls.raft_calls(), 0);
    server.stop().await;
}

#[tokio::test]
async fn a_members_only_listener_refuses_anonymous_handshakes() {
    let cluster = Cluster::new();
    let server = TestServer::members_only(&Security::mutual(cluster.controller(1))).await;
    let ep = anonymous_endpoint(cluster.ca.cert_pem(), &server.addr(), &Expect::ClientApi).unwrap();
    let failed = match connect(ep).await {
        Err(_) => true,
        Ok(ch) => register(ch, "node-1").await.is_err(),
    };
    assert!(failed, "an anonymous client got through");
    assert!(server.calls.registered().is_empty());

    let ch = dial(&server, &cluster.agent("node-1")).await;
    register(ch, "node-1").await.expect("an agent gets in");
    assert_eq!(server.calls.registered(), vec!["node-1".to_string()]);
    server.stop().await;
}

#[tokio::test]
async fn a_member_checks_whom_it_reached() {
    let cluster = Cluster::new();
    let server = TestServer::controller(&Security::mutual(cluster.controller(1))).await;
    let me = cluster.controller(2);

    // Dialing this address expecting agent node-1 (e.g. an address a fake
    // agent registered) fails: the server is controller 1.
    let ep = member_endpoint(
        &me,
        &server.addr(),
        &Expect::Identity(Identity::agent("node-1").unwrap()),
    )
    .unwrap();
    let err = connect(ep).await.expect_err("wrong server identity");
    assert!(
        err.contains("the server is controller 1, expected agent node-1"),
        "{err}"
    );

    // Expect::Name checks the dialed name: 127.0.0.1 is in every certificate,
    // "controller-7" is not in controller 1's.
    let ep = member_endpoint(&me, &server.addr(), &Expect::Name).unwrap();
    vote(connect(ep).await.unwrap(), b"ok").await.unwrap();
    let tls = client_tls(&me, "controller-7");
    let ep = Endpoint::from_shared(format!("https://{}", server.addr()))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    let err = connect(ep).await.expect_err("name not in the certificate");
    assert!(err.contains("NotValidForName"), "{err}");
    assert_eq!(server.calls.raft_calls(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_once_the_list_is_reloaded() {
    let cluster = Cluster::new();
    let server_creds = cluster.controller(1);
    let server_list = server_creds.revocations().clone();
    let server_dir = cluster.member_dir(&ctl(1));
    let server = TestServer::controller(&Security::mutual(server_creds)).await;

    let agent = cluster.agent("node-1");
    let ch = dial(&server, &agent).await;
    register(ch.clone(), "node-1")
        .await
        .expect("before revocation");

    // Revoke this certificate by serial; publish the list to the server's directory.
    cluster
        .ca
        .revoke(&RevocationEntry::Serial(agent.info().serial.clone()))
        .unwrap();
    cluster.ca.publish_revocations(&server_dir).unwrap();
    assert!(server_list.reload().unwrap(), "the list changed");

    // The same (already open) connection is refused on its next call.
    let err = heartbeat(ch.clone(), "node-1").await.expect_err("revoked");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("revoked"), "{}", err.message());
    assert!(
        err.message().contains(&agent.info().serial),
        "{}",
        err.message()
    );

    // Rotation: a re-issued certificate (new serial) for the same node works.
    let rotated = cluster.agent("node-1");
    assert_ne!(rotated.info().serial, agent.info().serial);
    let ch2 = dial(&server, &rotated).await;
    assert!(heartbeat(ch2.clone(), "node-1")
        .await
        .expect("rotated cert"));

    // Revoking the identity bans every certificate of node-1; the server
    // notices the file change by itself within RELOAD_INTERVAL.
    cluster
        .ca
        .revoke(&RevocationEntry::Identity(
            Identity::agent("node-1").unwrap(),
        ))
        .unwrap();
    cluster.ca.publish_revocations(&server_dir).unwrap();
    let deadline = Instant::now() + RELOAD_INTERVAL + DEADLINE;
    let err = loop {
        match heartbeat(ch2.clone(), "node-1").await {
            Err(e) => break e,
            Ok(_) if Instant::now() < deadline => {
                tokio::time::sleep(RELOAD_INTERVAL / 10).await;
            }
            Ok(_) => panic!("the identity revocation was not picked up"),
        }
    };
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message()
            .contains("every certificate of this member is revoked"),
        "{}",
        err.message()
    );
    // ... and the CA will not issue it again.
    let again = cluster.ca.ensure_member(
        &Identity::agent("node-1").unwrap(),
        &[],
        &cluster.member_dir(&Identity::agent("node-1").unwrap()),
    );
    assert!(again.unwrap_err().to_string().contains("is revoked"));

    // Others are untouched.
    let ch3 = dial(&server, &cluster.agent("node-2")).await;
    register(ch3, "node-2")
        .await
        .expect("node-2 is not revoked");
    assert_eq!(
        server.calls.registered(),
        vec!["node-1".to_string(), "node-2".to_string()]
    );
    server.stop().await;
}

#[tokio::test]
async fn the_registry_bounds_message_sizes() {
    let cluster = Cluster::new();
    let server = TestServer::controller(&Security::mutual(cluster.controller(1))).await;
    let ch = dial(&server, &cluster.agent("node-1")).await;
    let huge = "x".repeat(ephemera_trust::limits::REGISTRY_MAX_MESSAGE + 1);
    let err = register_at(ch.clone(), "node-1", &huge)
        .await
        .expect_err("oversized registration");
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    assert!(server.calls.registered().is_empty());
    register(ch, "node-1").await.expect("normal size");
    server.stop().await;
}

#[tokio::test]
async fn insecure_mode_is_plain_text_and_admits_everyone() {
    let security = Security::insecure("the insecure-mode test");
    let server = TestServer::controller(&security).await;
    let ep = security
        .member_endpoint(&server.addr(), &Expect::Role(Role::Controller))
        .unwrap();
    let ch = connect(ep).await.unwrap();
    vote(ch.clone(), b"v")
        .await
        .expect("anyone may vote when insecure");
    register(ch, "any-node").await.expect("anyone may register");
    assert_eq!(
        server.calls.raft_peers.lock().unwrap().as_slice(),
        &[Peer::Insecure]
    );
    server.stop().await;
}
