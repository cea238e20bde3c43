//! A user's first session: start `ephemera dev`, deploy the examples, invoke
//! them, hit every kind of failure, restart, and check nothing was lost.

mod common;

use common::{repo, DevCluster};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What `examples/functions/io_heavy` must return for `files` files of
/// `size_kib` KiB with 8 KiB blocks: the sha256 of every file's bytes in order.
fn io_heavy_digest(seed: u64, files: u64, size_kib: u64) -> String {
    let block = 8192usize;
    let mut all = Sha256::new();
    for i in 0..files {
        for k in 0..(size_kib * 1024 / block as u64) {
            let unit = Sha256::digest(format!("{seed}/{i}/{k}").as_bytes());
            let data: Vec<u8> = unit.iter().copied().cycle().take(block).collect();
            all.update(&data);
        }
    }
    hex::encode(all.finalize())
}

fn example(name: &str) -> std::path::PathBuf {
    repo().join("examples/functions").join(name)
}

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn io_heavy_function_runs_100_times_warm_through_the_tier() {
    let data = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(data.path(), 1);
    cluster.deploy(
        "demo",
        "io",
        &example("io_heavy"),
        "ephemera-python handler.py",
        "256MiB",
    );

    let mut pids = std::collections::BTreeSet::new();
    let mut instances = std::collections::BTreeSet::new();
    let mut last_tier = Value::Null;
    for i in 0..100u64 {
        let seed = i % 7;
        let input = format!(r#"{{"files": 2, "size_kib": 256, "reads": 32, "seed": {seed}}}"#);
        let out = cluster.ok(&["invoke", "demo/io", "--input", &input, "--details"]);
        let reply: Value = serde_json::from_str(&out).expect("--details prints JSON");
        let result = &reply["result"];
        assert_eq!(
            result["sha256"],
            io_heavy_digest(seed, 2, 256),
            "invocation {i}: {reply}"
        );
        assert_eq!(
            result["bytes_written"],
            2 * 256 * 1024,
            "invocation {i}: {reply}"
        );
        assert_eq!(
            result["bytes_read"],
            2 * (256 * 1024 + 32 * 8192),
            "invocation {i}: {reply}"
        );
        pids.insert(reply["launcher_pid"].as_u64().unwrap());
        instances.insert(reply["instance_id"].as_str().unwrap().to_string());
        last_tier = reply["tier"].clone();
    }
    assert_eq!(
        pids.len(),
        1,
        "one warm launcher served every invocation, saw pids {pids:?}"
    );
    assert_eq!(
        instances.len(),
        1,
        "one instance served every invocation, saw {instances:?}"
    );
    // The tier's counters prove the I/O was served from memory: every
    // invocation wrote 512 KiB and read 1 MiB through it.
    let tier = last_tier;
    assert!(
        tier["writes"].as_u64().unwrap() > 0,
        "tier served no writes: {tier}"
    );
    assert!(
        tier["reads"].as_u64().unwrap() > 0,
        "tier served no reads: {tier}"
    );
    assert!(
        tier["bytes_written"].as_u64().unwrap() >= 100 * 2 * 256 * 1024,
        "tier bytes: {tier}"
    );
    assert!(
        tier["bytes_read"].as_u64().unwrap() >= 100 * 2 * 256 * 1024,
        "tier bytes: {tier}"
    );
    assert!(
        tier["files_mapped"].as_u64().unwrap() > 0,
        "tier mapped no file: {tier}"
    );

    // The warm instance and the node's aggregates are visible in status.
    let status: Value = serde_json::from_str(&cluster.ok(&["status", "--json"])).unwrap();
    let inst = status["instances"].as_array().unwrap();
    assert!(
        inst.iter()
            .any(|i| i["function"] == "io" && i["invocations"] == 100),
        "status: {status}"
    );
    let node = &status["nodes"][0];
    assert_eq!(node["n_alloc"], 0, "every placement was released: {status}");
    assert_eq!(
        node["active_tasks"], 0,
        "every placement was released: {status}"
    );
    cluster.stop();
}

#[test]
fn failures_give_clear_errors_and_the_cluster_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(data.path(), 2);
    cluster.deploy(
        "demo",
        "cpu",
        &example("cpu_heavy"),
        "ephemera-python handler.py",
        "128MiB",
    );
    cluster.deploy(
        "demo",
        "raises",
        &fixture("raises"),
        "ephemera-python handler.py",
        "64MiB",
    );
    cluster.deploy(
        "demo",
        "exits",
        &fixture("exits"),
        "ephemera-python handler.py",
        "64MiB",
    );
    cluster.deploy(
        "demo",
        "nonjson",
        &fixture("nonjson"),
        "./launcher.sh",
        "64MiB",
    );

    let err = cluster.fails(&["invoke", "demo/raises"]);
    assert!(
        err.contains("ZeroDivisionError") && err.contains("demo/raises"),
        "{err}"
    );
    // The instance that raised stays usable.
    let out = cluster.ok(&["invoke", "demo/raises", "--input", r#"{"ok": true}"#]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        serde_json::json!({"ok": true})
    );

    let err = cluster.fails(&["invoke", "demo/exits"]);
    assert!(
        err.contains("demo/exits") && err.contains("exited"),
        "{err}"
    );
    let err = cluster.fails(&["invoke", "demo/exits"]);
    assert!(
        err.contains("exited"),
        "a replaced instance fails the same clear way: {err}"
    );

    let err = cluster.fails(&["invoke", "demo/nonjson"]);
    assert!(
        err.contains("non-JSON") && err.contains("this is not json"),
        "{err}"
    );

    let err = cluster.fails(&["invoke", "demo/missing"]);
    assert!(
        err.contains("demo/missing") && err.contains("does not exist"),
        "{err}"
    );

    let err = cluster.fails(&["invoke", "demo/cpu", "--input", "{n: 5"]);
    assert!(err.contains("not JSON"), "{err}");

    let err = cluster.fails(&["invoke", "no-slash"]);
    assert!(err.contains("TENANT/FUNCTION"), "{err}");

    let err = cluster.fails(&[
        "fn",
        "deploy",
        "--tenant",
        "demo",
        "--name",
        "huge",
        "--dir",
        example("cpu_heavy").to_str().unwrap(),
        "--cmd",
        "ephemera-python handler.py",
        "--memory",
        "0",
    ]);
    assert!(err.contains("memory"), "{err}");
    let cpu_dir = example("cpu_heavy");
    let err = cluster.fails(&[
        "fn",
        "deploy",
        "--tenant",
        "demo",
        "--name",
        "absurd",
        "--dir",
        cpu_dir.to_str().unwrap(),
        "--cmd",
        "ephemera-python handler.py",
        "--memory",
        "5TiB",
    ]);
    assert!(err.contains("memory") && err.contains("outside"), "{err}");
    let err = cluster.fails(&["fn", "show", "demo/absurd"]);
    assert!(
        err.contains("does not exist"),
        "a refused deploy changes nothing: {err}"
    );
    let err = cluster.fails(&[
        "fn",
        "deploy",
        "--tenant",
        "demo",
        "--name",
        "nodir",
        "--dir",
        "/nonexistent/dir",
        "--cmd",
        "x",
        "--memory",
        "64MiB",
    ]);
    assert!(err.contains("/nonexistent/dir"), "{err}");

    // After all of that the cluster still serves, and no placement leaked.
    let out = cluster.ok(&["invoke", "demo/cpu", "--input", r#"{"n": 20}"#]);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["digits"], 19, "20! = 2432902008176640000: {result}");
    assert_eq!(result["last_nonzero"], "817664", "{result}");
    let status: Value = serde_json::from_str(&cluster.ok(&["status", "--json"])).unwrap();
    for node in status["nodes"].as_array().unwrap() {
        assert_eq!(node["active_tasks"], 0, "placements leaked: {status}");
        assert_eq!(node["n_alloc"], 0, "placements leaked: {status}");
    }
    cluster.stop();
}

#[test]
fn restarting_on_the_same_data_dir_keeps_functions() {
    let data = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(data.path(), 1);
    cluster.deploy(
        "acme",
        "cpu",
        &example("cpu_heavy"),
        "ephemera-python handler.py",
        "96MiB",
    );
    cluster.ok(&["invoke", "acme/cpu", "--input", r#"{"n": 10}"#]);
    cluster.stop();

    let cluster = DevCluster::start(data.path(), 1);
    let shown: Value = serde_json::from_str(&cluster.ok(&["fn", "show", "acme/cpu"])).unwrap();
    assert_eq!(shown["memory_bytes"], 96u64 << 20, "{shown}");
    assert_eq!(shown["cmd"], "ephemera-python handler.py", "{shown}");
    let out = cluster.ok(&["invoke", "acme/cpu", "--input", r#"{"n": 10}"#]);
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["digits"], 7, "10! = 3628800: {result}");
    cluster.stop();
}
