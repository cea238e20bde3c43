//! A function plays the attacker: each test starts a real child under the
//! policy and asserts by the effect (the file is not written, the marker is
//! not printed, the call fails with this errno, the process count stops
//! here). Where plain Unix permissions would stop the attack anyway, a
//! control run with that one layer turned off shows the layer is what
//! stopped it.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{exists, root_or_skip, Fixture, EACCES, EAGAIN, ENOSYS, EPERM};
use ephemera_sandbox::{Enforcement, SandboxError};

#[test]
fn runs_as_the_tenant_uid_without_privileges() {
    if !root_or_skip("runs_as_the_tenant_uid_without_privileges") {
        return;
    }
    let f = Fixture::new(1, "identity", 64);
    // An agent with supplementary groups (say, `docker`): the child must not keep them.
    let mut cmd = Command::new("/usr/bin/python3");
    // SAFETY: setgroups(2) from a static array, async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            static GROUPS: [libc::gid_t; 2] = [4, 27];
            if libc::setgroups(2, GROUPS.as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.arg("-c").arg(format!(
        "{}\n{}",
        common::PRELUDE,
        r#"
for line in read("/proc/self/status").splitlines():
    k, _, v = line.partition(":")
    if k in ("Uid", "Gid", "Groups", "NoNewPrivs", "Seccomp", "CapEff", "CapPrm", "CapAmb"):
        emit(k, v.strip())
attempt("setuid0", lambda: os.setuid(0))
attempt("setgid0", lambda: os.setgid(0))
"#
    ));
    cmd.arg(f.paths().to_string());
    let p = f.run(&f.policy(), cmd);
    p.assert_success();
    let (u, g) = (f.ids.uid, f.ids.gid);
    assert_eq!(p.get("Uid"), &format!("{u}\t{u}\t{u}\t{u}"));
    assert_eq!(p.get("Gid"), &format!("{g}\t{g}\t{g}\t{g}"));
    assert_eq!(p.get("Groups"), "", "supplementary groups must be cleared");
    assert_eq!(p.get("NoNewPrivs"), "1");
    assert_eq!(p.get("Seccomp"), "2", "a seccomp filter must be installed");
    for cap in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(p.get(cap), "0000000000000000", "{cap}");
    }
    assert_eq!(p.errno("setuid0"), EPERM);
    assert_eq!(p.errno("setgid0"), EPERM);
    eprintln!("applied: {}", p.summary);
}

#[test]
fn the_environment_is_only_what_was_given() {
    if !root_or_skip("the_environment_is_only_what_was_given") {
        return;
    }
    let f = Fixture::new(2, "environment", 64);
    let p = f.python(
        &f.policy(),
        r#"
raw = open("/proc/self/environ", "rb").read().split(b"\0")
emit("environ", dict(kv.decode().split("=", 1) for kv in raw if kv))
"#,
    );
    p.assert_success();
    let env = p.get("environ").as_object().unwrap();
    let mut keys: Vec<&str> = env.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["EPHEMERA_TIER_DIR", "HOME", "LANG", "PATH", "TMPDIR"],
        "the child's whole environment"
    );
    assert_eq!(env["HOME"], f.tier.to_str().unwrap());
    // Set on the command before the policy, as an agent secret would be inherited.
    p.assert_never_printed(&[&f.token_marker]);
    // Something the test process itself has reaches the child only if given.
    let parent_only: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| !keys.contains(&k.as_str()))
        .collect();
    assert!(
        !parent_only.is_empty(),
        "the parent has an environment of its own"
    );
    for k in &parent_only {
        assert!(!env.contains_key(k), "{k} leaked from the parent");
    }
}

const READ_PROBE: &str = r#"
attempt("other_tenant_file", lambda: read(P["other"]))
attempt("admin_token", lambda: read(P["token"]))
attempt("list_data_dir", lambda: os.listdir(P["root"]))
attempt("etc_passwd", lambda: read("/etc/passwd"))
attempt("agent_environ", lambda: read("/proc/1/environ"))
"#;

