//! Removing a cluster: on drop (its logs first when a test failed), and
//! what test processes that died without cleaning up left behind.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::docker::{docker, run_ok};
use super::{compose_dir, repo_root, ComposeCluster, AGENTS, PROJECT_PREFIX};

/// Removes what test projects of dead processes left behind (a test killed
/// with SIGKILL cannot clean up after itself).
pub fn reap_stale() {
    let t = Duration::from_secs(60);
    let Ok(names) = docker(
        &[
            "ps",
            "-a",
            "--format",
            "{{.Label \"com.docker.compose.project\"}}",
        ],
        t,
    ) else {
        return;
    };
    let mut projects: Vec<String> = names
        .lines()
        .chain(
            docker(&["network", "ls", "--format", "{{.Name}}"], t)
                .unwrap_or_default()
                .lines(),
        )
        .filter_map(|n| {
            let rest = n.strip_prefix(PROJECT_PREFIX)?;
            let mut parts = rest.splitn(3, '-');
            let pid: u32 = parts.next()?.parse().ok()?;
            let n = parts.next()?;
            let n: String = n.chars().take_while(|c| c.is_ascii_digit()).collect();
            let project = format!("{PROJECT_PREFIX}{pid}-{n}");
            // Ours (its data dir is in our temp dir: same host, same mount
            // namespace, so the same pid namespace too) and its process gone.
            (!n.is_empty()
                && std::env::temp_dir().join(&project).is_dir()
                && !Path::new(&format!("/proc/{pid}")).exists())
            .then_some(project)
        })
        .collect();
    projects.sort();
    projects.dedup();
    for project in projects {
        eprintln!("compose: removing {project}, left behind by a test process that is gone");
        teardown(&project, &std::env::temp_dir().join(&project));
    }
}

/// Removes project `project`'s containers, networks and volumes and the agent
/// data dirs under `data_root`; returns what could not be removed.
fn teardown(project: &str, data_root: &Path) -> Vec<String> {
    let t = Duration::from_secs(120);
    let label = format!("label=com.docker.compose.project={project}");
    let ids = |args: &[&str]| -> Vec<String> {
        docker(args, t)
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let networks = || -> Vec<String> {
        ids(&["network", "ls", "--format", "{{.Name}}"])
            .into_iter()
            .filter(|n| n == project || n.starts_with(&format!("{project}-")))
            .collect()
    };
    let volumes = || -> Vec<String> {
        ids(&["volume", "ls", "-q"])
            .into_iter()
            .filter(|v| v.starts_with(&format!("{project}_")))
            .collect()
    };
    // Paused containers cannot be stopped; unpause first.
    let paused = ids(&["ps", "-q", "--filter", &label, "--filter", "status=paused"]);
    if !paused.is_empty() {
        let mut args = vec!["unpause"];
        args.extend(paused.iter().map(String::as_str));
        let _ = docker(&args, t);
    }
    let dir = compose_dir();
    let down = run_ok(
        Command::new("docker-compose")
            .current_dir(&dir)
            .env("EPHEMERA_PROJECT", project)
            .env("EPHEMERA_DATA_ROOT", data_root)
            // Required by the file, unused by `down`.
            .env("EPHEMERA_ADMIN_TOKEN", "unused-by-down")
            .args([
                "-p",
                project,
                "-f",
                "docker-compose.yml",
                "-f",
                "docker-compose.otel.yml",
            ])
            .args(["down", "--volumes", "--remove-orphans", "--timeout", "2"]),
        t,
    );
    if let Err(e) = &down {
        eprintln!("compose: docker-compose down for {project}: {e}");
    }
    // Whatever is left, by label and name: containers (including function
    // containers agents started as siblings, labelled ephemera.owner), then
    // networks and volumes.
    let mut containers = ids(&["ps", "-aq", "--filter", &label]);
    for node in AGENTS {
        let data = data_root.join(node);
        let owner = format!("{node}-{}", sha256_prefix(&data.to_string_lossy()));
        containers.extend(ids(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=ephemera.owner={owner}"),
        ]));
    }
    if !containers.is_empty() {
        let mut args = vec!["rm", "-f", "-v"];
        args.extend(containers.iter().map(String::as_str));
        let _ = docker(&args, t);
    }
    for n in &networks() {
        let _ = docker(&["network", "rm", n], t);
    }
    let left_volumes = volumes();
    if !left_volumes.is_empty() {
        let mut args = vec!["volume", "rm", "-f"];
        args.extend(left_volumes.iter().map(String::as_str));
        let _ = docker(&args, t);
    }
    if data_root.starts_with(std::env::temp_dir())
        && data_root
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(PROJECT_PREFIX))
    {
        let _ = std::fs::remove_dir_all(data_root);
    }
    // What is still there.
    let mut left: Vec<String> = ids(&["ps", "-aq", "--filter", &label])
        .into_iter()
        .map(|c| format!("container {c}"))
        .collect();
    left.extend(networks().into_iter().map(|n| format!("network {n}")));
    left.extend(volumes().into_iter().map(|v| format!("volume {v}")));
    if data_root.exists() {
        left.push(format!("directory {}", data_root.display()));
    }
    left
}

/// First 8 hex digits of sha256(`text`), as the agent labels its containers.
fn sha256_prefix(text: &str) -> String {
    run_ok(
        Command::new("sh").args(["-c", "printf '%s' \"$1\" | sha256sum", "sh", text]),
        Duration::from_secs(10),
    )
    .map(|s| s.chars().take(8).collect())
    .unwrap_or_default()
}

impl Drop for ComposeCluster {
    fn drop(&mut self) {
        let t0 = Instant::now();
        if std::thread::panicking() || std::env::var_os("EPHEMERA_COMPOSE_LOGS").is_some() {
            // Every line to a file under target/ (the failure message keeps a tail).
            let all = self.logs(100_000);
            let file = repo_root()
                .join("target")
                .join(format!("compose-logs-{}.txt", self.project));
            match std::fs::write(&file, &all) {
                Ok(()) => eprintln!("compose: all logs in {}", file.display()),
                Err(e) => eprintln!("compose: cannot write {}: {e}", file.display()),
            }
            eprintln!("compose: logs of {}:\n{}", self.project, self.logs(60));
            let ps = self.docker(&[
                "ps",
                "-a",
                "--filter",
                &format!("label=com.docker.compose.project={}", self.project),
                "--format",
                "{{.Names}} {{.Status}} {{.Networks}}",
            ]);
            let net = self.docker(&[
                "network",
                "inspect",
                self.network(),
                "--format",
                "{{range .Containers}}{{.Name}}={{.IPv4Address}} {{end}}",
            ]);
            eprintln!(
                "compose: containers: {ps:?}\ncompose: network {}: {net:?}",
                self.network()
            );
        }
        let left = teardown(&self.project, &self.data_root);
        if left.is_empty() {
            eprintln!(
                "compose: {} removed (containers, networks, volumes, data) in {:.1?}",
                self.project,
                t0.elapsed()
            );
        } else {
            eprintln!(
                "compose: WARNING: could not remove everything of {}: {left:?}",
                self.project
            );
        }
    }
}
