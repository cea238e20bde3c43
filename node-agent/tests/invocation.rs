//! The invocation path for real: agent → tenant actor → process runtime →
//! ephemera-proxy (in a memory cgroup) → ephemera-python → the function, and
//! back, including every way a function can fail.

mod common;

use std::time::Duration;

use common::{code_of, function, invoke, wait_gone, wait_status, TestAgent, MIB};
use ephemera_domain::Reason;
use ephemera_proto::v1::{AgentStatusRequest, ProfileRequest};
use tonic::Code;

const IO_FUNCTION: &str = r#"
import os, tempfile

def main(args):
    d = tempfile.gettempdir()
    n = int(args.get("n", 0))
    path = os.path.join(d, "data-%d.bin" % (n % 3))
    blob = (b"ephemera-%d;" % n) * 4096
    with open(path, "wb") as f:
        f.write(blob)
    with open(path, "rb") as f:
        back = f.read()
    os.unlink(path)
    return {"n": n, "same": back == blob, "size": len(back), "tmp": d, "pid": os.getpid()}
"#;

const MISBEHAVING: &str = r#"
import os, sys, time

def main(args):
    what = args.get("do", "")
    if what == "raise":
        raise ValueError("bad input %r" % args.get("x"))
    if what == "exit":
        sys.stdout.flush()
        os._exit(3)
    if what == "sleep":
        time.sleep(30)
    if what == "die_later":
        import threading
        threading.Timer(0.1, lambda: os._exit(5)).start()
    return {"ok": True, "pid": os.getpid()}

def lambda_style(event, context):
    return {"event": event, "name": context.function_name, "left": context.get_remaining_time_in_millis() > 0,
            "mb": context.memory_limit_in_mb, "id": context.aws_request_id}
"#;

