//! The docker runtime for real: instances are containers on the host engine
//! (empty image + host mounts), warm across invocations, resized with
//! `update_container` while memory is shared (checked with `docker inspect`),
//! removed at shutdown. Skipped, loudly, when no docker engine answers.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{code_of, function, invoke, TestAgent};
use ephemera_node_agent::RuntimeKind;
use ephemera_proto::v1::{AgentStatusRequest, InstanceStatus, Profile};

const MIB: u64 = 1 << 20;

fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("\n!!! no docker engine answers: SKIPPING the docker runtime test !!!\n");
    }
    ok
}

fn inspect_memory(container: &str) -> (u64, u64) {
    let out = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{.HostConfig.Memory}} {{.HostConfig.MemorySwap}}",
            container,
        ])
        .output()
        .expect("docker inspect");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text
        .split_whitespace()
        .map(|w| w.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn containers_of(owner: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=ephemera.owner={owner}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(String::from)
        .collect()
}

async fn wait_status(
    agent: &mut TestAgent,
    what: &str,
    cond: impl Fn(&[InstanceStatus]) -> bool,
) -> Vec<InstanceStatus> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = agent
            .client
            .status(AgentStatusRequest {})
            .await
            .expect("status")
            .into_inner()
            .instances;
        if cond(&st) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

const FUNCTIONS: &str = r#"
import os, tempfile, time

def wait_for(name, limit=60):
    # Flags are files the test drops into this instance's tier directory.
    path = name and os.path.join(tempfile.gettempdir(), name)
    deadline = time.time() + limit
    while path and not os.path.exists(path):
        if time.time() > deadline:
            raise TimeoutError("no %s" % path)
        time.sleep(0.005)

def io(args):
    n = int(args.get("n", 0))
    path = os.path.join(tempfile.gettempdir(), "f-%d" % n)
    blob = b"%d" % n * 10000
    with open(path, "wb") as f:
        f.write(blob)
    with open(path, "rb") as f:
        same = f.read() == blob
    os.unlink(path)
    wait_for(args.get("end"))
    return {"n": n, "same": same}

def cpu(args):
    wait_for(args.get("end"))
    return {"ok": True}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_run_warm_share_memory_and_are_removed() {
    if !docker_available() {
        return;
    }
    let mut agent = TestAgent::start_with("test-docker", |c| {
        c.runtime = RuntimeKind::Docker;
    })
    .await;
    let (code, digest) = code_of(&[("fns.py", FUNCTIONS)]);
    let mut cpu = function(
        "acme",
        "cpu",
        "ephemera-python fns.py:cpu",
        &digest,
        300 * MIB,
    );
    cpu.profile = Some(Profile {
        u_max_bytes: 10 * MIB,
        f_max_bytes: 0,
        measured: true,
    });
    let mut io = function(
        "acme",
        "io",
        "ephemera-python fns.py:io",
        &digest,
        150 * MIB,
    );
    io.profile = Some(Profile {
        u_max_bytes: 10 * MIB,
        f_max_bytes: 240 * MIB,
        measured: true,
    });

    // Warm: ten invocations, one container, one launcher.
    let mut pids = Vec::new();
    let mut last = None;
    for n in 0..10 {
        let r = invoke(&mut agent.client, &io, &code, &format!(r#"{{"n": {n}}}"#))
            .await
            .unwrap_or_else(|s| panic!("docker invocation {n}: {s}"));
        let v: serde_json::Value = serde_json::from_str(&r.result_json).unwrap();
        assert_eq!(
            (v["n"].as_i64(), v["same"].as_bool()),
            (Some(n), Some(true)),
            "{v}"
        );
        pids.push(r.launcher_pid);
        last = Some(r);
    }
    pids.dedup();
    assert_eq!(pids.len(), 1, "one warm launcher: {pids:?}");
    let last = last.unwrap();
    let io_container = format!("ephemera-{}", last.instance_id);
    assert_eq!(inspect_memory(&io_container), (150 * MIB, 150 * MIB));
    if common::intercept_lib().is_some() {
        let t = last.tier.unwrap();
        assert!(
            t.writes > 0 && t.reads > 0,
            "the tier served the container's I/O: {t:?}"
        );
    }

    // Sharing: the cpu container lends to the io container while both run.
    let instance_tmp =
        |agent: &TestAgent, id: &str| agent.data.path().join("instances").join(id).join("tmp");
    let (mut client, c, k) = (agent.client.clone(), cpu.clone(), code.clone());
    let input = serde_json::json!({ "end": "cpu-end" }).to_string();
    let cpu_run = tokio::spawn(async move { invoke(&mut client, &c, &k, &input).await });
    wait_status(&mut agent, "cpu busy", |st| {
        st.iter()
            .any(|s| s.function == "cpu" && s.state == "busy" && s.launcher_pid > 0)
    })
    .await;
    let (mut client, i, k) = (agent.client.clone(), io.clone(), code.clone());
    let input = serde_json::json!({ "end": "io-end", "n": 99 }).to_string();
    let io_run = tokio::spawn(async move { invoke(&mut client, &i, &k, &input).await });
    let need = 275 * MIB;
    let st = wait_status(&mut agent, "io borrows", |st| {
        st.iter()
            .any(|s| s.function == "io" && s.limit_bytes == need)
    })
    .await;
    let cpu_id = st
        .iter()
        .find(|s| s.function == "cpu")
        .unwrap()
        .instance_id
        .clone();
    let cpu_container = format!("ephemera-{cpu_id}");
    assert_eq!(
        inspect_memory(&io_container),
        (need, need),
        "docker inspect shows the borrowed memory"
    );
    assert_eq!(
        inspect_memory(&cpu_container),
        (175 * MIB, 175 * MIB),
        "docker inspect shows the loan"
    );
    std::fs::write(instance_tmp(&agent, &last.instance_id).join("io-end"), b"").unwrap();
    io_run.await.unwrap().expect("io run");
    std::fs::write(instance_tmp(&agent, &cpu_id).join("cpu-end"), b"").unwrap();
    cpu_run.await.unwrap().expect("cpu run");
    wait_status(&mut agent, "limits back", |st| {
        st.iter().all(|s| s.limit_bytes == s.initial_limit_bytes)
    })
    .await;
    assert_eq!(inspect_memory(&io_container), (150 * MIB, 150 * MIB));
    assert_eq!(inspect_memory(&cpu_container), (300 * MIB, 300 * MIB));

    let owner = agent.cgroup.clone();
    agent.stop().await;
    assert!(containers_of(&owner).is_empty(), "containers left behind");
}
