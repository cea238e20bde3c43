//! Group commit. Every committed entry costs the leader an fsync, so instead
//! of one entry per command, the writer drains every command that queued up
//! while the previous entry was being committed and proposes them as one
//! `Command::Batch`. Under load the batch grows with the queue; alone, a
//! command goes out on its own with no added wait. Up to [`IN_FLIGHT`]
//! batches are proposed at once, so one batch's fsync overlaps another's
//! replication; the queue is drained only when a slot frees, which is what
//! lets batches grow under load. A batch of only lazy commands (releases
//! nobody waits for) lingers up to [`LINGER`] for a command to join it.

use ephemera_storage::{Command, Response};
use tokio::sync::{mpsc, oneshot};

use super::WriteError;

/// Most commands in one entry.
const MAX_BATCH: usize = 512;
/// Most batches proposed and not yet answered.
const IN_FLIGHT: usize = 4;
/// How long a batch of only lazy commands waits for company.
const LINGER: std::time::Duration = std::time::Duration::from_millis(3);

/// One queued write and where its answer goes.
pub(super) struct Pending {
    pub(super) cmd: Command,
    /// Nobody waits for it (a release after its reply): it may wait up to
    /// [`LINGER`] for another command to share its entry, so a client's
    /// next `Schedule` carries its previous `Complete` in one fsync.
    pub(super) lazy: bool,
    pub(super) reply: oneshot::Sender<Result<Response, WriteError>>,
}

/// Runs until every sender is dropped. `commit` proposes one command (a
/// single one or a `Batch`) and returns its response.
pub(super) async fn run<F, Fut>(mut rx: mpsc::Receiver<Pending>, commit: F)
where
    F: Fn(Command) -> Fut,
    Fut: std::future::Future<Output = Result<Response, WriteError>> + Send + 'static,
{
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        drain(&mut rx, &mut batch);
        if batch.iter().all(|p| p.lazy) {
            if let Ok(Some(p)) = tokio::time::timeout(LINGER, rx.recv()).await {
                batch.push(p);
                drain(&mut rx, &mut batch);
            }
        }
        if batch.len() == 1 {
            let Pending { cmd, reply, .. } = batch.pop().expect("one pending write");
            let fut = commit(cmd);
            tokio::spawn(async move {
                let _ = reply.send(fut.await);
                drop(slot);
            });
            continue;
        }
        let (commands, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        let fut = commit(Command::Batch { commands });
        tokio::spawn(async move {
            answer(replies, fut.await);
            drop(slot);
        });
    }
}

/// Moves what is queued now into `batch`, up to [`MAX_BATCH`].
fn drain(rx: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
}

/// Hands each waiting writer its own response from a batch's.
fn answer(
    replies: Vec<oneshot::Sender<Result<Response, WriteError>>>,
    result: Result<Response, WriteError>,
) {
    let n = replies.len();
    match result {
        Ok(Response::Batch { responses }) if responses.len() == n => {
            for (reply, resp) in replies.into_iter().zip(responses) {
                let _ = reply.send(Ok(resp));
            }
        }
        Ok(other) => {
            let e = WriteError::Raft(format!(
                "a batch of {n} commands was answered with {other:?}"
            ));
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn complete(id: &str) -> Command {
        Command::Complete {
            invocation_id: id.into(),
        }
    }

    /// Runs the writer over a fake commit that records what it proposes.
    fn writer() -> (mpsc::Sender<Pending>, Arc<Mutex<Vec<Command>>>) {
        let (tx, rx) = mpsc::channel(16);
        let proposed = Arc::new(Mutex::new(Vec::new()));
        let seen = proposed.clone();
        tokio::spawn(run(rx, move |cmd: Command| {
            let seen = seen.clone();
            async move {
                let resp = match &cmd {
                    Command::Batch { commands } => Response::Batch {
                        responses: commands.iter().map(|_| Response::Ok).collect(),
                    },
                    _ => Response::Ok,
                };
                seen.lock().unwrap().push(cmd);
                Ok(resp)
            }
        }));
        (tx, proposed)
    }

    fn pending(
        cmd: Command,
        lazy: bool,
    ) -> (Pending, oneshot::Receiver<Result<Response, WriteError>>) {
        let (reply, rx) = oneshot::channel();
        (Pending { cmd, lazy, reply }, rx)
    }

    #[tokio::test]
    async fn a_lazy_release_shares_the_entry_of_the_command_after_it() {
        let (tx, proposed) = writer();
        let (a, ra) = pending(complete("a"), true);
        let (b, rb) = pending(complete("b"), false);
        // Both queued before the writer looks: one entry, in queue order.
        tx.send(a).await.unwrap();
        tx.send(b).await.unwrap();
        assert!(matches!(ra.await.unwrap(), Ok(Response::Ok)));
        assert!(matches!(rb.await.unwrap(), Ok(Response::Ok)));
        let proposed = proposed.lock().unwrap().clone();
        assert_eq!(
            proposed,
            [Command::Batch {
                commands: vec![complete("a"), complete("b")]
            }]
        );
    }

    #[tokio::test]
    async fn a_lone_lazy_release_is_still_committed() {
        let (tx, proposed) = writer();
        let (a, ra) = pending(complete("a"), true);
        tx.send(a).await.unwrap();
        assert!(matches!(ra.await.unwrap(), Ok(Response::Ok)));
        assert_eq!(*proposed.lock().unwrap(), [complete("a")]);
    }
}
