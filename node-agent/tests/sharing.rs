//! Memory sharing for real (issue 5), process runtime: a CPU-heavy function
//! (limit 300 MiB, needs ~10 MiB) lends to an I/O-heavy one (limit 150 MiB,
//! tier needs ~250 MiB) while both run; cgroup limits and control blocks show
//! it; afterwards both are back. And the safeguard: a lender that grows near
//! its shrunken limit gets its loans back before it is OOM-killed.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{code_of, cpu_and_io, spawn_invoke, wait_busy, wait_status, TestAgent, IO_NEED, MIB};
use ephemera_proto::v1::{FunctionSpec, InstanceStatus};

const FUNCTIONS: &str = r#"
import os, time

def wait_for(path, limit=60):
    deadline = time.time() + limit
    while path and not os.path.exists(path):
        if time.time() > deadline:
            raise TimeoutError("no %s" % path)
        time.sleep(0.005)

def limits():
    with open(os.environ["EPHEMERA_CONTROL"], "rb") as f:
        control = int.from_bytes(f.read(24)[16:24], "little")
    cgroup = None
    for line in open("/proc/self/cgroup"):
        _, ctrl, path = line.strip().split(":", 2)
        if ctrl == "memory":
            p = "/sys/fs/cgroup/memory" + path + "/memory.limit_in_bytes"
            if os.path.exists(p):
                cgroup = int(open(p).read())
    return {"control_limit": control, "cgroup_limit": cgroup}

def cpu(args):
    wait_for(args.get("start"))
    hog = bytearray(args.get("grow_mb", 0) << 20)
    for i in range(0, len(hog), 4096):
        hog[i] = 1
    wait_for(args.get("end"))
    out = limits()
    out["held"] = len(hog)
    return out

def io(args):
    import tempfile
    path = os.path.join(tempfile.gettempdir(), "big.bin")
    chunk = b"x" * (1 << 20)
    with open(path, "wb") as f:
        for _ in range(args.get("write_mb", 0)):
            f.write(chunk)
    wait_for(args.get("end"))
    out = limits()
    out["size"] = os.path.getsize(path)
    os.unlink(path)
    return out
"#;

fn functions(digest: &str) -> (FunctionSpec, FunctionSpec) {
    cpu_and_io(
        digest,
        "ephemera-python fns.py:cpu",
        "ephemera-python fns.py:io",
    )
}

fn find<'a>(st: &'a [InstanceStatus], f: &str) -> Option<&'a InstanceStatus> {
    st.iter().find(|s| s.function == f)
}

/// (cgroup limit, control block limit) of an instance, read from outside.
fn applied(agent: &TestAgent, instance: &str) -> (Option<u64>, u64) {
    let cg = agent
        .cgroup_dir()
        .join(instance)
        .join("memory.limit_in_bytes");
    let cg = std::fs::read_to_string(cg)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let control = agent
        .data
        .path()
        .join("instances")
        .join(instance)
        .join("control");
    let block = ephemera_control_block::ControlBlock::open(&control).expect("control block");
    (cg, block.get(ephemera_control_block::Slot::MemLimit))
}

