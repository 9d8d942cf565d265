//! SIGINT/SIGTERM handling shared by the long-running commands: the first
//! signal asks for a graceful stop (stop taking work, drain); a second one
//! exits at once with the "interrupted" code.

use tokio::sync::watch;

/// A receiver that turns true on the first SIGINT or SIGTERM.
pub(crate) fn stop_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_one().await;
        tracing::warn!(
            "signal received: finishing what is in flight (send it again to exit at once)"
        );
        let _ = tx.send(true);
        wait_one().await;
        eprintln!("second signal: exiting without draining");
        std::process::exit(i32::from(super::EXIT_INTERRUPTED));
    });
    rx
}

async fn wait_one() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
