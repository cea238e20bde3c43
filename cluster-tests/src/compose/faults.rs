//! Faults, injected with `docker`: killing, restarting, pausing and
//! partitioning the cluster's containers.

use std::time::Duration;

use super::docker::docker;
use super::ComposeCluster;

impl ComposeCluster {
    /// Runs `docker ARGS` (30 s deadline).
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        docker(args, Duration::from_secs(30))
    }

    /// `docker kill -s KILL`.
    pub fn kill(&self, container: &str) {
        self.docker(&["kill", "-s", "KILL", container])
            .unwrap_or_else(|e| panic!("docker kill {container}: {e}"));
    }

    /// `docker start`.
    pub fn start(&self, container: &str) {
        self.docker(&["start", container])
            .unwrap_or_else(|e| panic!("docker start {container}: {e}"));
    }

    /// `docker pause`.
    pub fn pause(&self, container: &str) {
        self.docker(&["pause", container])
            .unwrap_or_else(|e| panic!("docker pause {container}: {e}"));
    }

    /// `docker unpause`.
    pub fn unpause(&self, container: &str) {
        self.docker(&["unpause", container])
            .unwrap_or_else(|e| panic!("docker unpause {container}: {e}"));
    }

    /// Cuts controller `id` off the cluster network (its published port,
    /// on its own access network, still answers).
    pub fn disconnect_controller(&self, id: u64) {
        let c = self.controller_container(id);
        self.docker(&["network", "disconnect", self.network(), &c])
            .unwrap_or_else(|e| panic!("docker network disconnect {c}: {e}"));
    }

    /// Puts controller `id` back on the cluster network under its service name.
    pub fn reconnect_controller(&self, id: u64) {
        let c = self.controller_container(id);
        let alias = format!("controller-{id}");
        self.docker(&["network", "connect", "--alias", &alias, self.network(), &c])
            .unwrap_or_else(|e| panic!("docker network connect {c}: {e}"));
    }
}