#[test]
fn it_cannot_read_outside_its_view() {
    if !root_or_skip("it_cannot_read_outside_its_view") {
        return;
    }
    let f = Fixture::new(3, "read-outside", 64);
    let p = f.python(&f.policy(), READ_PROBE);
    p.assert_success();
    assert_eq!(p.errno("other_tenant_file"), EACCES);
    assert_eq!(p.errno("admin_token"), EACCES);
    assert_eq!(p.errno("list_data_dir"), EACCES);
    assert_eq!(p.errno("etc_passwd"), EACCES);
    assert_eq!(p.errno("agent_environ"), EACCES);
    p.assert_never_printed(&[&f.other_marker, &f.token_marker]);

    // Control: without Landlock the same uid reads the 0644 file (so it is
    // Landlock, not the file's mode, that stopped it); the 0600 token stays
    // unreadable by its mode alone.
    let c = f.python(&f.policy().landlock(false), READ_PROBE);
    c.assert_success();
    assert_eq!(c.ok("other_tenant_file"), &f.other_marker);
    assert_eq!(c.errno("admin_token"), EACCES);
    c.assert_never_printed(&[&f.token_marker]);
}

const WRITE_PROBE: &str = r##"
import stat
attempt("open_dir", lambda: write(os.path.join(P["open"], "marker"), "x"))
attempt("system_tmp", lambda: write("/tmp/ephemera-sandbox-marker-" + P["tier"].replace("/", "_"), "x"))
attempt("other_tenant_file", lambda: write(P["other_writable"], "overwritten"))
attempt("code_new_file", lambda: write(os.path.join(P["code"], "planted.py"), "x"))
attempt("code_handler", lambda: write(os.path.join(P["code"], "handler.py"), "changed", "a"))
attempt("code_unlink", lambda: os.unlink(os.path.join(P["code"], "handler.py")))
attempt("control_truncate", lambda: os.truncate(P["control"], 0))
attempt("control_o_trunc", lambda: os.close(os.open(P["control"], os.O_WRONLY | os.O_TRUNC)))
def ftruncate_control():
    fd = os.open(P["control"], os.O_RDWR)
    try:
        os.ftruncate(fd, 0)
    finally:
        os.close(fd)
attempt("control_ftruncate", ftruncate_control)
attempt("tier_symlink", lambda: os.symlink(P["token"], os.path.join(P["tier"], "link")))
attempt("tier_fifo", lambda: os.mkfifo(os.path.join(P["tier"], "fifo")))
def exec_from_tier():
    path = os.path.join(P["tier"], "tool.sh")
    write(path, "#!/bin/sh\necho ran\n")
    os.chmod(path, 0o755)
    os.execv(path, [path])
attempt("tier_exec", exec_from_tier)
"##;

#[test]
fn it_cannot_write_outside_its_tier_nor_into_its_code() {
    if !root_or_skip("it_cannot_write_outside_its_tier_nor_into_its_code") {
        return;
    }
    let f = Fixture::new(4, "write-outside", 64);
    let system_tmp_marker = format!(
        "/tmp/ephemera-sandbox-marker-{}",
        f.tier.to_str().unwrap().replace('/', "_")
    );
    // Removed at the end, pass or fail (the control run writes it).
    struct Remove(String);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }
    let _guard = Remove(system_tmp_marker.clone());
    let p = f.python(&f.policy(), WRITE_PROBE);
    p.assert_success();
    for k in [
        "open_dir",
        "system_tmp",
        "other_tenant_file",
        "code_new_file",
        "code_handler",
        "code_unlink",
        "control_truncate",
        "control_o_trunc",
        "control_ftruncate",
        "tier_symlink",
        "tier_fifo",
        "tier_exec",
    ] {
        assert_eq!(p.errno(k), EACCES, "{k}");
    }
    assert!(
        !exists(&f.open_dir.join("marker")),
        "marker written in a 0777 dir"
    );
    assert!(
        !exists(system_tmp_marker.as_ref()),
        "marker written in /tmp"
    );
    assert_eq!(
        fs::read_to_string(&f.other_writable).unwrap(),
        f.other_marker
    );
    assert!(!exists(&f.code.join("planted.py")));
    assert_eq!(
        fs::read_to_string(f.code.join("handler.py")).unwrap(),
        format!("# {}\n", f.code_marker)
    );
    assert_eq!(
        fs::metadata(&f.control).unwrap().len(),
        4096,
        "control block shrunk"
    );
    assert!(!exists(&f.tier.join("link")) && !exists(&f.tier.join("fifo")));

    // Control: without Landlock the uid may write the 0777 directory and
    // truncate its own control block; only the view forbids it.
    let c = f.python(&f.policy().landlock(false), WRITE_PROBE);
    c.assert_success();
    c.ok("open_dir");
    c.ok("control_truncate");
    assert!(exists(&f.open_dir.join("marker")));
}

