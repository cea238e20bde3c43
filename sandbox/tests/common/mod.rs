//! A stand-in for one node: a data directory holding an instance (code,
//! instance and tier directories, control block), another tenant's tier file,
//! an admin token and a world-writable directory outside the view; a pids
//! cgroup every child joins, so whatever a test starts is killed at the end,
//! pass or fail.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ephemera_sandbox::{Ids, PidsCgroup, PidsController, SandboxPolicy, TenantUids, UidRange};

/// Python 3 helpers every probe starts with. `P` holds the fixture's paths.
pub const PRELUDE: &str = r#"
import ctypes, errno, json, os, sys
P = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def emit(k, v):
    print(json.dumps({"k": k, "v": v}), flush=True)
def attempt(k, f):
    try:
        emit(k, {"ok": True, "value": f()})
    except OSError as e:
        emit(k, {"ok": False, "errno": e.errno})
def call(k, fn, *args):
    ctypes.set_errno(0)
    r = fn(*args)
    emit(k, {"ret": r, "errno": ctypes.get_errno() if r == -1 else 0})
def sc(k, nr, *args):
    call(k, libc.syscall, ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
def read(p):
    with open(p) as f:
        return f.read()
def write(p, s, mode="w"):
    with open(p, mode) as f:
        f.write(s)
    return len(s)
"#;

pub const EACCES: i64 = libc::EACCES as i64;
pub const EPERM: i64 = libc::EPERM as i64;
pub const EAGAIN: i64 = libc::EAGAIN as i64;
pub const ENOSYS: i64 = libc::ENOSYS as i64;

/// True when running as root; otherwise says loudly that the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        true
    } else {
        // Straight to descriptor 2: libtest captures the output of passing
        // tests, and a skip must be seen.
        let msg = format!(
            "SKIPPED {test}: the sandbox tests start children as other uids and need root\n"
        );
        // SAFETY: write(2) from a live buffer of the given length.
        unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
        false
    }
}

/// The directory a fixture lives in (0755, as a data directory's path must
/// be searchable for instance uids).
pub struct Fixture {
    /// Everything below lives here; removed on drop.
    pub root: tempfile::TempDir,
    /// The tenant's ids.
    pub ids: Ids,
    /// Code directory with `handler.py`.
    pub code: PathBuf,
    /// Instance directory.
    pub instance: PathBuf,
    /// Tier directory (inside the instance directory).
    pub tier: PathBuf,
    /// Control block (inside the instance directory), 4096 bytes.
    pub control: PathBuf,
    /// Another tenant's tier file, 0644 (world-readable) in 0755 directories.
    pub other_tier_file: PathBuf,
    /// Another tenant's tier file, 0666 (world-writable).
    pub other_writable: PathBuf,
    /// An agent secret, 0600 root.
    pub admin_token: PathBuf,
    /// A 0777 directory outside the view.
    pub open_dir: PathBuf,
    /// Marker contents.
    pub other_marker: String,
    pub token_marker: String,
    pub code_marker: String,
    /// The pids cgroup every child joins.
    pub pids: PidsCgroup,
    /// Its controller (for removing the node directory).
    controller: PidsController,
    /// Extra cgroup directories to remove (tests that make memory cgroups).
    pub extra_cgroups: Vec<PathBuf>,
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{tag}-{}-{nanos:x}", std::process::id())
}

/// Pids of the tasks whose real uid is `uid` (zombies included).
pub fn tasks_of_uid(uid: u32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("Uid:"))
                        .and_then(|l| l.split_whitespace().nth(1))
                        .and_then(|u| u.parse::<u32>().ok())
                })
                == Some(uid)
        })
        .collect()
}

/// SIGKILLs `pids`, then reaps those that are our children (orphans come
/// to us: the test process is a child subreaper), until none of them is
/// left or `within` has passed. Returns the pids still present.
fn kill_and_reap(pids: &[i32], within: Duration) -> Vec<i32> {
    let deadline = Instant::now() + within;
    for &pid in pids {
        // SAFETY: plain FFI call.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut left: Vec<i32> = pids.to_vec();
    loop {
        left.retain(|&pid| {
            let mut status = 0;
            // SAFETY: waitpid on a specific pid with a live status variable.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            // Reaped now (r == pid), or not our child: present while /proc has it.
            r == 0 || (r < 0 && Path::new(&format!("/proc/{pid}")).exists())
        });
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        // Dying processes take a few milliseconds; poll until the deadline.
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Makes this test process the reaper of orphans of the children it starts
/// (so their zombies are ours to reap, not a slow or absent init's).
fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl with integer arguments.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
    });
}

