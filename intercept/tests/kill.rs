//! Kill tests: a process writing a tier file is SIGKILLed at a random
//! point; after repair the file must hold what the kernel path would: every
//! acknowledged byte, at most the write in flight beyond it, no zero padding.
//! Repair comes from the agent's side (`ControlFile::repair`) or from the
//! next process of the instance that opens the file.

mod common;

use common::tiered;
use ephemera_control_block::{ControlBlock, ControlFile, Mode};
use ephemera_sys::rng::Rng;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

/// Largest single write of the writer.
const MAX_CHUNK: u64 = 20_000;

/// Grows a file by writes of random size whose bytes are `offset % 251`,
/// printing the total after each; then waits to be killed. `append`: plain
/// `write`s (the tier extends the file with `pwrite`, exactly); `trunc`:
/// each step first `ftruncate`s the file up to the new end, then `pwrite`s
/// the bytes (the tier reserves ahead there: the reservation a kill leaves
/// is what repair must trim).
const WRITER: &str = r#"
import os, sys, random, time
p, seed, style = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = random.Random(seed)
pat = bytes(i % 251 for i in range(1 << 21))
fd = os.open(p, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644)
n = 0
while n < (1 << 21) - 20000:
    k = r.randint(1, 20000)
    if style == "trunc":
        os.ftruncate(fd, n + k)
        os.pwrite(fd, pat[n:n + k], n)
    else:
        os.write(fd, pat[n:n + k])
    n += k
    print(n, flush=True)
time.sleep(60)
"#;

/// Runs the writer until it has acknowledged `acks` writes, kills it, and
/// returns the last acknowledged size.
fn write_and_kill(
    tier: &Path,
    control: &Path,
    (mode, style): (&str, &str),
    seed: u64,
    acks: usize,
) -> u64 {
    let file = tier.join("f");
    let mut child = tiered("python3", tier)
        .env("EPHEMERA_MODE", mode)
        .env("EPHEMERA_CONTROL", control)
        .arg("-c")
        .arg(WRITER)
        .arg(&file)
        .arg(seed.to_string())
        .arg(style)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked = 0u64;
    for _ in 0..acks {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(line) => acked = line.trim().parse().unwrap(),
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines printed before the kill landed are acknowledged too.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
        acked = line.trim().parse().unwrap();
    }
    acked
}

fn check(file: &Path, acked: u64, what: &str) {
    let bytes = std::fs::read(file).unwrap();
    let len = bytes.len() as u64;
    assert!(
        len >= acked && len <= acked + MAX_CHUNK,
        "{what}: {len} bytes after {acked} acknowledged"
    );
    // Acknowledged bytes are the pattern; past them, the write in flight
    // may have extended the file (zeros) before its bytes landed.
    let wrong = |(i, &b): (usize, &u8)| b != (i % 251) as u8 && ((i as u64) < acked || b != 0);
    if let Some(i) = bytes.iter().enumerate().position(wrong) {
        panic!(
            "{what}: byte {i} of {len} is {} (padding?), {acked} acknowledged",
            bytes[i]
        );
    }
}

#[test]
fn sigkill_then_agent_repair_leaves_the_kernel_path_bytes() {
    let mut rng = Rng::new(11);
    let mut padded = 0;
    for round in 0..6 {
        let tier = common::tempdir().unwrap();
        let cdir = common::tempdir().unwrap();
        let control = cdir.path().join("control");
        ControlBlock::create(&control, 0, Mode::Memory).unwrap();
        let mode = if round % 2 == 0 { "memory" } else { "adaptive" };
        let style = if round < 4 { "trunc" } else { "append" };
        let acks = 1 + rng.below(60) as usize;
        let acked = write_and_kill(tier.path(), &control, (mode, style), rng.next_u64(), acks);
        let file = tier.path().join("f");
        let before = std::fs::metadata(&file).unwrap().len();
        if before > acked + MAX_CHUNK {
            padded += 1;
        }
        let agent = ControlFile::open(&control).unwrap();
        // A live owner's file is not touched.
        let spared = agent.repair(tier.path(), |_| true).unwrap();
        assert_eq!(spared.trimmed, 0);
        let r = agent.repair(tier.path(), |_| false).unwrap();
        check(
            &file,
            acked,
            &format!("round {round} ({mode} {style}, {r:?})"),
        );
        let again = agent.repair(tier.path(), |_| false).unwrap();
        assert_eq!(again.trimmed, 0, "a second repair changes nothing");
    }
    // The test would catch the bug: the kill left reservations to trim.
    assert!(padded > 0, "no kill left a padded file");
}

#[test]
fn sigkill_then_the_next_opener_repairs_the_file() {
    let mut rng = Rng::new(12);
    for round in 0..3 {
        let tier = common::tempdir().unwrap();
        let cdir = common::tempdir().unwrap();
        let control = cdir.path().join("control");
        ControlBlock::create(&control, 0, Mode::Memory).unwrap();
        let acks = 1 + rng.below(60) as usize;
        let acked = write_and_kill(
            tier.path(),
            &control,
            ("memory", "trunc"),
            rng.next_u64(),
            acks,
        );
        let file = tier.path().join("f");
        let out = common::ok(
            tiered("python3", tier.path())
                .env("EPHEMERA_CONTROL", &control)
                .arg("-c")
                .arg("import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); print(os.fstat(fd).st_size)")
                .arg(&file),
        );
        let seen: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert_eq!(
            seen,
            std::fs::metadata(&file).unwrap().len(),
            "round {round}"
        );
        check(&file, acked, &format!("round {round}"));
    }
}