#[test]
fn it_can_read_its_code_and_use_its_tier() {
    if !root_or_skip("it_can_read_its_code_and_use_its_tier") {
        return;
    }
    let f = Fixture::new(5, "own-files", 64);
    let p = f.python(
        &f.policy(),
        r#"
import socket, threading, time
t = P["tier"]
attempt("code", lambda: read(os.path.join(P["code"], "handler.py")))
attempt("write", lambda: write(os.path.join(t, "a.txt"), "hello"))
attempt("mkdir", lambda: os.makedirs(os.path.join(t, "d1/d2")))
attempt("rename_across", lambda: os.rename(os.path.join(t, "a.txt"), os.path.join(t, "d1/d2/b.txt")))
attempt("read_back", lambda: read(os.path.join(t, "d1/d2/b.txt")))
def trunc():
    write(os.path.join(t, "c.txt"), "0123456789")
    os.truncate(os.path.join(t, "c.txt"), 3)
    return read(os.path.join(t, "c.txt"))
attempt("truncate", trunc)
attempt("unlink", lambda: os.unlink(os.path.join(t, "c.txt")))
def control_rw():
    fd = os.open(P["control"], os.O_RDWR)
    try:
        os.pwrite(fd, b"\x07", 100)
        return os.pread(fd, 1, 100)[0]
    finally:
        os.close(fd)
attempt("control_rw", control_rw)
def bind_socket():
    s = socket.socket(socket.AF_UNIX)
    path = os.path.join(P["instance"], "proxy.sock")
    s.bind(path)
    s.close()
    os.unlink(path)
attempt("instance_socket", bind_socket)
attempt("instance_log", lambda: write(os.path.join(P["instance"], "stdout.log"), "log\n", "a"))
attempt("dev_null", lambda: write("/dev/null", "x"))
attempt("urandom", lambda: len(open("/dev/urandom", "rb").read(16)))
attempt("localtime", lambda: time.strftime("%Z", time.localtime()))
box = []
th = threading.Thread(target=lambda: box.append(1)); th.start(); th.join()
emit("thread", len(box))
"#,
    );
    p.assert_success();
    assert_eq!(p.ok("code"), &format!("# {}\n", f.code_marker));
    p.ok("write");
    p.ok("mkdir");
    p.ok("rename_across");
    assert_eq!(p.ok("read_back"), "hello");
    assert_eq!(p.ok("truncate"), "012");
    p.ok("unlink");
    assert_eq!(p.ok("control_rw"), 7);
    p.ok("instance_socket");
    p.ok("instance_log");
    p.ok("dev_null");
    assert_eq!(p.ok("urandom"), 16);
    p.ok("localtime");
    assert_eq!(p.get("thread"), 1, "threads (clone3 → clone fallback)");
    assert!(p.stderr.is_empty(), "python complained: {}", p.stderr);
    let b = f.tier.join("d1/d2/b.txt");
    assert_eq!(fs::metadata(&b).unwrap().uid(), f.ids.uid);

    // The launcher's way in: /bin/sh -c, redirecting to /dev/null (O_TRUNC).
    let mut sh = Command::new("/bin/sh");
    sh.arg("-c").arg(
        "echo from-sh > \"$TMPDIR/sh.txt\" && echo noise > /dev/null && cat \"$TMPDIR/sh.txt\"",
    );
    let s = f.run(&f.policy(), sh);
    s.assert_success();
    assert_eq!(s.stdout.trim(), "from-sh");
}

