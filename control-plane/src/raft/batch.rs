//! Group commit. Every committed entry costs the leader an fsync, so instead
//! of one entry per command, the writer drains every command that queued up
//! while the previous entry was being committed and proposes them as one
//! `Command::Batch`. Under load the batch grows with the queue; alone, a
//! command goes out on its own with no added wait.

use ephemera_storage::{Command, Response};
use tokio::sync::{mpsc, oneshot};

use super::WriteError;

/// Most commands in one entry.
const MAX_BATCH: usize = 512;

/// One queued write and where its answer goes.
pub(super) type Pending = (Command, oneshot::Sender<Result<Response, WriteError>>);

/// Runs until every sender is dropped. `commit` proposes one command (a
/// single one or a `Batch`) and returns its response.
pub(super) async fn run<F, Fut>(mut rx: mpsc::Receiver<Pending>, commit: F)
where
    F: Fn(Command) -> Fut,
    Fut: std::future::Future<Output = Result<Response, WriteError>>,
{
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        if batch.len() == 1 {
            let (cmd, reply) = batch.pop().expect("one pending write");
            let _ = reply.send(commit(cmd).await);
            continue;
        }
        let (commands, replies): (Vec<Command>, Vec<_>) = batch.into_iter().unzip();
        let n = commands.len();
        match commit(Command::Batch { commands }).await {
            Ok(Response::Batch { responses }) if responses.len() == n => {
                for (reply, resp) in replies.into_iter().zip(responses) {
                    let _ = reply.send(Ok(resp));
                }
            }
            Ok(other) => {
                let msg = format!("a batch of {n} commands was answered with {other:?}");
                for reply in replies {
                    let _ = reply.send(Err(WriteError::Raft(msg.clone())));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(match &e {
                        WriteError::NoLeader => WriteError::NoLeader,
                        WriteError::Forward {
                            leader,
                            addr,
                            reason,
                        } => WriteError::Forward {
                            leader: *leader,
                            addr: addr.clone(),
                            reason: reason.clone(),
                        },
                        WriteError::Raft(_) => WriteError::Raft(msg.clone()),
                    }));
                }
            }
        }
    }
}
