//! Section g: a function instance in the Docker runtime is confined, by
//! its effects and by how the engine was asked to run it.

use std::time::{Duration, Instant};

use ephemera_cluster_tests::compose::{ComposeCluster, AGENTS};
use serde_json::Value;

/// The fields of `docker inspect` the hardening sets, one per line.
const HARDENING: &str = "{{.Config.User}}\n{{.HostConfig.CapDrop}}\n{{.HostConfig.SecurityOpt}}\n\
{{.HostConfig.PidsLimit}}\n{{.HostConfig.ReadonlyRootfs}}\n{{.HostConfig.PidMode}}\n\
{{.HostConfig.NetworkMode}}\n{{.HostConfig.Privileged}}";

/// `ephemera invoke ct/vandal --input INPUT --details` through controller 1.
fn invoke(c: &ComposeCluster, input: &str) -> Result<Value, String> {
    let out = c.cli(1, &["invoke", "ct/vandal", "--input", input, "--details"])?;
    serde_json::from_str(&out).map_err(|e| format!("--details prints JSON: {e}: {out}"))
}

/// Deploys `vandal` (see its handler), invokes it through the CLI, checks
/// what it could do and how its container was created; then lets it damage
/// its own control block (there is no Landlock inside a container: the
/// truncation may kill its own instance with SIGBUS, which is its own
/// business) and checks that its agent still serves and stays healthy.
pub async fn instances_are_confined(c: &ComposeCluster, deploy: impl Fn(&str)) -> String {
    deploy("vandal");
    let v = invoke(c, r#"{"damage": false}"#).unwrap_or_else(|e| panic!("{e}"));
    let out = &v["result"];
    let node = v["node_id"].as_str().expect("node_id").to_string();
    let instance = v["instance_id"].as_str().expect("instance_id").to_string();

    let uid = out["uid"].as_u64().expect("uid");
    assert!(
        uid >= 1000,
        "the function runs as a tenant uid, not root: {out}"
    );
    assert_eq!(out["env_tokens"], Value::Array(vec![]), "{out}");
    assert_ne!(out["write_root"], "ok", "read-only root: {out}");
    assert_ne!(out["write_etc"], "ok", "read-only root: {out}");
    assert_eq!(out["write_tier"], "ok", "its own tier is writable: {out}");
    assert_ne!(
        out["pid1"].as_str().unwrap_or_default(),
        "/sbin/init",
        "own pid namespace: {out}"
    );
    assert_eq!(out["fork_error"], "EAGAIN", "the pids limit held: {out}");
    assert!(out["children"].as_u64().unwrap_or(u64::MAX) < 1000, "{out}");

    let name = format!("ephemera-{instance}");
    let inspect = c
        .docker(&["inspect", "--format", HARDENING, &name])
        .unwrap_or_else(|e| panic!("instance {instance} has no container {name}: {e}"));
    let f: Vec<&str> = inspect.trim().lines().collect();
    assert_eq!(f.len(), 8, "{inspect}");
    let (user, caps, secopt, pids, ro, pid_mode, net, privileged) =
        (f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]);
    assert!(
        !user.is_empty() && !user.starts_with("0") && !user.starts_with("root"),
        "non-root user: {user:?}"
    );
    assert!(caps.contains("ALL"), "cap_drop ALL: {caps}");
    assert!(secopt.contains("no-new-privileges"), "{secopt}");
    assert!(
        pids.parse::<i64>().is_ok_and(|p| p > 0),
        "pids limit: {pids}"
    );
    assert_eq!(ro, "true", "read-only root filesystem");
    assert_ne!(pid_mode, "host", "private pid namespace");
    assert_eq!(net, "none", "no network");
    assert_eq!(privileged, "false");

    // The function damages its own control block: whatever becomes of its
    // instance, the agent lives and serves the function again.
    let damaged = match invoke(c, r#"{"damage": true}"#) {
        Ok(v) => format!(
            "served (truncate {}, scribble {})",
            v["result"]["truncate_control"], v["result"]["scribble_control"]
        ),
        Err(e) => format!("its own instance died ({})", e.lines().last().unwrap_or("")),
    };

    // A damaged instance dies (SIGBUS) the next time its tier touches the
    // block, failing that one invocation; the agent replaces it, so the
    // function serves again by the next attempt.
    let mut lost = Vec::new();
    let again = loop {
        match invoke(c, r#"{"damage": false}"#) {
            Ok(v) => break v,
            Err(e) if lost.is_empty() && e.contains("replaced") => lost.push(e),
            Err(e) => panic!("the function does not serve again: {e} (before: {lost:?})"),
        }
    };
    assert_eq!(again["result"]["write_tier"], "ok", "{again}");
    // Both agents still run and their health checks (the agent's own
    // status call) pass.
    for n in AGENTS {
        let agent = c.agent_container(n);
        let deadline = Instant::now() + Duration::from_secs(15);
        let health = loop {
            let h = c
                .docker(&[
                    "inspect",
                    "--format",
                    "{{.State.Running}} {{.State.Health.Status}}",
                    &agent,
                ])
                .unwrap_or_else(|e| panic!("inspecting {agent}: {e}"));
            if h.trim() == "true healthy" || Instant::now() > deadline {
                break h;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(
            health.trim(),
            "true healthy",
            "{agent} after its function's attack"
        );
    }
    format!(
        "g. confined instance on {node}: uid {uid}, no tokens in env, root and /etc read-only \
         ({}, {}), fork stopped at {} children ({}); container: user {user}, cap_drop {caps}, \
         {secopt}, pids {pids}, read-only root, pid mode {pid_mode:?}, network {net}; control block \
         damaged by the function: {damaged}, then {} invocation(s) lost with the damaged instance; \
         agents healthy and the function served again\n",
        out["write_root"],
        out["write_etc"],
        out["children"],
        out["fork_error"],
        lost.len(),
    )
}