#[test]
fn python3_writes_a_temp_file_under_its_tier() {
    if !root_or_skip("python3_writes_a_temp_file_under_its_tier") {
        return;
    }
    let f = Fixture::new(6, "python-tempfile", 64);
    let p = f.python(
        &f.policy(),
        r#"
import tempfile
emit("gettempdir", tempfile.gettempdir())
with tempfile.NamedTemporaryFile("w+", delete=False) as tf:
    tf.write("tier data")
    name = tf.name
emit("name", name)
emit("content", read(name))
"#,
    );
    p.assert_success();
    assert_eq!(p.get("gettempdir"), f.tier.to_str().unwrap());
    let name = p.get("name").as_str().unwrap().to_string();
    assert!(name.starts_with(f.tier.to_str().unwrap()), "{name}");
    assert_eq!(p.get("content"), "tier data");
    assert_eq!(fs::read_to_string(&name).unwrap(), "tier data");
    assert!(p.stderr.is_empty(), "python complained: {}", p.stderr);
}

const SYSCALL_PROBE: &str = r#"
SYS = P["sys"]
def in_child(k, f):
    # Namespace calls run in a throwaway child, so a success (in the
    # control run) does not change the probe itself.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        ctypes.set_errno(0)
        ret = f()
        os.write(w, json.dumps([ret, ctypes.get_errno() if ret == -1 else 0]).encode())
        os._exit(0)
    os.close(w)
    data = os.read(r, 100)
    os.waitpid(pid, 0)
    ret, e = json.loads(data)
    emit(k, {"ret": ret, "errno": e})
def raw(nr, *args):
    return libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
call("mount", libc.mount, b"none", b"/nonexistent-ephemera", b"tmpfs", ctypes.c_ulong(0), None)
call("unshare_files", libc.unshare, 0x400)
in_child("unshare_newns", lambda: libc.unshare(0x20000))
in_child("unshare_newuser", lambda: libc.unshare(0x10000000))
sc("setns", SYS["setns"], -1, 0)
sc("io_uring_setup", SYS["io_uring_setup"], 1, 0)
sc("bpf", SYS["bpf"], 0, 0, 0)
sc("userfaultfd", SYS["userfaultfd"], 0)
sc("perf_event_open", SYS["perf_event_open"], 0, 0, -1, -1, 0)
sc("keyctl", SYS["keyctl"], 0, 0)
sc("process_vm_readv", SYS["process_vm_readv"], os.getppid(), 0, 0, 0, 0, 0)
sc("pidfd_getfd", SYS["pidfd_getfd"], -1, 0, 0)
# clone(CLONE_NEWUSER | SIGCHLD) with no new stack: fork-like where allowed.
ctypes.set_errno(0)
r = raw(SYS["clone"], 0x10000000 | 17, 0, 0, 0, 0)
if r == 0:
    os._exit(0)
e = ctypes.get_errno() if r == -1 else 0
if r > 0:
    os.waitpid(r, 0)
    r = 0
emit("clone_newuser", {"ret": r, "errno": e})
if SYS["x32_getpid"]:
    sc("x32_getpid", SYS["x32_getpid"])
sc("clone3", SYS["clone3"], 0, 88)
import threading
box = []
th = threading.Thread(target=lambda: box.append(1)); th.start(); th.join()
emit("thread", len(box))
call("ptrace_traceme", libc.ptrace, ctypes.c_long(0), ctypes.c_long(0), None, None)
"#;

