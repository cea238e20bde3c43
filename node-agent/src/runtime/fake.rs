//! An in-memory runtime for unit tests of the tenant actor: instances echo
//! their input, and a few input keys make them misbehave.
//!
//! Input keys: `{"sleep_ms": N}` waits N ms, `{"exit": true}` fails as if the
//! launcher exited, `{"nonjson": true}` fails with a non-JSON answer.
//! Every applied limit is recorded in [`FakeState`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ephemera_control_block::Counters;
use futures::future::BoxFuture;
use futures::FutureExt;

use super::{Activation, Instance, InstanceSpec, Limits, Output, RunError, Runtime, RuntimeError};

/// What the fake runtime saw, shared with the test.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Current limit of every live instance.
    pub limits: BTreeMap<String, u64>,
    /// Usage the test wants an instance to report.
    pub usage: BTreeMap<String, u64>,
    /// Instances whose safeguard flag is raised.
    pub safeguard: BTreeMap<String, bool>,
    /// Ids of every instance ever started, in order.
    pub started: Vec<String>,
    /// Ids of every instance stopped, in order.
    pub stopped: Vec<String>,
}

/// The fake runtime.
#[derive(Debug, Clone, Default)]
pub struct FakeRuntime {
    /// Shared with the test.
    pub state: Arc<Mutex<FakeState>>,
}

static NEXT_PID: AtomicU32 = AtomicU32::new(1000);

impl Runtime for FakeRuntime {
    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<Box<dyn Instance>, RuntimeError>> {
        let state = self.state.clone();
        async move {
            if let Ok(mut s) = state.lock() {
                s.limits.insert(spec.instance_id.clone(), spec.memory_bytes);
                s.started.push(spec.instance_id.clone());
            }
            let limits = Arc::new(FakeLimits {
                id: spec.instance_id.clone(),
                state: state.clone(),
            });
            Ok(Box::new(FakeInstance {
                id: spec.instance_id,
                pid: NEXT_PID.fetch_add(1, Ordering::Relaxed),
                limits,
            }) as Box<dyn Instance>)
        }
        .boxed()
    }
}

#[derive(Debug)]
struct FakeInstance {
    id: String,
    pid: u32,
    limits: Arc<FakeLimits>,
}

impl Instance for FakeInstance {
    fn launcher_pid(&self) -> u32 {
        self.pid
    }
    fn limits(&self) -> Arc<dyn Limits> {
        self.limits.clone()
    }
    fn run(&mut self, act: Activation) -> BoxFuture<'_, Result<Output, RunError>> {
        async move {
            if let Some(ms) = act.input.get("sleep_ms").and_then(|v| v.as_u64()) {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            if act.input.get("exit").is_some() {
                return Err(RunError::Exited {
                    status: "status 3".into(),
                    stderr_tail: String::new(),
                    idle: false,
                });
            }
            if act.input.get("nonjson").is_some() {
                return Err(RunError::NonJson {
                    output: "hello".into(),
                });
            }
            Ok(Output {
                result: serde_json::json!({ "echo": act.input }),
                duration: Duration::from_micros(1),
            })
        }
        .boxed()
    }
    fn stop(self: Box<Self>) -> BoxFuture<'static, ()> {
        let state = self.limits.state.clone();
        let id = self.id.clone();
        async move {
            if let Ok(mut s) = state.lock() {
                s.limits.remove(&id);
                s.stopped.push(id);
            }
        }
        .boxed()
    }
}

#[derive(Debug)]
struct FakeLimits {
    id: String,
    state: Arc<Mutex<FakeState>>,
}

impl Limits for FakeLimits {
    fn set_limit(&self, bytes: u64) -> BoxFuture<'_, Result<(), RuntimeError>> {
        if let Ok(mut s) = self.state.lock() {
            s.limits.insert(self.id.clone(), bytes);
        }
        futures::future::ready(Ok(())).boxed()
    }
    fn announce_limit(&self, _bytes: u64) {}
    fn usage(&self) -> Option<u64> {
        self.state.lock().ok()?.usage.get(&self.id).copied()
    }
    fn max_usage(&self) -> Option<u64> {
        self.usage()
    }
    fn counters(&self) -> Counters {
        Counters::default()
    }
    fn take_safeguard(&self) -> bool {
        self.state
            .lock()
            .ok()
            .and_then(|mut s| s.safeguard.remove(&self.id))
            .unwrap_or(false)
    }
}
