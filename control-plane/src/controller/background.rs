//! Writes that finish after the reply: an invocation's release (`Complete`)
//! and its first-invocation profile. The reply does not wait for them to
//! commit, so they are off the invocation's critical path; they stay safe
//! because
//!
//! - each is queued into the group-commit writer *before* the reply goes
//!   out, lazily: it waits up to a few milliseconds for another command
//!   (often the same client's next `Schedule`) to share its Raft entry;
//! - each is idempotent (a `Complete` of a finished or unknown invocation
//!   is a no-op that still records it as completed) and retried across
//!   leader changes for as long as a foreground write would be;
//! - one that is lost anyway (this controller dies) is a placement no agent
//!   vouches for any more, which the leader releases when its lease runs
//!   out (`leases.rs`), so N_alloc/N_req come back exactly;
//! - reads of this controller's state that a caller uses to check its own
//!   effects (status, a function's record, the function list; not the raw
//!   `Dump`) first wait for the
//!   background writes issued before them ([`Background::settled`]), and a
//!   placement refused for capacity or quota waits for them and is tried
//!   once more, so a caller never sees its own finished invocation hold
//!   memory or quota.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use ephemera_storage::{Command, Response};
use tokio::sync::Notify;

use super::{write_retrying, Controller};
use crate::raft::WriteError;

/// How long a read waits for earlier background writes before it reads anyway.
pub(super) const SETTLE_FOR: Duration = Duration::from_secs(5);

/// Background writes not yet answered, by ticket.
#[derive(Debug, Default)]
pub struct Background {
    /// The next ticket and the outstanding ones.
    tickets: Mutex<(u64, BTreeSet<u64>)>,
    /// Woken whenever a ticket ends.
    ended: Notify,
}

impl Background {
    fn begin(&self) -> u64 {
        let mut t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = t.0;
        t.0 += 1;
        t.1.insert(ticket);
        ticket
    }

    fn end(&self, ticket: u64) {
        self.tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .remove(&ticket);
        self.ended.notify_waiters();
    }

    /// Whether any background write is outstanding.
    pub fn busy(&self) -> bool {
        !self
            .tickets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .is_empty()
    }

    /// Waits (up to `timeout`) until every background write issued before
    /// this call has been answered; returns whether they all were.
    /// The tickets counted are those issued when this is called, not when
    /// the future is first polled.
    pub fn settled(&self, timeout: Duration) -> impl std::future::Future<Output = bool> + '_ {
        let upto = self.tickets.lock().unwrap_or_else(|e| e.into_inner()).0;
        async move { self.settled_upto(upto, timeout).await }
    }

    async fn settled_upto(&self, upto: u64, timeout: Duration) -> bool {
        let done = || {
            let t = self.tickets.lock().unwrap_or_else(|e| e.into_inner());
            t.1.first().is_none_or(|first| *first >= upto)
        };
        let wait = async {
            loop {
                let ended = self.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if done() {
                    return;
                }
                ended.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl Controller {
    /// Queues `cmd` now and lets it commit (retried) after the caller moved
    /// on; `what` names it in a warning if it never commits.
    pub(super) async fn write_later(&self, cmd: Command, what: String) {
        let ticket = self.background.begin();
        let first = self.node.submit(cmd.clone(), true).await;
        let (node, background) = (self.node.clone(), self.background.clone());
        tokio::spawn(async move {
            let outcome = match first {
                Ok(rx) => match rx.await {
                    Ok(Ok(resp)) => Ok(resp),
                    Ok(Err(e @ (WriteError::NoLeader | WriteError::Forward { .. }))) => {
                        tracing::debug!(error = %e, "{what}: retrying in the background");
                        write_retrying(&node, cmd).await
                    }
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err(WriteError::Raft("the writer has stopped".into()).into()),
                },
                Err(e) => Err(e.into()),
            };
            match outcome {
                Ok(Response::Rejected { reason }) => {
                    tracing::warn!(%reason, "{what}: refused");
                }
                Ok(_) => {}
                // The lease releases a lost placement; a lost profile is
                // taken again by the next first invocation.
                Err(e) => tracing::warn!(error = %e, "{what}: not committed"),
            }
            background.end(ticket);
        });
    }

    /// Releases `invocation_id`'s placement after the reply (see the module).
    pub(super) async fn release_later(&self, invocation_id: &str) {
        self.write_later(
            Command::Complete {
                invocation_id: invocation_id.to_string(),
            },
            format!("releasing the placement of {invocation_id}"),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn settled_waits_only_for_earlier_tickets() {
        let b = Arc::new(Background::default());
        let first = b.begin();
        assert!(b.busy());
        assert!(!b.settled(Duration::from_millis(20)).await);
        let waiter = {
            let b = b.clone();
            let upto = b.tickets.lock().unwrap().0;
            tokio::spawn(async move { b.settled_upto(upto, Duration::from_secs(10)).await })
        };
        // A later ticket does not hold up the earlier waiter.
        let _later = b.begin();
        b.end(first);
        assert!(waiter.await.unwrap());
        assert!(b.busy());
    }
}
