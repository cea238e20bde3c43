//! The differential test: `tier-diff` (run under the preload) applies one
//! random sequence of file operations to a directory inside the tier and to
//! one outside it and fails at the first disagreement in return value,
//! errno, bytes, stat fields or listings; then the two final trees must
//! match byte for byte (read here, without the preload), and the counters
//! must show that the tier served the inside half.

mod common;

use common::{counter, read_stats, tiered, tree};

const OPS: &str = "20000";
const SEEDS: [u64; 5] = [1, 2, 3, 4, 5];

fn differential(mode: &str, mem_limit: Option<&str>) {
    for seed in SEEDS {
        let tier = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let stats_dir = tempfile::tempdir().unwrap();
        let stats = stats_dir.path().join("diff.json");
        let mut cmd = tiered(env!("CARGO_BIN_EXE_tier-diff"), tier.path());
        cmd.env("EPHEMERA_MODE", mode)
            .env("EPHEMERA_STATS", &stats)
            .args([
                "--seed",
                &seed.to_string(),
                "--ops",
                OPS,
                "--inside",
                tier.path().to_str().unwrap(),
                "--outside",
                outside.path().to_str().unwrap(),
            ]);
        if let Some(limit) = mem_limit {
            cmd.env("EPHEMERA_MEM_LIMIT", limit);
        }
        let out = cmd.output().expect("run tier-diff");
        assert!(
            out.status.success(),
            "mode {mode} limit {mem_limit:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            tree(tier.path()) == tree(outside.path()),
            "mode {mode} seed {seed}: final trees differ"
        );
        let s = read_stats(&stats);
        assert!(
            counter(&s, "reads") > 100 && counter(&s, "writes") > 100,
            "seed {seed}: {s:?}"
        );
        assert!(counter(&s, "files_mapped") > 10, "seed {seed}: {s:?}");
        assert_eq!(counter(&s, "mapped_bytes"), 0, "seed {seed}: {s:?}");
        if mem_limit.is_some() {
            assert!(counter(&s, "evictions") > 0, "seed {seed}: {s:?}");
        }
    }
}

#[test]
fn memory_mode_agrees_with_the_kernel() {
    differential("memory", None);
}

#[test]
fn adaptive_mode_agrees_with_the_kernel() {
    differential("adaptive", None);
}

/// A limit that leaves the tier a budget (limit less the process's own
/// memory) far below the working set: files move between memory and the
/// kernel path and the adapter evicts while the sequence runs.
#[test]
fn adaptive_mode_under_a_tight_budget_agrees_with_the_kernel() {
    differential("adaptive", Some("8MiB"));
}