fn syscall_paths(f: &Fixture) -> serde_json::Value {
    let mut v = f.paths();
    let x32 = if cfg!(target_arch = "x86_64") {
        0x4000_0000 | libc::SYS_getpid
    } else {
        0
    };
    v["sys"] = serde_json::json!({
        "setns": libc::SYS_setns, "io_uring_setup": libc::SYS_io_uring_setup,
        "bpf": libc::SYS_bpf, "userfaultfd": libc::SYS_userfaultfd,
        "perf_event_open": libc::SYS_perf_event_open, "keyctl": libc::SYS_keyctl,
        "process_vm_readv": libc::SYS_process_vm_readv, "pidfd_getfd": libc::SYS_pidfd_getfd,
        "clone": libc::SYS_clone, "clone3": libc::SYS_clone3, "x32_getpid": x32,
    });
    v
}

fn syscall_probe(f: &Fixture, policy: &ephemera_sandbox::SandboxPolicy) -> common::Probe {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(format!("{}\n{SYSCALL_PROBE}", common::PRELUDE))
        .arg(syscall_paths(f).to_string())
        .current_dir(&f.code);
    f.run(policy, cmd)
}

#[test]
fn dangerous_syscalls_fail_with_eperm_and_unshare_files_does_not() {
    if !root_or_skip("dangerous_syscalls_fail_with_eperm_and_unshare_files_does_not") {
        return;
    }
    let f = Fixture::new(7, "syscalls", 64);
    let p = syscall_probe(&f, &f.policy());
    p.assert_success();
    for k in [
        "mount",
        "unshare_newns",
        "unshare_newuser",
        "setns",
        "io_uring_setup",
        "bpf",
        "userfaultfd",
        "perf_event_open",
        "keyctl",
        "process_vm_readv",
        "pidfd_getfd",
        "clone_newuser",
        "ptrace_traceme",
    ] {
        assert_eq!(p.call(k), (-1, EPERM), "{k}");
    }
    assert_eq!(
        p.call("unshare_files"),
        (0, 0),
        "the adapter's unshare(CLONE_FILES)"
    );
    assert_eq!(
        p.call("clone3"),
        (-1, ENOSYS),
        "clone3 must fall back to clone"
    );
    assert_eq!(p.get("thread"), 1);
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            p.call("x32_getpid"),
            (-1, EPERM),
            "x32 numbers bypass rules"
        );
    }

    // Control: the same uid without the filter. mount reaches the path
    // lookup (ENOENT), ptrace(TRACEME) and unshare(CLONE_NEWUSER) succeed
    // (where the host allows user namespaces), x32 reaches the kernel.
    let c = syscall_probe(&f, &f.policy().seccomp(false));
    c.assert_success();
    assert_eq!(c.call("mount"), (-1, libc::ENOENT as i64));
    assert_eq!(c.call("ptrace_traceme"), (0, 0));
    assert_eq!(c.call("unshare_files"), (0, 0));
    let userns = fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .map(|s| s.trim() != "0")
        .unwrap_or(false);
    if userns {
        assert_eq!(
            c.call("unshare_newuser"),
            (0, 0),
            "without the filter a user namespace is created"
        );
    } else {
        eprintln!("note: user namespaces are disabled here; the NEWUSER control proves nothing");
    }
    if cfg!(target_arch = "x86_64") {
        assert_ne!(c.call("x32_getpid").1, EPERM);
    }
}

const FORK_BOMB: &str = r#"
import signal
n, err = 0, None
for i in range(int(P["tries"])):
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        os.close(1); os.close(2)
        signal.pause()
        os._exit(0)
    n += 1
emit("forked", n)
emit("errno", err)
"#;

