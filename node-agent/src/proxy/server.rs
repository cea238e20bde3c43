//! The proxy process: starts the launcher, then serves the agent's requests
//! on a unix socket (see the protocol in [`super`]).
//!
//! Plain std and threads, no async runtime: one thread each reads the
//! launcher's fd 3, stdout and stderr, one waits for it to exit, and the main
//! thread serves the socket, so every event reaches the main thread through
//! one channel and a timeout is just `recv_timeout`.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::launcher::{exit_reply, spawn_launcher, wait_exit, Event, Launcher, Tail};
use super::{truncate, Reply, Request, MAX_QUOTE};

/// Command line of `ephemera-proxy`.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ephemera-proxy", about = "Ephemera's in-instance proxy")]
pub struct ProxyArgs {
    /// Unix socket the agent connects to.
    #[arg(long)]
    pub socket: PathBuf,
    /// The function's code directory (the launcher's working directory).
    #[arg(long)]
    pub dir: PathBuf,
    /// Launcher command, run with `/bin/sh -c`.
    #[arg(long)]
    pub cmd: String,
    /// The instance's control block.
    #[arg(long)]
    pub control: PathBuf,
    /// The tier directory (EPHEMERA_TIER_DIR and TMPDIR of the launcher).
    #[arg(long)]
    pub tier_dir: PathBuf,
    /// `libephemera_intercept.so`, preloaded into the launcher only.
    #[arg(long)]
    pub preload: Option<PathBuf>,
    /// Tier mode: adaptive, memory or disk.
    #[arg(long, default_value = "adaptive")]
    pub mode: String,
    /// Directory prefixed to the launcher's PATH (holds `ephemera-python`).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Where `stdout.log` and `stderr.log` go (default: the socket's directory).
    #[arg(long)]
    pub log_dir: Option<PathBuf>,
    /// Initial memory limit, passed as EPHEMERA_MEM_LIMIT.
    #[arg(long)]
    pub mem_limit: Option<u64>,
    /// Exit if the agent has not connected within this many milliseconds.
    #[arg(long, default_value_t = 60_000)]
    pub accept_timeout_ms: u64,
}

/// Why the proxy could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// An I/O error while doing something named.
    #[error("ephemera-proxy: {what}: {source}")]
    Io {
        /// What failed.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
}

pub(super) fn ctx(what: impl Into<String>) -> impl FnOnce(io::Error) -> ProxyError {
    let what = what.into();
    move |source| ProxyError::Io { what, source }
}

/// Runs the proxy until the agent disconnects or the launcher dies.
pub fn run(args: ProxyArgs) -> Result<(), ProxyError> {
    let log_dir = args
        .log_dir
        .clone()
        .or_else(|| args.socket.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    let _ = fs::remove_file(&args.socket);
    let listener = UnixListener::bind(&args.socket)
        .map_err(ctx(format!("binding {}", args.socket.display())))?;

    let (tx, rx) = mpsc::channel();
    let tail = Arc::new(Tail::default());
    let launcher = spawn_launcher(&args, &log_dir, tx, tail.clone())?;
    let launcher_pid = launcher.pid;
    let kill_launcher = move || {
        // The launcher leads its own process group; gone already is fine.
        let _ = ephemera_sys::process::kill_group(launcher_pid as i32, libc::SIGKILL);
    };

    // The agent connects right after starting us; if it never does (it died),
    // do not leave the launcher running forever.
    let connected = Arc::new(AtomicBool::new(false));
    {
        let connected = connected.clone();
        let timeout = Duration::from_millis(args.accept_timeout_ms);
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            if !connected.load(Ordering::SeqCst) {
                eprintln!("ephemera-proxy: no agent connected within {timeout:?}; exiting");
                kill_launcher();
                std::process::exit(3);
            }
        });
    }
    let (conn, _) = listener.accept().map_err(ctx("accepting the agent"))?;
    connected.store(true, Ordering::SeqCst);
    let result = serve(conn, launcher, &rx, &tail);
    kill_launcher();
    result
}