fn cgroups_v1() -> bool {
    Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_instance_lends_to_io_instance_while_both_run() {
    let mut agent = TestAgent::start("test-share", Duration::from_secs(600)).await;
    let flags = tempfile::tempdir().unwrap();
    let (code, digest) = code_of(&[("fns.py", FUNCTIONS)]);
    let (cpu, io) = functions(&digest);
    let need = IO_NEED;
    let lent = need - 150 * MIB;

    let cpu_end = flags.path().join("cpu-end");
    let input = serde_json::json!({ "end": cpu_end });
    let cpu_run = spawn_invoke(&agent, &cpu, &code, input.to_string());
    wait_busy(&mut agent, "cpu").await;

    let io_end = flags.path().join("io-end");
    let input = serde_json::json!({ "end": io_end, "write_mb": 32 });
    let io_run = spawn_invoke(&agent, &io, &code, input.to_string());
    let st = wait_status(&mut agent, "io borrows", |st| {
        find(st, "io").is_some_and(|s| s.limit_bytes == need)
    })
    .await;
    let cpu_st = find(&st, "cpu").unwrap().clone();
    let io_st = find(&st, "io").unwrap().clone();
    assert_eq!(cpu_st.limit_bytes, 300 * MIB - lent, "{st:#?}");
    assert_eq!(cpu_st.initial_limit_bytes, 300 * MIB);
    assert_eq!(io_st.initial_limit_bytes, 150 * MIB);
    let (io_cg, io_cb) = applied(&agent, &io_st.instance_id);
    let (cpu_cg, cpu_cb) = applied(&agent, &cpu_st.instance_id);
    assert_eq!(io_cb, need, "io control block shows the borrowed memory");
    assert_eq!(cpu_cb, 300 * MIB - lent, "cpu control block shows the loan");
    if cgroups_v1() {
        assert_eq!(io_cg, Some(need), "io cgroup shows the borrowed memory");
        assert_eq!(cpu_cg, Some(300 * MIB - lent), "cpu cgroup shows the loan");
    }

    std::fs::write(&io_end, b"").unwrap();
    let io_reply = io_run.await.unwrap().expect("io run");
    let v: serde_json::Value = serde_json::from_str(&io_reply.result_json).unwrap();
    assert_eq!(
        v["control_limit"], need,
        "seen from inside the io instance: {v}"
    );
    if cgroups_v1() {
        assert_eq!(v["cgroup_limit"], need, "{v}");
    }
    assert_eq!(v["size"], 32 * MIB, "{v}");

    // The io queue drained: the loan is back with the cpu instance.
    wait_status(&mut agent, "loan returned", |st| {
        find(st, "io").is_some_and(|s| s.limit_bytes == 150 * MIB)
            && find(st, "cpu").is_some_and(|s| s.limit_bytes == 300 * MIB)
    })
    .await;
    std::fs::write(&cpu_end, b"").unwrap();
    let cpu_reply = cpu_run.await.unwrap().expect("cpu run");
    let v: serde_json::Value = serde_json::from_str(&cpu_reply.result_json).unwrap();
    assert_eq!(v["control_limit"], 300 * MIB, "{v}");
    if cgroups_v1() {
        assert_eq!(v["cgroup_limit"], 300 * MIB, "{v}");
    }
    assert_eq!(applied(&agent, &io_st.instance_id).1, 150 * MIB);
    assert_eq!(applied(&agent, &cpu_st.instance_id).1, 300 * MIB);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safeguard_takes_loans_back_before_the_lender_is_oom_killed() {
    let mut agent = TestAgent::start("test-safeguard", Duration::from_secs(600)).await;
    let flags = tempfile::tempdir().unwrap();
    let (code, digest) = code_of(&[("fns.py", FUNCTIONS)]);
    let (cpu, io) = functions(&digest);
    let lent = IO_NEED - 150 * MIB;

    let (grow, cpu_end) = (flags.path().join("grow"), flags.path().join("cpu-end"));
    // 150 MiB + the interpreter: above 90 % of 175 MiB, below 175 MiB.
    let input = serde_json::json!({ "start": grow, "grow_mb": 150, "end": cpu_end });
    let cpu_run = spawn_invoke(&agent, &cpu, &code, input.to_string());
    wait_busy(&mut agent, "cpu").await;

    let io_end = flags.path().join("io-end");
    let input = serde_json::json!({ "end": io_end });
    let io_run = spawn_invoke(&agent, &io, &code, input.to_string());
    wait_status(&mut agent, "cpu lent", |st| {
        find(st, "cpu").is_some_and(|s| s.limit_bytes == 300 * MIB - lent)
    })
    .await;

    // The lender grows toward its shrunken limit: the actor takes the loan back.
    std::fs::write(&grow, b"").unwrap();
    wait_status(&mut agent, "safeguard rollback", |st| {
        find(st, "cpu").is_some_and(|s| s.limit_bytes == 300 * MIB)
            && find(st, "io").is_some_and(|s| s.limit_bytes == 150 * MIB)
    })
    .await;
    std::fs::write(&cpu_end, b"").unwrap();
    std::fs::write(&io_end, b"").unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&cpu_run.await.unwrap().expect("cpu survived").result_json).unwrap();
    assert_eq!(v["held"], 150 * MIB, "{v}");
    assert_eq!(v["control_limit"], 300 * MIB, "{v}");
    io_run.await.unwrap().expect("io run");
    agent.stop().await;
}
