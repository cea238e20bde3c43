//! Memory limits: the tier inside a 64 MiB memory cgroup finishes a
//! workload of two 48 MiB files (written, then randomly re-read and
//! checked), because mapped file pages stay reclaimable; a control block's
//! limit makes the adapter evict, raise the safeguard and record the peak.
//! The cgroup test is skipped when no memory cgroup can be created (not
//! root, or no memory controller).

mod common;

use common::{ok, tiered};
use ephemera_control_block::{ControlBlock, Mode};
use ephemera_sys::scoped::ScopedCgroup;

#[test]
fn two_48mib_files_fit_through_a_64mib_cgroup() {
    let Some(cg) = ScopedCgroup::create("ephemera-test", 64 << 20) else {
        eprintln!("no memory cgroup could be created: skipped");
        return;
    };
    let tier = common::tempdir().unwrap();
    let mut cmd = cg.command(env!("CARGO_BIN_EXE_tier-bench")).unwrap();
    cmd.env("LD_PRELOAD", common::so_path())
        .env("EPHEMERA_TIER_DIR", tier.path())
        .env_remove("EPHEMERA_CONTROL")
        .env_remove("EPHEMERA_MODE")
        .env_remove("EPHEMERA_MEM_LIMIT")
        .args(["worker", "twofiles"])
        .arg(tier.path())
        .args([(48u64 << 20).to_string(), "20000".into()]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "the workload did not finish in the tier: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_control_block_limit_drives_eviction_and_the_safeguard() {
    let tier = common::tempdir().unwrap();
    let ctl_dir = common::tempdir().unwrap();
    let ctl = ctl_dir.path().join("control");
    let block = ControlBlock::create(&ctl, 48 << 20, Mode::Adaptive).unwrap();
    // Writes 40 files of 2 MiB (80 MiB against a 48 MiB limit), closing each:
    // closed files stay mapped until evicted to make room. Then the process
    // itself grows near its limit (a 28 MiB buffer) and waits (bounded) for
    // the adapter to have raised the safeguard, reading the shared counters.
    let script = r#"
import os, sys, time
from pathlib import Path
data = os.urandom(2 << 20)
for i in range(40):
    Path(f'f{i}').write_bytes(data)
    assert Path(f'f{i}').read_bytes() == data
hog = b'x' * (28 << 20)
for _ in range(500):
    ctl = open(sys.argv[1], 'rb').read()
    words = [int.from_bytes(ctl[i * 8:i * 8 + 8], 'little') for i in range(20)]
    if words[13] > 0 and words[19] > 0:
        break
    time.sleep(0.01)
for i in range(40):
    assert Path(f'f{i}').read_bytes() == data
"#;
    ok(tiered("python3", tier.path())
        .current_dir(tier.path())
        .env("EPHEMERA_CONTROL", &ctl)
        .arg("-c")
        .arg(script)
        .arg(&ctl));
    let c = block.counters();
    assert!(c.evictions > 0, "no evictions under a 48 MiB limit: {c:?}");
    assert!(c.safeguard && c.peak_native > 0, "{c:?}");
    assert!(c.files_mapped >= 40, "{c:?}");
    assert_eq!(c.mapped_bytes, 0, "{c:?}");
    for i in 0..40 {
        assert_eq!(
            std::fs::metadata(tier.path().join(format!("f{i}")))
                .unwrap()
                .len(),
            2 << 20
        );
    }
    // The limit is honoured when the agent changes it at run time.
    block.set_limit(1 << 30);
    block.clear_safeguard();
    ok(tiered("python3", tier.path())
        .current_dir(tier.path())
        .env("EPHEMERA_CONTROL", &ctl)
        .args([
            "-c",
            "from pathlib import Path; Path('big').write_bytes(b'z' * (8 << 20))",
        ]));
    assert!(!block.counters().safeguard, "{:?}", block.counters());
}

/// A file that outgrows the budget moves to the kernel path while it grows,
/// before the adapter would have to evict (and write back) it: mapped only
/// up to the budget (the limit's low-water mark less the process's own
/// memory), then handed over once, never evicted, every byte intact.
#[test]
fn a_file_outgrowing_the_budget_is_handed_to_the_kernel_not_evicted() {
    let tier = common::tempdir().unwrap();
    let ctl_dir = common::tempdir().unwrap();
    let ctl = ctl_dir.path().join("control");
    let block = ControlBlock::create(&ctl, 64 << 20, Mode::Adaptive).unwrap();
    let script = r#"
import hashlib, os
block = bytes(range(256)) * 32
with open('big', 'wb') as f:
    for i in range(96 << 7):
        f.write(block)
h = hashlib.sha256()
with open('big', 'rb') as f:
    while chunk := f.read(1 << 20):
        h.update(chunk)
print(h.hexdigest())
"#;
    let out = ok(tiered("python3", tier.path())
        .current_dir(tier.path())
        .env("EPHEMERA_CONTROL", &ctl)
        .arg("-c")
        .arg(script));
    let mut expect = sha2_of_pattern(96 << 20);
    expect.push('\n');
    assert_eq!(String::from_utf8_lossy(&out.stdout), expect);
    assert_eq!(
        std::fs::metadata(tier.path().join("big")).unwrap().len(),
        96 << 20
    );
    let c = block.counters();
    assert_eq!(c.files_mapped, 1, "{c:?}");
    assert_eq!(c.fallbacks, 1, "handed over once: {c:?}");
    assert_eq!(c.evictions, 0, "never evicted: {c:?}");
    assert!(
        c.bytes_written > 8 << 20 && c.bytes_written < 52 << 20,
        "written in memory up to the budget (80 % of 64 MiB less its own memory): {c:?}"
    );
    assert!(!c.safeguard, "{c:?}");
    assert_eq!(c.mapped_bytes, 0, "{c:?}");
}

/// SHA-256 (hex) of `len` bytes of the repeating 0..=255 pattern.
fn sha2_of_pattern(len: usize) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import hashlib; print(hashlib.sha256(bytes(range(256)) * ({len} // 256)).hexdigest(), end='')"
        ))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn an_open_file_evicted_by_the_adapter_stays_correct_and_moves_to_the_kernel() {
    let tier = common::tempdir().unwrap();
    let ctl_dir = common::tempdir().unwrap();
    let ctl = ctl_dir.path().join("control");
    let trace = ctl_dir.path().join("trace");
    let block = ControlBlock::create(&ctl, 64 << 20, Mode::Adaptive).unwrap();
    // A 20 MiB file stays open in the tier while the process grows a 36 MiB
    // buffer: the adapter thread, which holds none of the program's fds,
    // must page the open file out; the next calls on it go to the kernel.
    let script = r#"
import os, sys, time
data = os.urandom(1 << 20)
f = open('big', 'w+b', buffering=0)
for _ in range(20):
    f.write(data)
hog = bytearray(36 << 20)
for i in range(0, len(hog), 4096):
    hog[i] = 1
for _ in range(500):
    ctl = open(sys.argv[1], 'rb').read()
    if int.from_bytes(ctl[13 * 8:14 * 8], 'little') > 0:
        break
    time.sleep(0.01)
else:
    sys.exit('the adapter never evicted')
f.seek(0)
for i in range(20):
    assert f.read(1 << 20) == data, i
f.write(data)
assert os.fstat(f.fileno()).st_size == 21 << 20
f.close()
"#;
    ok(tiered("python3", tier.path())
        .current_dir(tier.path())
        .env("EPHEMERA_CONTROL", &ctl)
        .env("EPHEMERA_TRACE", &trace)
        .arg("-c")
        .arg(script)
        .arg(&ctl));
    let c = block.counters();
    assert!(c.evictions >= 1, "{c:?}");
    assert_eq!(c.mapped_bytes, 0, "{c:?}");
    assert_eq!(
        std::fs::metadata(tier.path().join("big")).unwrap().len(),
        21 << 20
    );
    let log = std::fs::read_to_string(&trace).unwrap();
    let evicted = log.find("\nevict ").expect("an evict event");
    assert!(
        log[evicted..].contains("\nhandover "),
        "the program's next call handed the file over:\n{log}"
    );
}
