//! The profiler: trial runs on deploy with `--profile-input` commit the
//! maxima of peak native memory and largest file; a deploy without inputs is
//! profiled by its first invocation. `fn show` shows the profile.

mod common;

use std::path::Path;

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
    cluster.deploy(
        "demo",
        "io2",
        Path::new(io),
        "ephemera-python handler.py",
        "256MiB",
    );
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

    // A function that never opens a tier file is profiled too, by what it
    // really uses: the adapter samples the launcher's memory whenever a
    // control block exists. This one holds 48 MiB for half a second.
    let code = tempfile::tempdir().unwrap();
    std::fs::write(
        code.path().join("handler.py"),
        "import time\n\
         def handler(event, context):\n\
         \x20   block = bytearray(event['mib'] << 20)\n\
         \x20   for i in range(0, len(block), 4096):\n\
         \x20       block[i] = 1\n\
         \x20   time.sleep(0.5)\n\
         \x20   return {'held': len(block)}\n",
    )
    .unwrap();
    cluster.deploy(
        "demo",
        "hold",
        code.path(),
        "ephemera-python handler.py",
        "256MiB",
    );
    let out = cluster.ok(&["invoke", "demo/hold", "--input", r#"{"mib": 48}"#]);
    assert!(out.contains(&(48u64 << 20).to_string()), "{out}");
    let p = &show(&cluster, "demo/hold")["profile"];
    assert_eq!(p["measured"], true, "the first invocation profiles: {p}");
    assert!(
        p["u_max_bytes"].as_u64().unwrap() >= 48 << 20,
        "the launcher held 48 MiB, without any tier file: {p}"
    );
    assert_eq!(p["f_max_bytes"].as_u64(), Some(0), "{p}");
    cluster.stop();
}
