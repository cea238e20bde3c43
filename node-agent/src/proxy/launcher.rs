//! The launcher's side of the proxy: the launcher process (`/bin/sh -c
//! CMD` in the code directory, its own process group, fd 3 for results,
//! killed if the proxy dies) and the threads that turn its fd 3, its logs
//! and its exit into [`Event`]s on one channel for the main thread.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::server::{ctx, ProxyArgs, ProxyError};
use super::{Reply, STDERR_TAIL};

/// What the reader and waiter threads tell the main thread.
#[derive(Debug)]
pub(super) enum Event {
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
pub(super) struct Tail {
    /// The bytes.
    buf: Mutex<Vec<u8>>,
    /// Set once stderr reached end of file: the tail is complete.
    closed: AtomicBool,
}

impl Tail {
    /// Appends `data`, keeping only the last `STDERR_TAIL` bytes.
    fn push(&self, data: &[u8]) {
        let Ok(mut buf) = self.buf.lock() else { return };
        buf.extend_from_slice(data);
        if buf.len() > STDERR_TAIL {
            let cut = buf.len() - STDERR_TAIL;
            buf.drain(..cut);
        }
    }

    /// The tail as text, without the action loop's end-of-activation marker.
    pub(super) fn text(&self) -> String {
        match self.buf.lock() {
            Ok(buf) => String::from_utf8_lossy(&buf)
                .replace("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\n", "")
                .trim()
                .to_string(),
            Err(_) => String::new(),
        }
    }
}

/// Starts the launcher and the threads that watch it; every event goes to
/// `tx`, and the end of its stderr to `tail`.
pub(super) fn spawn_launcher(
    args: &ProxyArgs,
    log_dir: &Path,
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
    // The proxy spawns from its main thread, which lives as long as the
    // proxy: the launcher dies with it.
    ephemera_sys::process::launcher_on_exec(&mut cmd, wfd);
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
pub(super) struct Launcher {
    /// Its pid (also its process group id).
    pub(super) pid: u32,
    /// Its stdin, where activations go.
    pub(super) stdin: Option<std::process::ChildStdin>,
}

/// Copies one of the launcher's output streams into its log file (and the
/// stderr tail), then reports that it ended.
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

/// Waits for the launcher's exit event, dropping anything else.
pub(super) fn wait_exit(rx: &Receiver<Event>, within: Duration) -> Option<ExitStatus> {
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
pub(super) fn exit_reply(st: ExitStatus, rx: &Receiver<Event>, tail: &Tail, idle: bool) -> Reply {
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
