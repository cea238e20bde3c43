//! One cached gRPC channel per (address, expected peer), shared by everything
//! a controller dials: its Raft peers (and the leader it forwards writes to)
//! and the node agents it runs invocations on. Each channel is mutual TLS
//! with this controller's certificate and checks that the server *is* the
//! member expected at that address (controller 2, agent node-1), whatever
//! the address says; plain text only with `--insecure`. Channels connect
//! lazily, keep their connection alive, and are dropped after a transport
//! failure so the next call dials (and resolves the name) anew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ephemera_trust::{Expect, Identity, Security, TrustError};
use tonic::transport::Channel;

/// Opens (and caches) one gRPC channel per peer address and identity.
#[derive(Clone)]
pub struct ChannelPool {
    security: Security,
    channels: Arc<Mutex<HashMap<(String, String), Channel>>>,
}

impl std::fmt::Debug for ChannelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelPool")
            .field("insecure", &self.security.is_insecure())
            .finish_non_exhaustive()
    }
}

impl ChannelPool {
    /// A pool dialing with `security`.
    pub fn new(security: Security) -> ChannelPool {
        ChannelPool {
            security,
            channels: Arc::default(),
        }
    }

    /// How this controller's connections are protected.
    pub fn security(&self) -> &Security {
        &self.security
    }

    /// A lazily connecting channel to controller `id` at `addr`.
    pub fn controller(&self, addr: &str, id: u64) -> Result<Channel, TrustError> {
        self.get(addr, &Expect::Identity(Identity::controller(id)?))
    }

    /// A lazily connecting channel to the agent of `node_id` at `addr`.
    pub fn agent(&self, addr: &str, node_id: &str) -> Result<Channel, TrustError> {
        self.get(addr, &Expect::Identity(Identity::agent(node_id)?))
    }

    /// A lazily connecting channel to `addr` (`http(s)://host:port` or
    /// `host:port`) whose server must satisfy `expect`.
    pub fn get(&self, addr: &str, expect: &Expect) -> Result<Channel, TrustError> {
        let key = (self.security.url(addr), expect.to_string());
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = channels.get(&key) {
            return Ok(ch.clone());
        }
        let ch = self
            .security
            .member_endpoint(addr, expect)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(key, ch.clone());
        Ok(ch)
    }

    /// After a call to `addr` failed with `status`: a transport failure
    /// drops the cached channels to it, so the next call dials anew and
    /// resolves the name again (a restarted container may come back
    /// elsewhere, and a channel stuck on a dead connection must not outlive it).
    pub fn forget_after(&self, addr: &str, status: &tonic::Status) {
        if status.code() == tonic::Code::Unavailable {
            let url = self.security.url(addr);
            let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            channels.retain(|(u, _), _| *u != url);
        }
    }
}