fn fork_bomb(f: &Fixture, policy: &ephemera_sandbox::SandboxPolicy, tries: u32) -> common::Probe {
    let mut v = f.paths();
    v["tries"] = tries.into();
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("-c")
        .arg(format!("{}\n{FORK_BOMB}", common::PRELUDE))
        .arg(v.to_string())
        .current_dir(&f.code);
    f.run(policy, cmd)
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    if !root_or_skip("a_fork_bomb_stops_at_the_pids_limit") {
        return;
    }
    let f = Fixture::new(8, "fork-bomb-pids", 16);
    // RLIMIT_NPROC out of the way: the cgroup alone must stop it.
    let p = fork_bomb(&f, &f.policy().rlimit_nproc(None), 200);
    p.assert_success();
    assert_eq!(p.get("forked"), 15, "python + 15 children = pids.max 16");
    assert_eq!(p.get("errno"), EAGAIN);
    // The children are still there, all inside the cgroup.
    assert_eq!(f.pids.current(), Some(15));
    assert_eq!(f.pids.pids().len(), 15);
    // (The fixture kills them and removes the cgroup.)
}

#[test]
fn a_fork_bomb_stops_at_rlimit_nproc_without_a_cgroup_bound() {
    if !root_or_skip("a_fork_bomb_stops_at_rlimit_nproc_without_a_cgroup_bound") {
        return;
    }
    // A roomy cgroup (only to clean up): RLIMIT_NPROC of the tenant uid stops it.
    let f = Fixture::new(9, "fork-bomb-nproc", 1000);
    let p = fork_bomb(&f, &f.policy().rlimit_nproc(Some(8)), 200);
    p.assert_success();
    assert_eq!(p.get("forked"), 7, "the uid's 8 tasks: python + 7 children");
    assert_eq!(p.get("errno"), EAGAIN);
    assert_eq!(f.pids.current(), Some(7));
}

#[test]
fn another_instance_of_the_same_tenant_cannot_be_signalled_or_inspected() {
    if !root_or_skip("another_instance_of_the_same_tenant_cannot_be_signalled_or_inspected") {
        return;
    }
    let f = Fixture::new(10, "sibling", 64);
    // The sibling: same tenant uid, its own sandbox.
    let mut sleep = Command::new("/bin/sleep");
    sleep.arg("300").stdout(Stdio::null()).stderr(Stdio::null());
    let policy = f.policy();
    policy.prepare_dirs().unwrap();
    let applied = policy.apply_to(&mut sleep).unwrap();
    let mut sibling = sleep.spawn().map_err(|e| applied.explain(e)).unwrap();
    let pid = sibling.id();
    // Wait until it runs as the tenant (exec done), with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = fs::metadata(format!("/proc/{pid}"))
            .map(|m| m.uid())
            .unwrap_or(0);
        let exe = fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        if st == f.ids.uid && exe.ends_with("sleep") {
            break;
        }
        assert!(Instant::now() < deadline, "sibling did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    let body = format!(
        r#"
import signal
call("kill0", libc.kill, {pid}, 0)
call("killterm", libc.kill, {pid}, signal.SIGTERM)
attempt("environ", lambda: read("/proc/{pid}/environ"))
attempt("mem", lambda: os.close(os.open("/proc/{pid}/mem", os.O_RDONLY)))
"#
    );
    let p = f.python(&f.policy(), &body);
    p.assert_success();
    assert_eq!(p.call("kill0"), (-1, EPERM));
    assert_eq!(p.call("killterm"), (-1, EPERM));
    assert_eq!(p.errno("environ"), EACCES);
    assert_eq!(p.errno("mem"), EACCES);
    assert!(
        sibling.try_wait().unwrap().is_none(),
        "the sibling was killed"
    );

    // Control: without Landlock the same uid may signal it (signal 0 only).
    let c = f.python(
        &f.policy().landlock(false),
        &format!("call(\"kill0\", libc.kill, {pid}, 0)\n"),
    );
    c.assert_success();
    assert_eq!(c.call("kill0"), (0, 0));
    let _ = sibling.kill();
    let _ = sibling.wait();
}