const NON_JSON_LAUNCHER: &str = r#"while read line; do case "$line" in *bad*) echo "this is not json at all" >&3;; *) echo '{"fine": true}' >&3;; esac; done"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instance_serves_io_function_from_its_tier() {
    let mut agent = TestAgent::start("test-warm", Duration::from_secs(600)).await;
    let (code, digest) = code_of(&[("main.py", IO_FUNCTION)]);
    let f = function("acme", "io", "ephemera-python main.py", &digest, 256 * MIB);

    let mut pid = None;
    let mut instance = None;
    let mut last = None;
    for n in 0..25 {
        let reply = invoke(&mut agent.client, &f, &code, &format!(r#"{{"n": {n}}}"#))
            .await
            .unwrap_or_else(|s| panic!("invocation {n} failed: {s}"));
        let v: serde_json::Value = serde_json::from_str(&reply.result_json).expect("JSON result");
        assert_eq!(v["n"], n, "{v}");
        assert_eq!(v["same"], true, "{v}");
        assert_eq!(v["size"], 4096 * format!("ephemera-{n};").len(), "{v}");
        assert!(
            v["tmp"].as_str().unwrap().ends_with("/tmp"),
            "TMPDIR is the tier dir: {v}"
        );
        assert!(
            v["tmp"].as_str().unwrap().contains(&reply.instance_id),
            "{v}"
        );
        assert!(reply.launcher_pid > 0);
        // Warm: one launcher process, one instance.
        assert_eq!(*pid.get_or_insert(reply.launcher_pid), reply.launcher_pid);
        assert_eq!(
            instance.get_or_insert(reply.instance_id.clone()),
            &reply.instance_id
        );
        last = Some(reply);
    }
    let last = last.expect("ran");
    let pid = pid.expect("pid");

    // The launcher runs inside the instance's memory cgroup (v1 here).
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    if std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        let want = format!("ephemera/{}/{}", agent.cgroup, last.instance_id);
        assert!(
            cgroups.contains(&want),
            "launcher {pid} not in {want}: {cgroups}"
        );
        let limit = std::fs::read_to_string(
            agent
                .cgroup_dir()
                .join(&last.instance_id)
                .join("memory.limit_in_bytes"),
        )
        .expect("limit file");
        assert_eq!(limit.trim(), (256 * MIB).to_string());
    }

    let tier = last.tier.expect("tier counters");
    eprintln!("tier counters after 25 invocations: {tier:?}");
    assert_eq!(
        tier.mem_limit_bytes,
        256 * MIB,
        "control block carries the limit"
    );
    if common::intercept_lib().is_some() {
        assert!(
            tier.writes > 0 && tier.reads > 0,
            "tier served no I/O: {tier:?}"
        );
        assert!(tier.bytes_written > 0 && tier.bytes_read > 0, "{tier:?}");
    }

    let status = agent
        .client
        .status(AgentStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.instances.len(), 1);
    let s = &status.instances[0];
    assert_eq!((s.tenant.as_str(), s.function.as_str()), ("acme", "io"));
    assert_eq!(s.invocations, 25);
    assert_eq!(s.launcher_pid, pid);
    assert_eq!(s.state, "idle");
    assert_eq!(s.limit_bytes, 256 * MIB);

    agent.stop().await;
    wait_gone(pid, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_give_clear_errors_and_the_next_invocation_succeeds() {
    let mut agent = TestAgent::start("test-failures", Duration::from_secs(600)).await;
    let (code, digest) = code_of(&[("main.py", MISBEHAVING)]);
    let mut f = function(
        "acme",
        "misbehave",
        "ephemera-python main.py",
        &digest,
        128 * MIB,
    );
    // Long enough for a cold Python start on a loaded machine, short enough
    // for the `sleep` case (30 s) to time out.
    f.timeout_ms = 5000;
    let c = &mut agent.client;

    let ok = invoke(c, &f, &code, "{}").await.expect("first run");
    let pid1 = ok.launcher_pid;

    // Raises: an error naming the function, the instance stays warm.
    let e = invoke(c, &f, &code, r#"{"do": "raise", "x": 7}"#)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e}");
    assert_eq!(Reason::of(&e), Some(Reason::FunctionFailed), "{e:?}");
    assert_eq!(
        e.message(),
        "function acme/misbehave raised an error: ValueError: bad input 7"
    );
    let ok = invoke(c, &f, &code, "{}").await.expect("after raise");
    assert_eq!(
        ok.launcher_pid, pid1,
        "a raising function keeps its instance"
    );

    // Exits: the instance is replaced.
    let e = invoke(c, &f, &code, r#"{"do": "exit"}"#).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e}");
    assert_eq!(Reason::of(&e), Some(Reason::FunctionFailed), "{e:?}");
    assert!(
        e.message().starts_with(
            "function acme/misbehave: launcher exited with status 3 during invocation"
        ),
        "{e}"
    );
    assert!(e.message().contains("replaced"), "{e}");
    wait_gone(pid1, Duration::from_secs(5)).await;
    let ok = invoke(c, &f, &code, "{}").await.expect("after exit");
    let pid2 = ok.launcher_pid;
    assert_ne!(pid2, pid1, "a fresh instance after the exit");

    // Times out: killed, replaced.
    let e = invoke(c, &f, &code, r#"{"do": "sleep"}"#)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert_eq!(Reason::of(&e), Some(Reason::Timeout), "{e:?}");
    assert!(e.message().contains("timed out after 5000 ms"), "{e}");
    wait_gone(pid2, Duration::from_secs(5)).await;
    let ok = invoke(c, &f, &code, "{}").await.expect("after timeout");
    assert_ne!(ok.launcher_pid, pid2);

    // A warm launcher that dies while idle: the next invocation is simply
    // served by a fresh instance.
    let ok = invoke(c, &f, &code, r#"{"do": "die_later"}"#)
        .await
        .expect("die later");
    wait_gone(ok.launcher_pid, Duration::from_secs(5)).await;
    let again = invoke(c, &f, &code, "{}")
        .await
        .expect("after an idle death");
    assert_ne!(again.launcher_pid, ok.launcher_pid);

    // Malformed input.
    let e = invoke(c, &f, &code, "{not json").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert_eq!(Reason::of(&e), Some(Reason::InvalidArgument), "{e:?}");
    assert!(e.message().contains("acme/misbehave"), "{e}");

    // Lambda style handler with a context.
    let mut lf = function(
        "acme",
        "lambda",
        "ephemera-python main.py:lambda_style",
        &digest,
        128 * MIB,
    );
    lf.timeout_ms = 5000;
    let ok = invoke(c, &lf, &code, r#"{"k": 1}"#)
        .await
        .expect("lambda style");
    let v: serde_json::Value = serde_json::from_str(&ok.result_json).unwrap();
    assert_eq!(v["event"]["k"], 1);
    assert_eq!(v["name"], "acme/lambda");
    assert_eq!(v["left"], true);
    assert_eq!(v["mb"], 128);
    assert!(!v["id"].as_str().unwrap_or("").is_empty(), "{v}");

    // A launcher that prints non-JSON on fd 3: an error quoting it; it stays.
    let (sh_code, sh_digest) = code_of(&[("README", "shell launcher")]);
    let sf = function("acme", "shell", NON_JSON_LAUNCHER, &sh_digest, 64 * MIB);
    let e = invoke(c, &sf, &sh_code, r#"{"x": "bad"}"#)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e}");
    assert_eq!(Reason::of(&e), Some(Reason::FunctionFailed), "{e:?}");
    assert!(
        e.message()
            .starts_with("function acme/shell returned a non-JSON result: this is not json at all"),
        "{e}"
    );
    let ok = invoke(c, &sf, &sh_code, r#"{"x": "good"}"#)
        .await
        .expect("after non-JSON");
    assert_eq!(ok.result_json, r#"{"fine":true}"#);

    // Unknown code digest, no code: the controller must send it.
    let unknown = function("acme", "ghost", "true", &"ab".repeat(32), 64 * MIB);
    let e = agent
        .client
        .run(ephemera_proto::v1::RunRequest {
            invocation_id: "x".into(),
            function: Some(unknown),
            input_json: String::new(),
            code: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(Reason::of(&e), Some(Reason::CodeMissing), "{e:?}");
    assert_eq!(e.message(), format!("code missing: {}", "ab".repeat(32)));

    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_runs_trials_in_disk_mode_and_cleans_up() {
    let mut agent = TestAgent::start("test-profile", Duration::from_secs(600)).await;
    let (code, digest) = code_of(&[("main.py", IO_FUNCTION)]);
    let f = function("acme", "io", "ephemera-python main.py", &digest, 256 * MIB);
    let reply = agent
        .client
        .profile(ProfileRequest {
            function: Some(f),
            code: code.clone(),
            inputs: vec![r#"{"n": 1}"#.into(), r#"{"n": 2}"#.into()],
        })
        .await
        .expect("profile")
        .into_inner();
    let p = reply.profile.expect("profile");
    assert!(p.measured);
    assert!(p.u_max_bytes > 0, "peak native memory measured: {p:?}");
    if common::intercept_lib().is_some() {
        assert!(p.f_max_bytes > 0, "largest file measured: {p:?}");
    }
    let status = agent
        .client
        .status(AgentStatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(status.instances.is_empty(), "trial instances are gone");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_are_stopped() {
    let mut agent = TestAgent::start("test-idle", Duration::from_millis(300)).await;
    let (code, digest) = code_of(&[("main.py", MISBEHAVING)]);
    let f = function("acme", "idle", "ephemera-python main.py", &digest, 64 * MIB);
    let ok = invoke(&mut agent.client, &f, &code, "{}")
        .await
        .expect("run");
    wait_gone(ok.launcher_pid, Duration::from_secs(10)).await;
    wait_status(&mut agent, "the idle instance unlisted", |st| st.is_empty()).await;
    let again = invoke(&mut agent.client, &f, &code, "{}")
        .await
        .expect("cold start again");
    assert_ne!(again.launcher_pid, ok.launcher_pid);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_killed_instance_is_reported_and_replaced() {
    if !std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
        eprintln!("\n!!! no cgroup v1 memory controller: SKIPPING the OOM test !!!\n");
        return;
    }
    let mut agent = TestAgent::start("test-oom", Duration::from_secs(600)).await;
    let (code, digest) = code_of(&[(
        "main.py",
        r#"
def main(args):
    hog = bytearray(args.get("mb", 0) << 20)
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    return {"held": len(hog)}
"#,
    )]);
    let f = function("acme", "hog", "ephemera-python main.py", &digest, 64 * MIB);
    let c = &mut agent.client;
    let ok = invoke(c, &f, &code, r#"{"mb": 8}"#)
        .await
        .expect("small run");
    let e = invoke(c, &f, &code, r#"{"mb": 256}"#).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e}");
    assert_eq!(Reason::of(&e), Some(Reason::FunctionFailed), "{e:?}");
    // `/bin/sh -c` reports its killed child as status 137; a launcher that
    // is the function's process itself shows signal 9.
    assert!(
        e.message().contains("launcher exited with signal 9")
            || e.message().contains("launcher exited with status 137"),
        "{e}"
    );
    assert!(e.message().contains("OOM-killed"), "{e}");
    wait_gone(ok.launcher_pid, Duration::from_secs(5)).await;
    let again = invoke(c, &f, &code, r#"{"mb": 8}"#)
        .await
        .expect("replaced instance");
    assert_ne!(again.launcher_pid, ok.launcher_pid);
    agent.stop().await;
}
