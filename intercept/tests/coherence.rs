//! One file for every process (issue 11's data-loss cases as regression
//! tests): each Python scenario runs in the tier and in a plain directory
//! without the preload; what it prints and the files it leaves must agree.

mod common;

use common::{ok, tiered};
use ephemera_control_block::{ControlBlock, Mode};
use std::process::Command;

/// Runs `script DIR [CONTROL]` with Python, in the tier (under `env`) and
/// outside it; returns both stdouts after checking the trees agree.
fn both_ways(script: &str, env: &[(&str, &str)], control: bool) -> (String, String) {
    run_both(script, env, control, true)
}

/// [`both_ways`], comparing the trees only when `same_tree`.
fn run_both(
    script: &str,
    env: &[(&str, &str)],
    control: bool,
    same_tree: bool,
) -> (String, String) {
    let tier = common::tempdir().unwrap();
    let plain = common::tempdir().unwrap();
    let cdir = common::tempdir().unwrap();
    let cpath = cdir.path().join("control");
    let mut cmd = tiered("python3", tier.path());
    cmd.arg("-c").arg(script).arg(tier.path());
    if control {
        ControlBlock::create(&cpath, 32 << 20, Mode::Adaptive).unwrap();
        cmd.env("EPHEMERA_CONTROL", &cpath).arg(&cpath);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let inside = String::from_utf8(ok(&mut cmd).stdout).unwrap();
    let mut plain_cmd = Command::new("python3");
    plain_cmd
        .env_remove("LD_PRELOAD")
        .arg("-c")
        .arg(script)
        .arg(plain.path());
    if control {
        plain_cmd.arg("-");
    }
    let outside = String::from_utf8(ok(&mut plain_cmd).stdout).unwrap();
    if same_tree {
        let (a, b) = (common::tree(tier.path()), common::tree(plain.path()));
        let sizes = |t: &std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>| {
            t.iter()
                .map(|(k, v)| (k.clone(), v.len()))
                .collect::<Vec<_>>()
        };
        assert!(
            a == b,
            "trees differ: {:?} vs {:?}; inside printed:\n{inside}\noutside printed:\n{outside}",
            sizes(&a),
            sizes(&b)
        );
    }
    (inside, outside)
}

/// Process B (started before A writes, so no fork syncs anything) opens a
/// file A has open in memory: it must see A's 100 bytes, not the
/// reservation, and its appends must survive A's close.
const TWO_PROCESSES: &str = r#"
import os, subprocess, sys
p = os.path.join(sys.argv[1], "f")
b = subprocess.Popen([sys.executable, "-c", """
import os, sys
p = sys.argv[1]
sys.stdin.readline()
print("B stat", os.stat(p).st_size, flush=True)
fb = os.open(p, os.O_WRONLY | os.O_APPEND)
os.write(fb, b"b" * 4096)
print("B fstat", os.fstat(fb).st_size, flush=True)
os.close(fb)
""", p], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
with open(p, "wb") as f:
    f.write(b"y" * (80 << 10))
fa = os.open(p, os.O_RDWR)  # 80 KiB: mapped
os.ftruncate(fa, 0)  # in memory: the kernel size keeps 80 KiB reserved
os.write(fa, b"a" * 100)
print("A fstat", os.fstat(fa).st_size)
b.stdin.write("go\n"); b.stdin.flush()
print(b.stdout.readline().strip()); print(b.stdout.readline().strip())
assert b.wait() == 0
print("A fstat after B", os.fstat(fa).st_size)
os.write(fa, b"c" * 10)
print("A pread", os.pread(fa, 8, 4190))
os.close(fa)
print("final", os.stat(p).st_size)
"#;

#[test]
fn a_second_process_sees_the_logical_size_and_its_appends_survive() {
    for mode in ["memory", "adaptive"] {
        let (inside, outside) = both_ways(TWO_PROCESSES, &[("EPHEMERA_MODE", mode)], false);
        assert_eq!(inside, outside, "mode {mode}");
        assert!(inside.contains("B stat 100\n") && inside.contains("final 4196\n"));
    }
}

/// Waits (bounded) until the adapter has evicted an open file: the control
/// block's `Evictions` word grows. 24 MiB of other memory in a 32 MiB limit.
const EVICT: &str = r#"
import os, sys, time, struct
d, control = sys.argv[1], sys.argv[2]
p = os.path.join(d, "f")
def evictions():
    if control == "-":
        return 1
    with open(control, "rb") as c:
        c.seek(13 * 8)
        return struct.unpack("<Q", c.read(8))[0]
def wait_evicted():
    deadline = time.monotonic() + 20
    while evictions() == 0:
        assert time.monotonic() < deadline, "no eviction within 20 s"
        time.sleep(0.01)
# A file opened at 80 KiB is mapped; cut to 0 in memory, its kernel size
# keeps the 80 KiB as reservation: then 100 B are written, the state the
# issue's cases start from (kernel size larger than the logical size).
with open(p, "wb") as f:
    f.write(b"y" * (80 << 10))
fd = os.open(p, os.O_RDWR)
os.ftruncate(fd, 0)
os.write(fd, b"x" * 100)
ballast = bytearray(24 << 20)
for i in range(0, len(ballast), 4096):
    ballast[i] = 1
wait_evicted()
"#;

#[test]
fn an_evicted_file_is_handed_back_at_exit_fork_and_system() {
    let env = [
        ("EPHEMERA_MODE", "adaptive"),
        ("EPHEMERA_MEM_LIMIT", "32MiB"),
    ];
    // Exit without closing.
    let (i, o) = both_ways(&format!("{EVICT}\nprint('left open')"), &env, true);
    assert_eq!(i, o);
    // Fork: the child writes 10 B through the shared fd, then the parent.
    let fork = format!(
        "{EVICT}
pid = os.fork()
if pid == 0:
    os.write(fd, b'c' * 10)
    os._exit(0)
os.waitpid(pid, 0)
os.write(fd, b'p' * 10)
print('size', os.fstat(fd).st_size)"
    );
    let (i, o) = both_ways(&fork, &env, true);
    assert_eq!(i, o);
    assert!(i.contains("size 120"), "{i}");
    // A child without the preload looks at the file.
    let system = format!(
        "{EVICT}
sys.stdout.flush()
os.system('env -u LD_PRELOAD sh -c \"wc -c < ' + p + '\"')"
    );
    let (i, o) = both_ways(&system, &env, true);
    assert_eq!(i, o);
    assert_eq!(i.trim(), "100");
}

/// Two processes insert into one SQLite database (locks taken by SQLite
/// through `fcntl`) while both keep it open; every row must be there (the
/// database's bytes depend on the interleaving, so only answers compare).
const SQLITE: &str = r#"
import os, sqlite3, subprocess, sys
db = os.path.join(sys.argv[1], "t.db")
c = sqlite3.connect(db, timeout=30)
c.execute("create table t(w, i)")
c.commit()
worker = """
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=30)
for i in range(300):
    c.execute("insert into t values(?, ?)", (sys.argv[2], i))
    c.commit()
"""
ps = [subprocess.Popen([sys.executable, "-c", worker, db, str(w)]) for w in range(2)]
for i in range(300):
    c.execute("insert into t values(?, ?)", ("main", i))
    c.commit()
assert all(p.wait() == 0 for p in ps)
print(c.execute("select w, count(*) from t group by w order by w").fetchall())
print(c.execute("pragma integrity_check").fetchone())
c.close()
"#;

#[test]
fn sqlite_from_three_processes_keeps_every_row() {
    let (i, o) = run_both(SQLITE, &[("EPHEMERA_MODE", "memory")], false, false);
    assert_eq!(i, o);
    assert!(i.contains("('0', 300), ('1', 300), ('main', 300)"), "{i}");
}
