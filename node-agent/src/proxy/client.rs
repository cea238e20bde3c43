//! The agent's side of the proxy socket: connect, read the hello, then one
//! request and one reply at a time.

use std::io;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::{Reply, Request};

/// One open connection to an instance's proxy.
#[derive(Debug)]
pub struct ProxyClient {
    /// Replies come in here.
    reader: BufReader<OwnedReadHalf>,
    /// Requests go out here.
    writer: OwnedWriteHalf,
    /// The launcher's pid from the hello.
    launcher_pid: u32,
}

impl ProxyClient {
    /// Wraps a connected socket and reads the proxy's hello.
    pub async fn handshake(stream: UnixStream) -> io::Result<ProxyClient> {
        let (r, w) = stream.into_split();
        let mut client = ProxyClient {
            reader: BufReader::new(r),
            writer: w,
            launcher_pid: 0,
        };
        match client.read_reply().await? {
            Reply::Hello { launcher_pid } => client.launcher_pid = launcher_pid,
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("proxy sent {other:?} instead of its hello"),
                ))
            }
        }
        Ok(client)
    }

    /// Tries to connect to `socket` once.
    pub async fn connect(socket: &Path) -> io::Result<ProxyClient> {
        let stream = UnixStream::connect(socket).await?;
        ProxyClient::handshake(stream).await
    }

    /// The launcher's pid.
    pub fn launcher_pid(&self) -> u32 {
        self.launcher_pid
    }

    /// Sends one request and waits (at most `within`) for its reply.
    pub async fn call(&mut self, request: &Request, within: Duration) -> io::Result<Reply> {
        let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        match tokio::time::timeout(within, self.read_reply()).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("proxy did not answer within {within:?}"),
            )),
        }
    }

    async fn read_reply(&mut self) -> io::Result<Reply> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "proxy closed the connection",
            ));
        }
        serde_json::from_str(&line).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "proxy sent a malformed reply ({e}): {}",
                    super::truncate(&line, 200)
                ),
            )
        })
    }
}
