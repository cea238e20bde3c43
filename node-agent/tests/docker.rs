//! The docker runtime for real: instances are containers on the host engine
//! (empty image + host mounts), warm across invocations, resized with
//! `update_container` while memory is shared (checked with `docker inspect`),
//! removed at shutdown. Skipped, loudly, when no docker engine answers.

mod common;

use std::process::Command;

use common::{
    code_of, cpu_and_io, invoke, spawn_invoke, wait_busy, wait_status, TestAgent, IO_NEED, MIB,
};
use ephemera_node_agent::RuntimeKind;

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

/// Waits until the I/O function's container borrows what it needs while
/// the CPU one runs, and checks that docker shows the loan on both
/// containers; returns the CPU instance's id.
async fn wait_lent(agent: &mut TestAgent, io_container: &str) -> String {
    let st = wait_status(agent, "io borrows", |st| {
        st.iter()
            .any(|s| s.function == "io" && s.limit_bytes == IO_NEED)
    })
    .await;
    let cpu = st
        .iter()
        .find(|s| s.function == "cpu")
        .expect("the cpu instance");
    let lender = 300 * MIB - (IO_NEED - 150 * MIB);
    assert_eq!(
        inspect_memory(io_container),
        (IO_NEED, IO_NEED),
        "docker inspect shows the borrowed memory"
    );
    assert_eq!(
        inspect_memory(&container_of(&cpu.instance_id)),
        (lender, lender),
        "docker inspect shows the loan"
    );
    cpu.instance_id.clone()
}

/// Waits until every limit is back, checks that docker agrees, stops the
/// agent and checks that it left no container behind.
async fn limits_back_then_stop(mut agent: TestAgent, io_container: &str, cpu_container: &str) {
    wait_status(&mut agent, "limits back", |st| {
        st.iter().all(|s| s.limit_bytes == s.initial_limit_bytes)
    })
    .await;
    assert_eq!(inspect_memory(io_container), (150 * MIB, 150 * MIB));
    assert_eq!(inspect_memory(cpu_container), (300 * MIB, 300 * MIB));
    let owner = agent.cgroup.clone();
    agent.stop().await;
    assert!(containers_of(&owner).is_empty(), "containers left behind");
}

/// The container of instance `id`.
fn container_of(id: &str) -> String {
    format!("ephemera-{id}")
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
    let (cpu, io) = cpu_and_io(
        &digest,
        "ephemera-python fns.py:cpu",
        "ephemera-python fns.py:io",
    );

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
    let io_container = container_of(&last.instance_id);
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
    let input = serde_json::json!({ "end": "cpu-end" });
    let cpu_run = spawn_invoke(&agent, &cpu, &code, input.to_string());
    wait_busy(&mut agent, "cpu").await;
    let input = serde_json::json!({ "end": "io-end", "n": 99 });
    let io_run = spawn_invoke(&agent, &io, &code, input.to_string());
    let cpu_id = wait_lent(&mut agent, &io_container).await;
    std::fs::write(instance_tmp(&agent, &last.instance_id).join("io-end"), b"").unwrap();
    io_run.await.unwrap().expect("io run");
    std::fs::write(instance_tmp(&agent, &cpu_id).join("cpu-end"), b"").unwrap();
    cpu_run.await.unwrap().expect("cpu run");
    limits_back_then_stop(agent, &io_container, &container_of(&cpu_id)).await;
}

/// An action-loop launcher in plain `sh`: each activation writes the request
/// line to a file in the tier directory and reads it back, so the tier serves
/// it (dash is dynamically linked: the intercept is preloaded into it).
const SH_FUNCTION: &str = r#"while IFS= read -r line; do
  echo "$line" > "$TMPDIR/req"
  IFS= read -r back < "$TMPDIR/req"
  if [ "$back" = "$line" ]; then same=true; else same=false; fi
  case "$line" in
    *wait*) while ! [ -e "$TMPDIR/end" ]; do sleep 0.01; done; rm -f "$TMPDIR/end";;
  esac
  echo "{\"same\": $same}" >&3
done
"#;