#[test]
fn the_child_joins_its_memory_cgroup_as_root_then_cannot_leave_or_raise_it() {
    if !root_or_skip("the_child_joins_its_memory_cgroup_as_root_then_cannot_leave_or_raise_it") {
        return;
    }
    let mut f = Fixture::new(11, "cgroups", 64);
    let mem_root = std::path::Path::new("/sys/fs/cgroup/memory");
    if !mem_root.join("memory.limit_in_bytes").exists() {
        eprintln!("SKIPPED the memory-cgroup part: no cgroup v1 memory controller here");
        return;
    }
    let mem = mem_root.join(format!(
        "ephemera-sandbox-test-{}-{}",
        std::process::id(),
        f.pids.path().file_name().unwrap().to_string_lossy()
    ));
    fs::create_dir_all(&mem).unwrap();
    f.extra_cgroups.push(mem.clone());
    fs::write(mem.join("memory.limit_in_bytes"), "268435456").unwrap();
    let procs = mem.join("cgroup.procs");

    // Today's runtime joins its memory cgroup from its own pre_exec hook
    // (registered first, so it runs as root); the policy joins the pids one.
    let mut cmd = Command::new("/usr/bin/python3");
    let body = r#"
cg = read("/proc/self/cgroup")
emit("cgroup", cg)
mem = [l.split(":", 2)[2] for l in cg.splitlines() if l.split(":")[1] == "memory"][0]
base = "/sys/fs/cgroup/memory" + mem
attempt("usage", lambda: int(read(base + "/memory.usage_in_bytes")))
attempt("raise_limit", lambda: write(base + "/memory.limit_in_bytes", "1099511627776"))
attempt("leave_memory", lambda: write("/sys/fs/cgroup/memory/cgroup.procs", str(os.getpid())))
attempt("leave_pids", lambda: write("/sys/fs/cgroup/pids/cgroup.procs", str(os.getpid())))
"#;
    cmd.arg("-c")
        .arg(format!("{}\n{body}", common::PRELUDE))
        .arg(f.paths().to_string())
        .current_dir(&f.code);
    let procs_c = std::ffi::CString::new(procs.to_str().unwrap()).unwrap();
    // SAFETY: open/write/close of a path prepared before the fork, all
    // async-signal-safe (the same hook runtime/process.rs registers).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            let fd = libc::open(procs_c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
            Ok(())
        });
    }
    let p = f.run(&f.policy(), cmd);
    p.assert_success();
    let cg = p.get("cgroup").as_str().unwrap();
    let mem_rel = mem.strip_prefix(mem_root).unwrap();
    let pids_rel = f.pids.path().strip_prefix("/sys/fs/cgroup/pids").unwrap();
    assert!(
        cg.lines()
            .any(|l| l.ends_with(&format!(":memory:/{}", mem_rel.display()))),
        "not in its memory cgroup: {cg}"
    );
    assert!(
        cg.lines()
            .any(|l| l.ends_with(&format!(":pids:/{}", pids_rel.display()))),
        "not in its pids cgroup: {cg}"
    );
    assert!(p.ok("usage").as_u64().unwrap() > 0);
    assert_eq!(p.errno("raise_limit"), EACCES);
    assert_eq!(p.errno("leave_memory"), EACCES);
    assert_eq!(p.errno("leave_pids"), EACCES);
    assert_eq!(
        fs::read_to_string(mem.join("memory.limit_in_bytes"))
            .unwrap()
            .trim(),
        "268435456"
    );
}

#[test]
fn a_failed_step_in_the_child_is_named() {
    if !root_or_skip("a_failed_step_in_the_child_is_named") {
        return;
    }
    let f = Fixture::new(12, "failed-step", 64);
    // A cgroup removed between apply_to (which opens its cgroup.procs) and
    // the spawn: the child's join fails, and the error says which.
    let gone =
        ephemera_sandbox::PidsController::detect(&format!("sandbox-tests-{}", std::process::id()))
            .create(&format!("gone-{}", std::process::id()), 8)
            .unwrap()
            .unwrap();
    // Removed below; removed here too when the test fails before that.
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = fs::remove_dir(&self.0);
        }
    }
    let _guard = Remove(gone.path().to_path_buf());
    let policy = f.policy().pids_cgroup(&gone);
    let mut cmd = Command::new("/bin/true");
    let applied = policy.apply_to(&mut cmd).unwrap();
    fs::remove_dir(gone.path()).unwrap();
    let err = cmd.spawn().map_err(|e| applied.explain(e)).unwrap_err();
    match &err {
        SandboxError::ChildSetup { step, uid, .. } => {
            assert!(step.contains("joining cgroup"), "{err}");
            assert!(step.contains(gone.path().to_str().unwrap()), "{err}");
            assert_eq!(*uid, f.ids.uid);
        }
        other => panic!("expected ChildSetup, got {other}"),
    }
}

