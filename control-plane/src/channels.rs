//! One cached gRPC channel per address, shared by everything a controller
//! dials: its Raft peers (and the leader it forwards writes to) and the
//! node agents it runs invocations on. Channels connect lazily, keep
//! their connection alive, and are dropped after a transport failure so the
//! next call dials (and resolves the name) anew.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// Opens (and caches) one gRPC channel per peer address.
#[derive(Clone, Default)]
pub struct ChannelPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl std::fmt::Debug for ChannelPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelPool").finish_non_exhaustive()
    }
}

fn url_of(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl ChannelPool {
    /// A lazily connecting channel to `addr` (`http://host:port` or `host:port`).
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let url = url_of(addr);
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ch) = channels.get(&url) {
            return Ok(ch.clone());
        }
        let ch = Endpoint::from_shared(url.clone())?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        channels.insert(url, ch.clone());
        Ok(ch)
    }

    /// After a call to `addr` failed with `status`: a transport failure
    /// drops the cached channel, so the next call dials anew and resolves
    /// the name again (a restarted container may come back elsewhere, and
    /// a channel stuck on a dead connection must not outlive it).
    pub fn forget_after(&self, addr: &str, status: &tonic::Status) {
        if status.code() == tonic::Code::Unavailable {
            let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
            channels.remove(&url_of(addr));
        }
    }
}