/// The image for the instance-image test: `EPHEMERA_TEST_IMAGE`, else
/// `ephemera/python:dev` when compose built it, else a minimal image built
/// here from this build's proxy and intercept plus the host's dash. Returns
/// the image and whether this test built it (and must remove it).
fn test_image() -> (String, bool) {
    if let Ok(image) = std::env::var("EPHEMERA_TEST_IMAGE") {
        return (image, false);
    }
    let exists = |image: &str| {
        Command::new("docker")
            .args(["image", "inspect", image])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if std::env::var_os("EPHEMERA_TEST_BUILD_IMAGE").is_none() && exists("ephemera/python:dev") {
        return ("ephemera/python:dev".into(), false);
    }
    let image = format!("ephemera/node-agent-test:{}", std::process::id());
    let ctx = tempfile::tempdir().expect("tempdir");
    let root = ctx.path().join("root");
    let put = |dest: &str, src: &std::path::Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        let d = root.join(dest.trim_start_matches('/'));
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        std::fs::copy(src, &d).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    let proxy = std::path::PathBuf::from(env!("CARGO_BIN_EXE_ephemera-proxy"));
    let dash = ["/usr/bin/dash", "/bin/dash", "/bin/sh"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
        .expect("a /bin/sh to put in the test image");
    let dash = std::fs::canonicalize(dash).unwrap();
    put("/opt/ephemera/bin/ephemera-proxy", &proxy, 0o755);
    put(
        "/opt/ephemera/bin/ephemera-python",
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/launcher/ephemera-python"),
        0o755,
    );
    if let Some(so) = common::intercept_lib() {
        put("/opt/ephemera/lib/libephemera_intercept.so", &so, 0o755);
    }
    put("/bin/sh", &dash, 0o755);
    let sleep = std::fs::canonicalize("/bin/sleep").expect("/bin/sleep for the test image");
    put("/bin/sleep", &sleep, 0o755);
    // Shared libraries at the paths ldd names (the loader's own included).
    for bin in [&proxy, &dash, &sleep] {
        let out = Command::new("ldd").arg(bin).output().expect("ldd");
        for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if word.starts_with('/') && std::path::Path::new(word).exists() {
                let src = std::fs::canonicalize(word).unwrap();
                put(word, &src, 0o755);
            }
        }
    }
    std::fs::create_dir_all(root.join("tmp")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY root/ /\n",
    )
    .unwrap();
    let built = Command::new("docker")
        .args(["build", "-q", "-t", &image])
        .arg(ctx.path())
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("docker build");
    assert!(
        built.status.success(),
        "building the test image: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    (image, true)
}

fn inspect(container: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "-f", format, container])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Instance-image mode (an agent that runs in a container): containers come
/// from the image, only the code and instance directories are mounted, the
/// image's proxy and intercept serve the function, memory is lent through
/// `update_container`, and the container's cgroup is found by container id
/// alone (no pid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_image_mode_mounts_only_instance_and_code() {
    if !docker_available() {
        return;
    }
    let (image, built) = test_image();
    eprintln!("instance image: {image} (built here: {built})");
    struct RemoveImage(Option<String>);
    impl Drop for RemoveImage {
        fn drop(&mut self) {
            if let Some(i) = self.0.take() {
                let _ = Command::new("docker").args(["rmi", "-f", &i]).output();
            }
        }
    }
    let _cleanup = RemoveImage(built.then(|| image.clone()));
    let img = image.clone();
    let mut agent = TestAgent::start_with("test-docker-image", move |c| {
        c.runtime = RuntimeKind::Docker;
        c.instance_image = Some(img);
        // The image's own proxy and intercept must be used, not these.
        c.proxy_bin = "/nonexistent/ephemera-proxy".into();
        c.intercept_lib = Some("/nonexistent/libephemera_intercept.so".into());
    })
    .await;
    let (code, digest) = code_of(&[("fn.sh", SH_FUNCTION)]);
    let (cpu, io) = cpu_and_io(&digest, "sh fn.sh", "sh fn.sh");
    let mut last = None;
    for n in 0..5 {
        let r = invoke(&mut agent.client, &io, &code, &format!(r#"{{"n": {n}}}"#))
            .await
            .unwrap_or_else(|s| panic!("image-mode invocation {n}: {s}"));
        let v: serde_json::Value = serde_json::from_str(&r.result_json).unwrap();
        assert_eq!(v["same"].as_bool(), Some(true), "{v}");
        if let Some(prev) = &last {
            let prev: &ephemera_proto::v1::RunReply = prev;
            assert_eq!(prev.instance_id, r.instance_id, "warm");
        }
        last = Some(r);
    }
    let last = last.unwrap();
    let container = container_of(&last.instance_id);
    assert_eq!(inspect(&container, "{{.Config.Image}}"), image);
    let binds: Vec<String> =
        serde_json::from_str(&inspect(&container, "{{json .HostConfig.Binds}}")).unwrap();
    assert_eq!(binds.len(), 2, "only code and instance dirs: {binds:?}");
    let instance_dir = agent.data.path().join("instances").join(&last.instance_id);
    assert!(
        binds
            .iter()
            .any(|b| b == &format!("{0}:{0}:rw", instance_dir.display())),
        "{binds:?}"
    );
    assert!(binds.iter().any(|b| b.ends_with(":ro")), "{binds:?}");
    let entry = inspect(&container, "{{json .Config.Entrypoint}}");
    assert!(
        entry.contains("/opt/ephemera/bin/ephemera-proxy"),
        "{entry}"
    );
    if common::intercept_lib().is_some() || !built {
        let t = last.tier.unwrap();
        assert!(
            t.writes > 0 && t.reads > 0,
            "the image's intercept served the container's I/O: {t:?}"
        );
    }
    // The cgroup by id only (what a containerised agent does).
    let full_id = inspect(&container, "{{.Id}}");
    let cg = ephemera_sys::Cgroup::of_container(&full_id, None)
        .expect("the container's cgroup, found by id");
    assert!(cg.usage().is_some_and(|u| u > 0), "usage readable");

    // A CPU function lends to the I/O one while both run (docker inspect).
    let cpu_run = spawn_invoke(&agent, &cpu, &code, r#""wait""#);
    wait_busy(&mut agent, "cpu").await;
    let io_run = spawn_invoke(&agent, &io, &code, r#""wait""#);
    let cpu_id = wait_lent(&mut agent, &container).await;
    let end = |id: &str| agent.data.path().join("instances").join(id).join("tmp/end");
    std::fs::write(end(&last.instance_id), b"").unwrap();
    io_run.await.unwrap().expect("io run");
    std::fs::write(end(&cpu_id), b"").unwrap();
    cpu_run.await.unwrap().expect("cpu run");
    limits_back_then_stop(agent, &container, &container_of(&cpu_id)).await;
}
