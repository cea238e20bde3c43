//! The in-instance proxy and the protocol the agent speaks with it.
//!
//! Each function instance is one `ephemera-proxy` process (in the instance's
//! memory cgroup) that keeps one long-lived *launcher* (`/bin/sh -c CMD` in the
//! code directory) warm and feeds it with OpenWhisk's action-loop protocol:
//! one JSON line on the launcher's stdin per activation, one JSON line back on
//! the launcher's fd 3. The launcher's stdout and stderr are logs, appended to
//! `stdout.log` / `stderr.log` in the instance directory.
//!
//! # Agent ⇄ proxy protocol
//!
//! The proxy listens on a unix socket (`--socket`) and serves one connection
//! at a time. Both directions are JSON lines (one object per `\n`):
//!
//! 1. On accept, the proxy sends [`Reply::Hello`] with the launcher's pid.
//! 2. The agent sends [`Request::Run`]; the proxy answers with exactly one of
//!    [`Reply::Result`] (the launcher printed a JSON value on fd 3),
//!    [`Reply::NonJson`] (it printed something else; the launcher stays),
//!    [`Reply::Exited`] (the launcher exited; the proxy exits after replying)
//!    or [`Reply::Timeout`] (the activation ran past its timeout; the proxy
//!    kills the launcher's process group and exits after replying).
//!    Requests are served strictly in order, one at a time.
//! 3. When the agent closes the connection the proxy kills the launcher and
//!    exits: an instance never outlives the agent that owns it.
//!
//! - [`server`]: the proxy itself (std only, no async runtime; the binary
//!   `ephemera-proxy` is a thin wrapper): the agent's socket.
//! - `launcher`: the launcher process and the threads that watch it.
//! - [`client`]: the agent's side of the socket.

pub mod client;
mod launcher;
pub mod server;

use serde::{Deserialize, Serialize};

/// A message from the agent to the proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Run one activation.
    Run {
        /// `activation_id` passed to the launcher.
        activation_id: String,
        /// `tenant/name`, passed to the launcher as `action_name`.
        action_name: String,
        /// Milliseconds the activation may run.
        timeout_ms: u64,
        /// The input document (`value` for the launcher).
        value: serde_json::Value,
    },
}

/// A message from the proxy to the agent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Sent once per connection, first.
    Hello {
        /// Pid of the launcher (`/bin/sh -c CMD`, or what it exec'd).
        launcher_pid: u32,
    },
    /// The launcher answered with a JSON value.
    Result {
        /// The value it printed on fd 3.
        result: serde_json::Value,
        /// Time from writing the activation to reading the answer.
        duration_us: u64,
    },
    /// The launcher printed a line that is not JSON.
    NonJson {
        /// What it printed, truncated to [`MAX_QUOTE`] bytes.
        output: String,
        /// Time from writing the activation to reading the answer.
        duration_us: u64,
    },
    /// The launcher exited (before or while running the activation).
    Exited {
        /// Exit code, if it exited normally.
        code: Option<i32>,
        /// Signal that killed it, if any.
        signal: Option<i32>,
        /// The end of its stderr, for the error message.
        stderr_tail: String,
        /// It exited while idle: this activation never reached it.
        #[serde(default)]
        idle: bool,
    },
    /// The activation ran past its timeout; the launcher was killed.
    Timeout {
        /// The timeout that passed.
        timeout_ms: u64,
        /// The end of its stderr.
        stderr_tail: String,
    },
}

/// Bytes of a non-JSON answer quoted back to the user.
pub const MAX_QUOTE: usize = 200;

/// Bytes of stderr kept for error messages.
pub const STDERR_TAIL: usize = 2048;

/// Truncates `s` to at most `max` bytes on a char boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