/// Serves the agent on `conn` until it lets go or the launcher is gone.
fn serve(
    conn: UnixStream,
    mut launcher: Launcher,
    rx: &Receiver<Event>,
    tail: &Tail,
) -> Result<(), ProxyError> {
    let launcher_pid = launcher.pid;
    let mut writer = conn.try_clone().map_err(ctx("cloning the agent socket"))?;
    let mut reader = BufReader::new(conn);
    send(&mut writer, &Reply::Hello { launcher_pid })?;
    let mut exited: Option<ExitStatus> = None;
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .map_err(ctx("reading from the agent"))?;
        if n == 0 {
            return Ok(()); // the agent let go of this instance
        }
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("ephemera-proxy: ignoring malformed request: {e}");
                continue;
            }
        };
        let Request::Run {
            activation_id,
            action_name,
            timeout_ms,
            value,
        } = request;
        // Whatever the launcher printed while idle is not an answer to this
        // request; an exit while idle is.
        while let Ok(ev) = rx.try_recv() {
            match ev {
                Event::Exited(st) => exited = Some(st),
                Event::Line(l) => eprintln!(
                    "ephemera-proxy: dropping unsolicited fd 3 output: {}",
                    truncate(&String::from_utf8_lossy(&l), MAX_QUOTE)
                ),
                Event::Fd3Closed | Event::StderrClosed => {}
            }
        }
        if let Some(st) = exited {
            send(&mut writer, &exit_reply(st, rx, tail, true))?;
            return Ok(());
        }
        let deadline_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            + timeout_ms;
        let namespace = action_name.split('/').next().unwrap_or("").to_string();
        let activation = serde_json::json!({
            "value": value,
            "activation_id": activation_id,
            "action_name": action_name,
            "namespace": namespace,
            "deadline": deadline_ms.to_string(),
        });
        let start = Instant::now();
        let wrote = match launcher.stdin.as_mut() {
            Some(stdin) => writeln!(stdin, "{activation}").and_then(|_| stdin.flush()),
            None => Err(io::Error::from(io::ErrorKind::BrokenPipe)),
        };
        if wrote.is_err() {
            // The launcher is gone; its exit status is on its way.
            let reply = match wait_exit(rx, Duration::from_secs(2)) {
                Some(st) => exit_reply(st, rx, tail, true),
                None => Reply::Exited {
                    code: None,
                    signal: None,
                    stderr_tail: tail.text(),
                    idle: true,
                },
            };
            send(&mut writer, &reply)?;
            return Ok(());
        }
        let deadline = start + Duration::from_millis(timeout_ms);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(Event::Line(l)) => {
                    let duration_us = start.elapsed().as_micros() as u64;
                    let reply = match serde_json::from_slice::<serde_json::Value>(&l) {
                        Ok(result) => Reply::Result {
                            result,
                            duration_us,
                        },
                        Err(_) => Reply::NonJson {
                            output: truncate(&String::from_utf8_lossy(&l), MAX_QUOTE).to_string(),
                            duration_us,
                        },
                    };
                    send(&mut writer, &reply)?;
                    break;
                }
                Ok(Event::Exited(st)) => {
                    send(&mut writer, &exit_reply(st, rx, tail, false))?;
                    return Ok(());
                }
                Ok(Event::Fd3Closed | Event::StderrClosed) => continue,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = ephemera_sys::process::kill_group(launcher_pid as i32, libc::SIGKILL);
                    let _ = wait_exit(rx, Duration::from_secs(2));
                    send(
                        &mut writer,
                        &Reply::Timeout {
                            timeout_ms,
                            stderr_tail: tail.text(),
                        },
                    )?;
                    return Ok(());
                }
                Err(RecvTimeoutError::Disconnected) => {
                    send(
                        &mut writer,
                        &Reply::Exited {
                            code: None,
                            signal: None,
                            stderr_tail: tail.text(),
                            idle: false,
                        },
                    )?;
                    return Ok(());
                }
            }
        }
    }
}

/// Writes one reply line to the agent.
fn send(w: &mut UnixStream, reply: &Reply) -> Result<(), ProxyError> {
    let mut line = serde_json::to_vec(reply).map_err(|e| ProxyError::Io {
        what: "encoding a reply".into(),
        source: io::Error::other(e),
    })?;
    line.push(b'\n');
    w.write_all(&line).map_err(ctx("writing to the agent"))
}
