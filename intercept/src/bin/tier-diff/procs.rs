//! The multi-process differential: one driver, several worker processes.
//!
//! The driver owns the interleaving: it picks, step by step, which worker
//! applies the next operation (a seed the worker turns into one operation
//! on both directories, compared at once) and waits for the answer, so the
//! tier and the plain directory see the same operations in the same order
//! from the same processes. Besides the single-process operations, a
//! worker forks children that act on the fds they share with it (the
//! offset and the file are shared, as after any `fork`), and runs shell
//! commands with and without the preload that read, measure and append to
//! the files.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use ephemera_sys::rng::Rng;

use super::{step, Side, NAMES};

/// One worker as the driver sees it.
struct Worker {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl Worker {
    fn start(inside: &str, outside: &str) -> Result<Worker, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["--worker", inside, outside])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting a worker: {e}"))?;
        let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("worker pipes missing".into());
        };
        Ok(Worker {
            child,
            to,
            from: BufReader::new(from),
        })
    }

    /// Sends one command line and returns the answer line.
    fn ask(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.to, "{line}").map_err(|e| format!("worker gone: {e}"))?;
        self.to.flush().map_err(|e| format!("worker gone: {e}"))?;
        let mut answer = String::new();
        match self.from.read_line(&mut answer) {
            Ok(0) | Err(_) => Err("worker died".into()),
            Ok(_) => Ok(answer.trim_end().to_string()),
        }
    }
}

/// Runs `ops` steps over `procs` workers; the first mismatch, described.
pub fn drive(seed: u64, ops: u64, procs: usize, inside: &str, outside: &str) -> Result<(), String> {
    let mut workers = (0..procs)
        .map(|_| Worker::start(inside, outside))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rng = Rng::new(seed);
    let mut result = Ok(());
    for i in 0..ops {
        let w = rng.below(procs as u64) as usize;
        let op = rng.next_u64();
        match workers[w].ask(&format!("op {op}")) {
            Ok(a) if a == "ok" => {}
            Ok(a) => {
                result = Err(format!("seed {seed} op {i} (worker {w}): {a}"));
                break;
            }
            Err(e) => {
                result = Err(format!("seed {seed} op {i} (worker {w}): {e}"));
                break;
            }
        }
    }
    for w in &mut workers {
        let _ = w.ask("close");
        let _ = writeln!(w.to, "quit");
        let _ = w.child.wait();
    }
    result
}

/// The worker: `--worker INSIDE OUTSIDE`, commands on stdin.
pub fn worker(args: &[String]) -> std::process::ExitCode {
    let (Some(inside), Some(outside)) = (args.first(), args.get(1)) else {
        return std::process::ExitCode::from(2);
    };
    let mut a = Side {
        base: inside.clone(),
        fds: [-1; super::SLOTS],
    };
    let mut b = Side {
        base: outside.clone(),
        fds: [-1; super::SLOTS],
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let answer = match line.split_once(' ') {
            Some(("op", seed)) => match seed.parse::<u64>() {
                Ok(seed) => one(&mut Rng::new(seed), &mut a, &mut b),
                Err(e) => Err(format!("bad seed: {e}")),
            },
            _ if line == "close" => {
                a.close_all();
                b.close_all();
                Ok(())
            }
            _ => break,
        };
        let text = match answer {
            Ok(()) => "ok".to_string(),
            Err(m) => m.replace('\n', " | "),
        };
        if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    std::process::ExitCode::SUCCESS
}

/// One operation: mostly the single-process ones, sometimes a fork or a
/// shell command.
fn one(rng: &mut Rng, a: &mut Side, b: &mut Side) -> Result<(), String> {
    match rng.below(100) {
        0..=3 => forked(rng, a, b),
        4..=7 => shell(rng, a, b),
        _ => step(rng, a, b),
    }
}

/// Forks a child that applies a few operations to the fds it shares with
/// this worker, then exits without closing them.
fn forked(rng: &mut Rng, a: &mut Side, b: &mut Side) -> Result<(), String> {
    let n = 1 + rng.below(4);
    let seed = rng.next_u64();
    // SAFETY: the worker is single-threaded; the child only runs plain
    // file operations and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err("fork failed".into());
    }
    if pid == 0 {
        let (mut a, mut b) = (a.clone(), b.clone());
        let mut rng = Rng::new(seed);
        let mut code = 0;
        for i in 0..n {
            if let Err(m) = step(&mut rng, &mut a, &mut b) {
                eprintln!("forked child op {i}: {m}");
                code = 1;
                break;
            }
        }
        // SAFETY: leaves the child at once (the hook hands files back).
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is writable.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(format!(
            "fork of {n} ops: a child's operation disagreed (status {status:#x})"
        ))
    }
}

/// Runs a shell command on one name in both directories (with or without
/// the preload) and compares what it printed.
fn shell(rng: &mut Rng, a: &mut Side, b: &mut Side) -> Result<(), String> {
    let name = rng.pick(&NAMES);
    let script = rng.pick(&[
        "wc -c < \"$0\" 2>/dev/null; echo $?",
        "cat \"$0\" 2>/dev/null | cksum; echo $?",
        "printf 'appended by a child\\n' >> \"$0\" 2>/dev/null; echo $?",
        "ls -l \"$0\" 2>/dev/null | awk '{print $5}'",
    ]);
    let preload = rng.chance(50);
    let run = |s: &Side| -> Result<Vec<u8>, String> {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script).arg(format!("{}/{name}", s.base));
        if !preload {
            c.env_remove("LD_PRELOAD");
        }
        c.stderr(Stdio::null())
            .output()
            .map(|o| o.stdout)
            .map_err(|e| format!("running sh: {e}"))
    };
    let (x, y) = (run(a)?, run(b)?);
    if x == y {
        Ok(())
    } else {
        Err(format!(
            "sh -c '{script}' {name} (preload {preload}): inside {:?} outside {:?}",
            String::from_utf8_lossy(&x),
            String::from_utf8_lossy(&y)
        ))
    }
}
