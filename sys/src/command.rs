//! Running a program with a deadline: the image builder (`xtask`) and the
//! cluster tests call docker, cargo and host tools this way, so no external
//! command can hang them, and a failure names the command and what it said.
//!
//! The child runs in a process group of its own; at the deadline the whole
//! group is killed (a `cargo build` takes its `rustc`s with it, a
//! `docker-compose` its helpers). Output is always captured; [`run_echoing`]
//! also hands each line to the caller as it comes, for long builds. The
//! output is read to its end once the child exits: a program that leaves a
//! daemon holding its stdout (none of ours does) would hold the call too.

use std::io::{self, BufRead, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Lines of output kept in a [`CommandError::Failed`] message.
const TAIL_LINES: usize = 60;

/// Why a command did not succeed. Each names the command as `{cmd:?}`
/// prints it (working directory, changed environment, program, arguments).
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started (not installed, not executable).
    #[error("{command}: cannot start: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// It ran past its deadline and was killed with its process group.
    #[error("{command}: killed after {after:?}")]
    TimedOut { command: String, after: Duration },
    /// Waiting for it failed.
    #[error("{command}: wait failed: {source}")]
    Wait {
        command: String,
        #[source]
        source: io::Error,
    },
    /// It exited unsuccessfully; the message ends with the last lines of
    /// its stdout and stderr.
    #[error("{command}: {status}\n{}", tail(.stdout, .stderr))]
    Failed {
        command: String,
        status: ExitStatus,
        stdout: String,
        stderr: String,
    },
}

/// Runs `cmd` (stdin closed, output captured) and waits at most `timeout`;
/// whatever its exit status.
pub fn output(cmd: &mut Command, timeout: Duration) -> Result<Output, CommandError> {
    wait_with_deadline(cmd, timeout, None)
}

/// Like [`output`], but an unsuccessful exit is a [`CommandError::Failed`].
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output, CommandError> {
    let out = output(cmd, timeout)?;
    check(cmd, out)
}

/// Like [`run`], returning stdout as text.
pub fn stdout(cmd: &mut Command, timeout: Duration) -> Result<String, CommandError> {
    Ok(String::from_utf8_lossy(&run(cmd, timeout)?.stdout).into_owned())
}

/// Like [`run`], handing every line of stdout and stderr to `echo` as it
/// comes (a long build shows its progress).
pub fn run_echoing(
    cmd: &mut Command,
    timeout: Duration,
    echo: &(dyn Fn(&str) + Sync),
) -> Result<Output, CommandError> {
    let out = wait_with_deadline(cmd, timeout, Some(echo))?;
    check(cmd, out)
}

fn check(cmd: &Command, out: Output) -> Result<Output, CommandError> {
    if out.status.success() {
        return Ok(out);
    }
    Err(CommandError::Failed {
        command: format!("{cmd:?}"),
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn wait_with_deadline(
    cmd: &mut Command,
    timeout: Duration,
    echo: Option<&(dyn Fn(&str) + Sync)>,
) -> Result<Output, CommandError> {
    let command = format!("{cmd:?}");
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    let deadline = Instant::now() + timeout;
    std::thread::scope(|scope| {
        let out = collect(scope, child.stdout.take().map(|p| Box::new(p) as _), echo);
        let err = collect(scope, child.stderr.take().map(|p| Box::new(p) as _), echo);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    // The group our child leads: it and whatever it started.
                    let _ = crate::process::kill_group(child.id() as i32, libc::SIGKILL);
                    let _ = child.wait();
                    return Err(CommandError::TimedOut {
                        command,
                        after: timeout,
                    });
                }
                Err(source) => return Err(CommandError::Wait { command, source }),
            }
        };
        Ok(Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        })
    })
}

/// Reads `pipe` to its end on a thread of `scope`, echoing lines if asked.
fn collect<'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    pipe: Option<Box<dyn Read + Send>>,
    echo: Option<&'scope (dyn Fn(&str) + Sync)>,
) -> std::thread::ScopedJoinHandle<'scope, Vec<u8>> {
    scope.spawn(move || {
        let mut buf = Vec::new();
        let Some(pipe) = pipe else { return buf };
        match echo {
            None => {
                let mut pipe = pipe;
                let _ = pipe.read_to_end(&mut buf);
            }
            Some(echo) => {
                let mut reader = io::BufReader::new(pipe);
                let mut line = Vec::new();
                while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                    echo(String::from_utf8_lossy(&line).trim_end_matches('\n'));
                    buf.append(&mut line);
                }
            }
        }
        buf
    })
}

/// The last [`TAIL_LINES`] lines of `stdout` then `stderr`.
fn tail(stdout: &str, stderr: &str) -> String {
    let lines: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    let skip = lines.len().saturating_sub(TAIL_LINES);
    let mut text = lines[skip..].join("\n");
    if skip > 0 {
        text = format!("[… {skip} lines before]\n{text}");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_reports_failure_with_stderr() {
        let out = stdout(
            Command::new("sh").args(["-c", "echo hi"]),
            Duration::from_secs(10),
        );
        assert_eq!(out.unwrap(), "hi\n");
        let err = run(
            Command::new("sh").args(["-c", "echo oops >&2; exit 3"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"sh\"") && text.contains("oops"), "{text}");
        assert!(matches!(err, CommandError::Failed { .. }));
    }

    #[test]
    fn a_command_past_its_deadline_is_killed_with_its_children() {
        let t0 = Instant::now();
        let err = run(
            Command::new("sh").args(["-c", "sleep 30 & sleep 30"]),
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert!(matches!(err, CommandError::TimedOut { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn echoes_every_line() {
        let seen = std::sync::Mutex::new(Vec::new());
        let out = run_echoing(
            Command::new("sh").args(["-c", "echo a; echo b >&2; echo c"]),
            Duration::from_secs(10),
            &|l| seen.lock().unwrap().push(l.to_string()),
        )
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(out.stdout, b"a\nc\n");
    }

    #[test]
    fn a_missing_program_cannot_start() {
        let err = output(
            &mut Command::new("/no/such/program"),
            Duration::from_secs(5),
        );
        assert!(matches!(err, Err(CommandError::Spawn { .. })));
    }
}
