//! Stopping long-running commands (`dev`, `controller`, `agent`) on Ctrl-C
//! or SIGTERM: a watch that turns true, and a future that resolves then.

use anyhow::Context;
use tokio::sync::watch;

/// A watch that turns true on Ctrl-C or SIGTERM.
pub fn stop_signal() -> anyhow::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}

/// Resolves once `rx` turns true (or its sender is gone).
pub async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
