//! What `lb` does on a signal, besides SIGUSR2 (an upgrade, [`crate::lifecycle`]): SIGHUP
//! reopens the log and reloads; SIGINT and SIGTERM shut down gracefully, a second one at once.

use lb_net::Command;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::logging;

/// Each SIGHUP reopens the log file (for log rotation: lines from now on go to the file at the
/// `--log-file` path) and runs `reload`, as typed at the prompt: the same answer (printed
/// unless quiet) and the same log line (target `lb::control`), including "no configuration
/// file to reload" without --config.
pub(crate) async fn reload_on_hangup(
    mut hangup: Signal,
    handle: lb_net::Handle,
    quiet: bool,
    has_config: bool,
    log: logging::LogReopener,
) {
    while hangup.recv().await.is_some() {
        // Logged first, so this line is the last of the old file.
        if !has_config {
            // Log rotation without a config file: nothing failed, so no error.
            tracing::info!("SIGHUP: reopening the log file (no --config file to reload)");
            log.request();
            if !quiet {
                out!("SIGHUP: log file reopened; no --config file to reload");
            }
            continue;
        }
        tracing::info!("SIGHUP: reopening the log file and reloading the configuration");
        log.request();
        let answer = match handle.execute_command(Command::Reload).await {
            Ok(reply) => reply.to_string(),
            Err(e) => format!("error: {e}"),
        };
        if !quiet {
            out!("SIGHUP: {answer}");
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM. A second one ends the process at once, for when the
/// grace period is too long to wait. The handlers are installed at the call, not when the
/// future is first polled: from then on neither signal ends the process abruptly.
pub(crate) fn shutdown_signal(handle: lb_net::Handle) -> impl std::future::Future<Output = ()> {
    let handlers = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
    async move { on_shutdown_signal(handlers, handle).await }
}

async fn on_shutdown_signal(
    handlers: (std::io::Result<Signal>, std::io::Result<Signal>),
    handle: lb_net::Handle,
) {
    let (Ok(mut int), Ok(mut term)) = handlers else {
        tracing::error!("cannot install signal handlers; use `quit` to stop");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        () = handle.shutdown_requested() => return,
    };
    tracing::info!(signal = name, "shutting down gracefully (send it again to stop at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("second signal: closing open connections now");
        err!("lb: stopping at once");
        handle.shutdown_now();
        // The normal path then ends lb within moments (logging each cut connection); a third
        // signal, or a shutdown stuck beyond that, ends the process regardless.
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
        }
        err!("lb: shutdown did not complete; exiting");
        std::process::exit(1);
    });
}