impl Fixture {
    /// A fixture for test number `n` (each test gets its own uid range, so
    /// tests running in parallel never share a uid), with `pids_max`.
    pub fn new(n: u32, name: &str, pids_max: u64) -> Fixture {
        let root = tempfile::Builder::new()
            .prefix("ephemera-sandbox-test-")
            .tempdir()
            .expect("temp dir");
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let r = root.path();
        let uids = TenantUids::open(
            &r.join("agent"),
            UidRange {
                first: 2_100_000 + n * 100,
                count: 100,
            },
        )
        .expect("tenant uids");
        let ids = uids.ids("tenant-a").expect("uid");
        become_subreaper();
        // Leftovers of an earlier, killed run of this test would count
        // against the uid's RLIMIT_NPROC: end them first.
        let stale = tasks_of_uid(ids.uid);
        if !stale.is_empty() {
            eprintln!(
                "note: killing {} stale task(s) of uid {}",
                stale.len(),
                ids.uid
            );
            let left = kill_and_reap(&stale, Duration::from_secs(30));
            assert!(
                left.is_empty(),
                "tasks of uid {} will not go away: {left:?}",
                ids.uid
            );
        }
        let code = r.join("code/ab12");
        let instance = r.join("instances").join(name);
        let tier = instance.join("tmp");
        let control = instance.join("control");
        for d in [&code, &tier, &r.join("other/tmp"), &r.join("secrets")] {
            fs::create_dir_all(d).unwrap();
        }
        let other_marker = unique("OTHER-TENANT-MARKER");
        let token_marker = unique("ADMIN-TOKEN-MARKER");
        let code_marker = unique("CODE-MARKER");
        fs::write(code.join("handler.py"), format!("# {code_marker}\n")).unwrap();
        fs::write(&control, vec![0u8; 4096]).unwrap();
        let other_tier_file = r.join("other/tmp/data.bin");
        fs::write(&other_tier_file, &other_marker).unwrap();
        fs::set_permissions(&other_tier_file, fs::Permissions::from_mode(0o644)).unwrap();
        let other_writable = r.join("other/tmp/shared.bin");
        fs::write(&other_writable, &other_marker).unwrap();
        fs::set_permissions(&other_writable, fs::Permissions::from_mode(0o666)).unwrap();
        let admin_token = r.join("secrets/admin-token");
        fs::write(&admin_token, &token_marker).unwrap();
        fs::set_permissions(&admin_token, fs::Permissions::from_mode(0o600)).unwrap();
        let open_dir = r.join("open");
        fs::create_dir_all(&open_dir).unwrap();
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o777)).unwrap();
        let controller = PidsController::detect(&format!("sandbox-tests-{}", std::process::id()));
        let pids = controller
            .create(&unique(name), pids_max)
            .expect("creating the pids cgroup")
            .unwrap_or_else(|| panic!("no pids cgroup available: {controller:?}"));
        Fixture {
            root,
            ids,
            code,
            instance,
            tier,
            control,
            other_tier_file,
            other_writable,
            admin_token,
            open_dir,
            other_marker,
            token_marker,
            code_marker,
            pids,
            controller,
            extra_cgroups: Vec::new(),
        }
    }

    /// The instance's policy: its dirs, a small environment, its pids cgroup.
    pub fn policy(&self) -> SandboxPolicy {
        SandboxPolicy::new(self.ids)
            .code_dir(&self.code)
            .instance_dir(&self.instance)
            .tier_dir(&self.tier)
            .control_block(&self.control)
            .pids_cgroup(&self.pids)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &self.tier)
            .env("TMPDIR", &self.tier)
            .env("LANG", "C.UTF-8")
            .env("EPHEMERA_TIER_DIR", &self.tier)
    }

    /// The paths a probe gets as `P`.
    pub fn paths(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.code, "instance": self.instance, "tier": self.tier,
            "control": self.control, "other": self.other_tier_file,
            "other_writable": self.other_writable, "token": self.admin_token,
            "open": self.open_dir, "root": self.root.path(),
            "pids": self.pids.path(),
        })
    }

    /// `/usr/bin/python3 -c PRELUDE+body P` under `policy`, in the code directory.
    pub fn python(&self, policy: &SandboxPolicy, body: &str) -> Probe {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg("-c")
            .arg(format!("{PRELUDE}\n{body}"))
            .arg(self.paths().to_string())
            .current_dir(&self.code)
            // Stands for a secret in the agent's environment.
            .env("EPHEMERA_ADMIN_TOKEN", &self.token_marker);
        self.run(policy, cmd)
    }

    /// Runs `cmd` under `policy` and collects its output (deadline 60 s;
    /// at the deadline everything in the pids cgroup is killed).
    pub fn run(&self, policy: &SandboxPolicy, mut cmd: Command) -> Probe {
        policy.prepare_dirs().expect("prepare_dirs");
        let applied = policy.apply_to(&mut cmd).expect("apply_to");
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd
            .spawn()
            .map_err(|e| applied.explain(e))
            .expect("spawn under the sandbox");
        let summary = applied.to_string();
        let (status, stdout, stderr) = self.collect(child, Duration::from_secs(60));
        let results = stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| Some((v.get("k")?.as_str()?.to_string(), v.get("v")?.clone())))
            .collect();
        Probe {
            status,
            stdout,
            stderr,
            results,
            summary,
        }
    }

    /// Waits for `child` and reads its output, killing the cgroup at the deadline.
    pub fn collect(&self, mut child: Child, within: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + within;
        let (tx, rx) = mpsc::channel();
        let mut readers = 0;
        if let Some(mut out) = child.stdout.take() {
            let tx = tx.clone();
            readers += 1;
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = out.read_to_string(&mut s);
                let _ = tx.send((1, s));
            });
        }
        if let Some(mut err) = child.stderr.take() {
            let tx = tx.clone();
            readers += 1;
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = err.read_to_string(&mut s);
                let _ = tx.send((2, s));
            });
        }
        drop(tx);
        let (mut stdout, mut stderr) = (String::new(), String::new());
        let mut killed = false;
        while readers > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok((1, s)) => {
                    stdout = s;
                    readers -= 1;
                }
                Ok((_, s)) => {
                    stderr = s;
                    readers -= 1;
                }
                Err(mpsc::RecvTimeoutError::Timeout) if !killed => {
                    // Something still holds the pipes: end it all.
                    let _ = child.kill();
                    self.kill_all();
                    killed = true;
                }
                Err(_) => break,
            }
        }
        let status = child.wait().expect("wait");
        assert!(
            !killed,
            "the probe did not finish within {within:?}: {stdout}\n{stderr}"
        );
        (status, stdout, stderr)
    }

    /// SIGKILLs everything in the pids cgroup (it stays).
    pub fn kill_all(&self) {
        for pid in self.pids.pids() {
            // SAFETY: plain FFI call with a pid from cgroup.procs.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Everything of the tenant uid (in the cgroup or not), then the cgroup.
        let _ = self.pids.set_max(0);
        let mut pids = self.pids.pids();
        pids.extend(tasks_of_uid(self.ids.uid));
        pids.sort_unstable();
        pids.dedup();
        let left = kill_and_reap(&pids, Duration::from_secs(10));
        if !left.is_empty() {
            eprintln!("cleanup: tasks still present after SIGKILL: {left:?}");
        }
        if let Err(e) = self.pids.kill_and_remove(Duration::from_secs(10)) {
            eprintln!("cleanup: {e}");
        }
        for cg in &self.extra_cgroups {
            if let Err(e) = fs::remove_dir(cg) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("cleanup: removing {}: {e}", cg.display());
                }
            }
        }
        self.controller.remove_base();
        // The TempDir removes the files (root may, whatever their owner).
    }
}

