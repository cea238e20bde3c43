//! Tenants: every API call carries a token; a tenant sees and invokes only
//! its own functions; missing, bad and foreign tokens are refused and change
//! nothing. In `ephemera dev` the CLI finds the admin token by itself.

mod common;

use common::{repo, DevCluster};
use serde_json::Value;

fn token_for(cluster: &DevCluster, tenant: &str) -> String {
    cluster.ok(&["tenant", "token", tenant]).trim().to_string()
}

fn fails_with(cluster: &DevCluster, args: &[&str], token: Option<&str>) -> String {
    let out = cluster.cli_with_token(args, token);
    assert!(
        !out.status.success(),
        "`ephemera {}` should fail",
        args.join(" ")
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn tenants_see_and_invoke_only_their_own_functions() {
    let data = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start(data.path(), 1);
    let cpu = repo().join("examples/functions/cpu_heavy");
    let cpu = cpu.to_str().unwrap();
    // The dev admin token (found by the CLI) deploys for any tenant.
    cluster.deploy(
        "acme",
        "cpu",
        std::path::Path::new(cpu),
        "ephemera-python handler.py",
        "64MiB",
    );
    cluster.deploy(
        "globex",
        "cpu",
        std::path::Path::new(cpu),
        "ephemera-python handler.py",
        "64MiB",
    );
    let acme = token_for(&cluster, "acme");
    let globex = token_for(&cluster, "globex");
    assert_ne!(acme, globex);

    // A tenant's token works for its own functions...
    let out = cluster.cli_with_token(
        &["invoke", "acme/cpu", "--input", r#"{"n": 10}"#],
        Some(&acme),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(result["digits"], 7);

    // ...and for nothing of another tenant's.
    let err = fails_with(&cluster, &["invoke", "globex/cpu"], Some(&acme));
    assert!(
        err.contains("tenant acme cannot act for tenant globex"),
        "{err}"
    );
    let err = fails_with(&cluster, &["fn", "show", "globex/cpu"], Some(&acme));
    assert!(err.contains("cannot act for tenant globex"), "{err}");
    let err = fails_with(
        &cluster,
        &[
            "fn", "deploy", "--tenant", "globex", "--name", "evil", "--dir", cpu, "--cmd", "x",
            "--memory", "64MiB",
        ],
        Some(&acme),
    );
    assert!(err.contains("cannot act for tenant globex"), "{err}");
    let err = fails_with(&cluster, &["tenant", "token", "globex"], Some(&acme));
    assert!(err.contains("admin token"), "{err}");

    // Listings are scoped to the caller's tenant.
    let out = cluster.cli_with_token(&["status", "--json"], Some(&acme));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tenants: Vec<&str> = status["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(tenants, ["acme"], "{status}");
    assert!(
        status["instances"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["tenant"] == "acme"),
        "{status}"
    );

    // Bad and missing tokens are refused.
    let err = fails_with(
        &cluster,
        &["invoke", "acme/cpu"],
        Some("eph_not-a-real-token"),
    );
    assert!(err.contains("invalid token"), "{err}");
    let out = std::process::Command::new(common::ephemera())
        .args(["invoke", "acme/cpu"])
        .env("EPHEMERA_ENDPOINT", &cluster.endpoint)
        .env(
            "EPHEMERA_CREDENTIALS",
            data.path().join("no-such-file.json"),
        )
        .env("EPHEMERA_CA", &cluster.ca)
        .env_remove("EPHEMERA_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing token"), "{err}");

    // Nothing changed: globex's function is intact, and a reissued token
    // replaces the old one.
    let shown: Value = serde_json::from_str(&cluster.ok(&["fn", "show", "globex/cpu"])).unwrap();
    assert_eq!(shown["cmd"], "ephemera-python handler.py");
    assert!(cluster
        .ok(&["fn", "list"])
        .lines()
        .all(|l| !l.contains("evil")));
    let acme2 = token_for(&cluster, "acme");
    let err = fails_with(&cluster, &["invoke", "acme/cpu"], Some(&acme));
    assert!(
        err.contains("invalid token"),
        "the old token must stop working: {err}"
    );
    let out = cluster.cli_with_token(
        &["invoke", "acme/cpu", "--input", r#"{"n": 3}"#],
        Some(&acme2),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    cluster.stop();
}
