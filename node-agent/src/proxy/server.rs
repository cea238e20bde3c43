//! The proxy process: starts the launcher, then serves the agent's requests
//! on a unix socket (see the protocol in [`super`]).
//!
//! Plain std and threads, no async runtime: one thread each reads the
//! launcher's fd 3, stdout and stderr, one waits for it to exit, and the main
//! thread serves the socket, so every event reaches the main thread through
//! one channel and a timeout is just `recv_timeout`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{truncate, Reply, Request, MAX_QUOTE, STDERR_TAIL};

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

fn ctx(what: impl Into<String>) -> impl FnOnce(io::Error) -> ProxyError {
    let what = what.into();
    move |source| ProxyError::Io { what, source }
}

/// What the reader and waiter threads tell the main thread.
#[derive(Debug)]
enum Event {
    /// One line the launcher wrote on fd 3 (without the newline).
    Line(Vec<u8>),
    /// The launcher closed fd 3.
    Fd3Closed,
    /// The launcher's stderr reached end of file.
    StderrClosed,
    /// The launcher exited.
    Exited(ExitStatus),
}

/// The last bytes of the launcher's stderr.
#[derive(Debug, Default)]
struct Tail {
    /// The bytes.
    buf: Mutex<Vec<u8>>,
    /// Set once stderr reached end of file: the tail is complete.
    closed: AtomicBool,
}

impl Tail {
    fn push(&self, data: &[u8]) {
        let Ok(mut buf) = self.buf.lock() else { return };
        buf.extend_from_slice(data);
        if buf.len() > STDERR_TAIL {
            let cut = buf.len() - STDERR_TAIL;
            buf.drain(..cut);
        }
    }

    fn text(&self) -> String {
        match self.buf.lock() {
            Ok(buf) => String::from_utf8_lossy(&buf)
                .replace("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n", "")
                .trim()
                .to_string(),
            Err(_) => String::new(),
        }
    }
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

fn spawn_launcher(
    args: &ProxyArgs,
    log_dir: &std::path::Path,
    tx: Sender<Event>,
    tail: Arc<Tail>,
) -> Result<Launcher, ProxyError> {
    let (read_end, write_end) =
        ephemera_sys::process::pipe().map_err(ctx("creating the fd 3 pipe"))?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&args.cmd)
        .current_dir(&args.dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("EPHEMERA_TIER_DIR", &args.tier_dir)
        .env("TMPDIR", &args.tier_dir)
        .env("EPHEMERA_CONTROL", &args.control)
        .env("EPHEMERA_MODE", &args.mode)
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("LD_PRELOAD");
    if let Some(limit) = args.mem_limit {
        cmd.env("EPHEMERA_MEM_LIMIT", limit.to_string());
    }
    if let Some(so) = &args.preload {
        cmd.env("LD_PRELOAD", so);
    }
    if let Some(bin) = &args.bin_dir {
        let old = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        let mut path = bin.clone().into_os_string();
        path.push(":");
        path.push(old);
        cmd.env("PATH", path);
    }
    let wfd = write_end.as_raw_fd();
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (dup2, fcntl, setpgid, prctl); it touches
    // no memory shared with other threads and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if wfd == 3 {
                let flags = libc::fcntl(3, libc::F_GETFD);
                if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            } else if libc::dup2(wfd, 3) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setpgid(0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // The proxy spawns from its main thread, which lives as long as
            // the proxy: the launcher dies with it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(ctx(format!("starting launcher `/bin/sh -c {}`", args.cmd)))?;
    drop(write_end);
    let pid = child.id();

    let open_log = |name: &str| {
        let path = log_dir.join(name);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(ctx(format!("opening {}", path.display())))
    };
    let stdout_log = open_log("stdout.log")?;
    let stderr_log = open_log("stderr.log")?;

    if let Some(out) = child.stdout.take() {
        std::thread::spawn(move || copy_log(out, stdout_log, None, None));
    }
    if let Some(err) = child.stderr.take() {
        let tx = tx.clone();
        std::thread::spawn(move || copy_log(err, stderr_log, Some(&tail), Some(tx)));
    }
    let stdin = child.stdin.take();
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(File::from(read_end));
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(Event::Fd3Closed);
                        return;
                    }
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        if tx.send(Event::Line(line)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    std::thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = tx.send(Event::Exited(status));
        }
    });
    Ok(Launcher { pid, stdin })
}

/// The launcher as the main thread sees it.
#[derive(Debug)]
struct Launcher {
    /// Its pid (also its process group id).
    pid: u32,
    /// Its stdin, where activations go.
    stdin: Option<std::process::ChildStdin>,
}

fn copy_log(mut from: impl Read, mut to: File, tail: Option<&Tail>, closed: Option<Sender<Event>>) {
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let _ = to.write_all(&buf[..n]);
                if let Some(t) = tail {
                    t.push(&buf[..n]);
                }
            }
        }
    }
    if let Some(t) = tail {
        t.closed.store(true, Ordering::SeqCst);
    }
    if let Some(tx) = closed {
        let _ = tx.send(Event::StderrClosed);
    }
}

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

/// Waits for the launcher's exit event, dropping anything else.
fn wait_exit(rx: &Receiver<Event>, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::Exited(st)) => return Some(st),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
}

/// The reply for an exited launcher, once its stderr is drained (bounded wait).
fn exit_reply(st: ExitStatus, rx: &Receiver<Event>, tail: &Tail, idle: bool) -> Reply {
    let deadline = Instant::now() + Duration::from_millis(500);
    while !tail.closed.load(Ordering::SeqCst) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::StderrClosed) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    Reply::Exited {
        code: st.code(),
        signal: st.signal(),
        stderr_tail: tail.text(),
        idle,
    }
}

fn send(w: &mut UnixStream, reply: &Reply) -> Result<(), ProxyError> {
    let mut line = serde_json::to_vec(reply).map_err(|e| ProxyError::Io {
        what: "encoding a reply".into(),
        source: io::Error::other(e),
    })?;
    line.push(b'\n');
    w.write_all(&line).map_err(ctx("writing to the agent"))
}