/// What a probe printed.
pub struct Probe {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// `emit(k, v)` results by key.
    pub results: BTreeMap<String, serde_json::Value>,
    /// `Applied`'s one-line summary.
    pub summary: String,
}

impl Probe {
    /// The result `k`, or a panic that shows everything the probe printed.
    pub fn get(&self, k: &str) -> &serde_json::Value {
        self.results.get(k).unwrap_or_else(|| {
            panic!(
                "probe printed no {k:?} (status {}):\nstdout: {}\nstderr: {}",
                self.status, self.stdout, self.stderr
            )
        })
    }

    /// The errno of a failed `attempt`, or a panic when it succeeded.
    pub fn errno(&self, k: &str) -> i64 {
        let v = self.get(k);
        assert_eq!(v["ok"], false, "{k} succeeded but must fail: {v}");
        v["errno"].as_i64().unwrap()
    }

    /// The value of a successful `attempt`, or a panic when it failed.
    pub fn ok(&self, k: &str) -> &serde_json::Value {
        let v = self.get(k);
        assert_eq!(
            v["ok"], true,
            "{k} failed but must succeed: {v}\nstderr: {}",
            self.stderr
        );
        &v["value"]
    }

    /// `(ret, errno)` of a `call`/`sc`.
    pub fn call(&self, k: &str) -> (i64, i64) {
        let v = self.get(k);
        (v["ret"].as_i64().unwrap(), v["errno"].as_i64().unwrap())
    }

    /// Asserts no marker appears anywhere in the output.
    pub fn assert_never_printed(&self, markers: &[&str]) {
        for m in markers {
            assert!(
                !self.stdout.contains(m) && !self.stderr.contains(m),
                "marker {m} leaked into the output:\n{}\n{}",
                self.stdout,
                self.stderr
            );
        }
    }

    /// Asserts the probe exited 0.
    pub fn assert_success(&self) {
        assert!(
            self.status.success(),
            "probe failed with {}:\nstdout: {}\nstderr: {}",
            self.status,
            self.stdout,
            self.stderr
        );
    }
}

/// Whether `path` exists (without following a final symlink).
pub fn exists(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok()
}