#[test]
fn prepared_dirs_have_the_instance_owner_and_code_is_read_only() {
    if !root_or_skip("prepared_dirs_have_the_instance_owner_and_code_is_read_only") {
        return;
    }
    let f = Fixture::new(13, "prepare", 64);
    let sub = f.code.join("lib");
    fs::create_dir_all(&sub).unwrap();
    fs::write(sub.join("mod.py"), "x = 1\n").unwrap();
    fs::set_permissions(&sub, fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(sub.join("mod.py"), fs::Permissions::from_mode(0o4666)).unwrap();
    fs::set_permissions(f.code.join("handler.py"), fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(sub.join("mod.py"), Some(f.ids.uid), Some(f.ids.gid)).unwrap();
    f.policy().prepare_dirs().unwrap();
    let mode = |p: &std::path::Path| fs::metadata(p).unwrap().mode() & 0o7777;
    let owner = |p: &std::path::Path| {
        let m = fs::metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    let tenant = (f.ids.uid, f.ids.gid);
    assert_eq!((owner(&f.instance), mode(&f.instance)), (tenant, 0o700));
    assert_eq!((owner(&f.tier), mode(&f.tier)), (tenant, 0o700));
    assert_eq!((owner(&f.control), mode(&f.control)), (tenant, 0o600));
    assert_eq!(mode(&sub), 0o755);
    assert_eq!(
        mode(&sub.join("mod.py")),
        0o644,
        "setuid and group/other write dropped"
    );
    assert_eq!(
        owner(&sub.join("mod.py")),
        (0, 0),
        "code owned by the agent, not a tenant"
    );
    assert_eq!(
        mode(&f.code.join("handler.py")),
        0o644,
        "readable by the tenant"
    );

    // A data directory the uid cannot search is named.
    let locked = f.root.path().join("locked");
    let inst = locked.join("instances/i9");
    fs::create_dir_all(inst.join("tmp")).unwrap();
    fs::write(inst.join("control"), [0u8; 16]).unwrap();
    fs::set_permissions(&locked, fs::Permissions::from_mode(0o700)).unwrap();
    let err = ephemera_sandbox::SandboxPolicy::new(f.ids)
        .instance_dir(&inst)
        .tier_dir(inst.join("tmp"))
        .control_block(inst.join("control"))
        .prepare_dirs()
        .unwrap_err();
    match err {
        SandboxError::Unreachable { blocked_at, .. } => assert_eq!(blocked_at, locked),
        other => panic!("expected Unreachable, got {other}"),
    }
}

#[test]
fn landlock_is_fully_enforced_on_this_kernel() {
    if !root_or_skip("landlock_is_fully_enforced_on_this_kernel") {
        return;
    }
    let f = Fixture::new(14, "report", 64);
    let mut cmd = Command::new("/bin/true");
    let applied = f.policy().apply_to(&mut cmd).unwrap();
    let abi = applied.landlock.kernel_abi;
    eprintln!("{applied}");
    eprintln!("{:#?}", applied.landlock);
    if abi >= 6 {
        assert_eq!(applied.landlock.enforcement, Enforcement::Full);
        assert!(applied.landlock.unavailable.is_empty());
        assert_eq!(applied.landlock.scopes.len(), 2);
    } else {
        eprintln!("note: kernel Landlock ABI {abi}: {:?}", applied.landlock);
        assert_ne!(applied.landlock.enforcement, Enforcement::Full);
    }
    assert!(applied.seccomp.enabled);
    let status = cmd.status().map_err(|e| applied.explain(e)).unwrap();
    assert!(status.success());
}
