//! Sockets: accepted connections without Nagle's delay for the servers, and
//! loopback ports for servers that must know their address before they
//! start (Raft members list each other's addresses; compose publishes
//! ports), for benches and tests.

use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};

/// A listener's accepted connections with Nagle's algorithm off. gRPC
/// replies are small: held back for a delayed ACK, one costs ~40 ms.
pub fn nodelay_incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        let conn = conn?;
        if let Err(e) = conn.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        Ok(conn)
    })
}

/// Lowest port handed out: below it are well-known and registered ports.
const FIRST: u16 = 20_000;
/// How many ports above [`FIRST`] are used: up to 32000, below the kernel's
/// ephemeral range (which outgoing connections draw from, so a port freed
/// by a killed server is not taken by a client before the server restarts).
const SPAN: u16 = 12_000;

/// `n` distinct free loopback ports. Every candidate stays bound until all
/// `n` are chosen, so none is handed out twice within a process; concurrent
/// processes start at different places (by pid).
pub fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 1_000) as u16 * 12;
    let mut held = Vec::new();
    let mut tries = 0u32;
    while held.len() < n {
        tries += 1;
        if tries > u32::from(SPAN) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("no {n} free loopback ports in {FIRST}..{}", FIRST + SPAN),
            ));
        }
        let port = FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
        }
    }
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_distinct_and_free() {
        let ports = super::free_ports(20).unwrap();
        let mut sorted = ports.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 20);
        for p in ports {
            assert!((20_000..32_000).contains(&p));
            std::net::TcpListener::bind(("127.0.0.1", p)).expect("free after return");
        }
    }
}
