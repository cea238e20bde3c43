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
        diff_run(mode, mem_limit, seed, OPS, 1);
    }
}

/// One `tier-diff` run: `procs` processes (1: the driver alone).
/// Returns the evictions counted by all its processes.
fn diff_run(mode: &str, mem_limit: Option<&str>, seed: u64, ops: &str, procs: usize) -> u64 {
    {
        let tier = common::tempdir().unwrap();
        let outside = common::tempdir().unwrap();
        let stats_dir = common::tempdir().unwrap();
        // `%p`: every process of a multi-process run writes its own.
        let stats = stats_dir.path().join("diff-%p.json");
        let mut cmd = tiered(env!("CARGO_BIN_EXE_tier-diff"), tier.path());
        cmd.env("EPHEMERA_MODE", mode)
            .env("EPHEMERA_STATS", &stats)
            .args([
                "--seed",
                &seed.to_string(),
                "--ops",
                ops,
                "--inside",
                tier.path().to_str().unwrap(),
                "--outside",
                outside.path().to_str().unwrap(),
                "--procs",
                &procs.to_string(),
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
        let all: Vec<_> = std::fs::read_dir(stats_dir.path())
            .unwrap()
            .map(|e| read_stats(&e.unwrap().path()))
            .collect();
        let sum = |k: &str| all.iter().map(|s| counter(s, k)).sum::<u64>();
        if procs > 1 {
            assert!(sum("files_mapped") > 10, "seed {seed}: nothing was mapped");
            return sum("evictions");
        }
        let s = all
            .into_iter()
            .max_by_key(|s| counter(s, "opens"))
            .expect("the driver's stats");
        // Under the tight budget how much the tier serves depends on the
        // adapter's timing (a loaded machine evicts more): it must serve some.
        let served = if mem_limit.is_some() { 10 } else { 100 };
        assert!(
            counter(&s, "reads") > served && counter(&s, "writes") > served,
            "seed {seed}: {s:?}"
        );
        assert!(counter(&s, "files_mapped") > 10, "seed {seed}: {s:?}");
        assert_eq!(counter(&s, "mapped_bytes"), 0, "seed {seed}: {s:?}");
        if mem_limit.is_some() {
            assert!(counter(&s, "evictions") > 0, "seed {seed}: {s:?}");
        }
        counter(&s, "evictions")
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

/// Several processes (workers `exec`ed by the driver, children they fork,
/// shell commands with and without the preload) act on the same files, in
/// an interleaving the driver chooses; compared step by step.
fn multi_process(mode: &str, mem_limit: Option<&str>) {
    let evictions: u64 = [11, 12, 13, 14]
        .into_iter()
        .map(|seed| diff_run(mode, mem_limit, seed, "2500", 3))
        .sum();
    if mem_limit.is_some() {
        assert!(evictions > 0, "the budget never made the adapter evict");
    }
}

#[test]
fn several_processes_in_memory_mode_agree_with_the_kernel() {
    multi_process("memory", None);
}

#[test]
fn several_processes_in_adaptive_mode_agree_with_the_kernel() {
    multi_process("adaptive", None);
}

#[test]
fn several_processes_under_a_tight_budget_agree_with_the_kernel() {
    multi_process("adaptive", Some("6MiB"));
}
