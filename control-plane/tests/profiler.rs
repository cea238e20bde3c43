//! The profiler: trial runs on deploy with `--profile-input` commit the
//! maxima of peak native memory and largest file; a deploy without inputs is
//! profiled by its first invocation. `fn show` shows the profile.

mod common;

use common::{repo, DevCluster};
use serde_json::Value;

fn show(cluster: &DevCluster, f: &str) -> Value {
    serde_json::from_str(&cluster.ok(&["fn", "show", f])).unwrap()
}

#[test]
fn deploy_with_inputs_and_first_invocation_both_profile() {
    let data = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(data.path(), 1);
    let io = repo().join("examples/functions/io_heavy");
    let io = io.to_str().unwrap();

    // Two trial inputs: the larger file (3 MiB) must be the profile's F_max.
    let out = cluster.ok(&[
        "fn",
        "deploy",
        "--tenant",
        "demo",
        "--name",
        "io",
        "--dir",
        io,
        "--cmd",
        "ephemera-python handler.py",
        "--memory",
        "256MiB",
        "--profile-input",
        r#"{"files": 1, "size_kib": 1024}"#,
        "--profile-input",
        r#"{"files": 2, "size_kib": 3072}"#,
    ]);
    assert!(out.contains("profiled demo/io"), "{out}");
    let p = &show(&cluster, "demo/io")["profile"];
    assert_eq!(p["measured"], true, "{p}");
    let f_max = p["f_max_bytes"].as_u64().unwrap();
    assert!(
        (3 << 20..4 << 20).contains(&f_max),
        "largest file is 3 MiB: {p}"
    );
    let u_max = p["u_max_bytes"].as_u64().unwrap();
    assert!(
        u_max > 4 << 20 && u_max < 256 << 20,
        "a Python launcher's peak memory: {p}"
    );

    // No inputs: unmeasured until the first invocation.
    cluster.ok(&[
        "fn",
        "deploy",
        "--tenant",
        "demo",
        "--name",
        "io2",
        "--dir",
        io,
        "--cmd",
        "ephemera-python handler.py",
        "--memory",
        "256MiB",
    ]);
    assert_eq!(show(&cluster, "demo/io2")["profile"]["measured"], false);
    cluster.ok(&[
        "invoke",
        "demo/io2",
        "--input",
        r#"{"files": 1, "size_kib": 2048}"#,
    ]);
    let p = &show(&cluster, "demo/io2")["profile"];
    assert_eq!(p["measured"], true, "the first invocation profiles: {p}");
    assert!(p["f_max_bytes"].as_u64().unwrap() >= 2 << 20, "{p}");
    assert!(p["u_max_bytes"].as_u64().unwrap() > 0, "{p}");
    cluster.stop();
}
