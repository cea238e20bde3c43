//! The embedded cluster as a user starts it: `ephemera dev` (the built
//! binary) on a data dir of the test's, on port 0, and the CLI against it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::binary;

/// The `ephemera` binary of this build.
pub fn ephemera() -> PathBuf {
    binary("ephemera")
}

/// A running `ephemera dev`, stopped (SIGTERM, then SIGKILL) on drop.
pub struct DevCluster {
    child: Child,
    /// The credentials file `ephemera dev` saved its admin token in (one per
    /// cluster, so tests never touch the user's own).
    pub credentials: PathBuf,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The endpoint it printed.
    pub endpoint: String,
    /// Everything it printed on stdout so far.
    pub banner: Vec<String>,
    /// The cluster CA's certificate (`<data-dir>/tls/ca.pem`).
    pub ca: PathBuf,
}

impl DevCluster {
    /// Starts `ephemera dev --agents N` on `data_dir` and waits for its endpoint line.
    pub fn start(data_dir: &Path, agents: usize) -> DevCluster {
        Self::start_with(data_dir, agents, &[])
    }

    /// As [`DevCluster::start`], with more flags for `ephemera dev`.
    pub fn start_with(data_dir: &Path, agents: usize, flags: &[&str]) -> DevCluster {
        let credentials = data_dir.join("credentials.json");
        let mut child = Command::new(ephemera())
            .args([
                "dev",
                "--listen",
                "127.0.0.1:0",
                "--agents",
                &agents.to_string(),
                "--node-memory",
                "4GiB",
            ])
            .args(flags)
            .arg("--data-dir")
            .arg(data_dir)
            .env("EPHEMERA_LOG", "warn")
            .env("EPHEMERA_CREDENTIALS", &credentials)
            .env_remove("EPHEMERA_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ephemera dev");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut banner = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let endpoint = line.strip_prefix("endpoint: ").map(str::to_string);
                    banner.push(line);
                    if let Some(endpoint) = endpoint {
                        // Keep draining stdout so the server never blocks on a full pipe.
                        std::thread::spawn(move || while rx.recv().is_ok() {});
                        return DevCluster {
                            child,
                            credentials,
                            ca: data_dir.join("tls").join("ca.pem"),
                            data_dir: data_dir.to_path_buf(),
                            endpoint,
                            banner,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "ephemera dev printed no endpoint within 90 s; output so far: {banner:?}"
                    );
                }
            }
        }
    }

    /// The `ephemera dev` process's pid (its agents run inside it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs `ephemera ARGS…` against this cluster, with the token `ephemera
    /// dev` saved for the CLI.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_token(args, None)
    }

    /// Runs `ephemera ARGS…` with `EPHEMERA_TOKEN=token` (or the saved token when `None`).
    pub fn cli_with_token(&self, args: &[&str], token: Option<&str>) -> Output {
        let mut cmd = Command::new(ephemera());
        cmd.args(args)
            .env("EPHEMERA_ENDPOINT", &self.endpoint)
            .env("EPHEMERA_CREDENTIALS", &self.credentials)
            .env_remove("EPHEMERA_TOKEN");
        if let Some(t) = token {
            cmd.env("EPHEMERA_TOKEN", t);
        }
        cmd.output().expect("run the ephemera CLI")
    }

    /// Runs a CLI command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`ephemera {}` failed: {}\nstdout: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a CLI command that must fail; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "`ephemera {}` should have failed but printed {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// Deploys a function whose code is `dir`.
    pub fn deploy(&self, tenant: &str, name: &str, dir: &Path, cmd: &str, memory: &str) {
        self.ok(&[
            "fn",
            "deploy",
            "--tenant",
            tenant,
            "--name",
            name,
            "--dir",
            dir.to_str().unwrap(),
            "--cmd",
            cmd,
            "--memory",
            memory,
            "--timeout",
            "30",
        ]);
    }

    /// Stops the cluster the way Ctrl-C would, and waits for it to exit.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let _ = ephemera_sys::process::kill(self.child.id() as i32, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}
