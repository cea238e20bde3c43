//! Memory limits: the tier inside a 64 MiB memory cgroup finishes a
//! workload of two 48 MiB files (written, then randomly re-read and
//! checked), because mapped file pages stay reclaimable; a control block's
//! limit makes the adapter evict, raise the safeguard and record the peak.
//! The cgroup test is skipped when no memory cgroup can be created (not
//! root, or no memory controller).

mod common;

use common::{ok, tiered};
use ephemera_control_block::{ControlBlock, Mode};
use std::path::{Path, PathBuf};

/// A memory cgroup for one test, removed on drop.
struct MemCgroup(PathBuf);

impl MemCgroup {
    fn create(limit: u64) -> Option<MemCgroup> {
        let name = format!("ephemera-test-{}", std::process::id());
        let v1 = Path::new("/sys/fs/cgroup/memory");
        let (dir, file) = if v1.join("memory.limit_in_bytes").exists() {
            (v1.join(&name), "memory.limit_in_bytes")
        } else {
            (Path::new("/sys/fs/cgroup").join(&name), "memory.max")
        };
        std::fs::create_dir(&dir).ok()?;
        let cg = MemCgroup(dir);
        std::fs::write(cg.0.join(file), limit.to_string()).ok()?;
        Some(cg)
    }
}

impl Drop for MemCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn two_48mib_files_fit_through_a_64mib_cgroup() {
    let Some(cg) = MemCgroup::create(64 << 20) else {
        eprintln!("no memory cgroup could be created: skipped");
        return;
    };
    let tier = tempfile::tempdir().unwrap();
    let mut cmd = tiered("sh", tier.path());
    cmd.arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"",
            cg.0.display()
        ))
        .arg(env!("CARGO_BIN_EXE_tier-bench"))
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
    let tier = tempfile::tempdir().unwrap();
    let ctl_dir = tempfile::tempdir().unwrap();
    let ctl = ctl_dir.path().join("control");
    let block = ControlBlock::create(&ctl, 16 << 20, Mode::Adaptive).unwrap();
    // Writes 40 files of 2 MiB (80 MiB against a 16 MiB limit), closing each:
    // closed files stay mapped until the adapter evicts them. Then waits
    // (bounded) for the adapter to have acted, reading the shared counters.
    let script = r#"
import os, sys, time
from pathlib import Path
data = os.urandom(2 << 20)
for i in range(40):
    Path(f'f{i}').write_bytes(data)
    assert Path(f'f{i}').read_bytes() == data
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
    assert!(c.evictions > 0, "no evictions under a 16 MiB limit: {c:?}");
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
