//! The invocations this agent is running now. Each one is listed from the
//! moment its `Run` arrives until its instance answers (even if the
//! controller stopped waiting), and every heartbeat carries the list: it is
//! what keeps each placement's lease alive at the controllers.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

/// The set of running invocation ids; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Running(Arc<Mutex<HashSet<String>>>);

impl Running {
    /// Lists `id` until the returned guard is dropped.
    pub fn start(&self, id: &str) -> RunningGuard {
        self.lock().insert(id.to_string());
        RunningGuard {
            set: self.clone(),
            id: id.to_string(),
        }
    }

    /// The ids running now.
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().iter().cloned().collect();
        ids.sort();
        ids
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Keeps one invocation listed while it lives.
#[derive(Debug)]
pub struct RunningGuard {
    set: Running,
    id: String,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn listed_while_the_guard_lives() {
        let running = super::Running::default();
        let a = running.start("a");
        let b = running.start("b");
        assert_eq!(running.list(), ["a", "b"]);
        drop(a);
        assert_eq!(running.list(), ["b"]);
        drop(b);
        assert!(running.list().is_empty());
    }
}
