//! The one error type of `lb-net`.

use std::io;
use std::net::SocketAddr;

/// What can go wrong in the proxy, the checker, or a control command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pool refused the change (duplicate backend, unknown backend, bad weight, ...).
    #[error(transparent)]
    Pool(#[from] lb_core::Error),
    /// A control command that does not parse. The message names what was wrong.
    #[error("{0}")]
    BadCommand(String),
    /// A backend host name that does not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The name as given.
        host: String,
        /// The resolver's answer (no such name, no address, a timeout).
        #[source]
        source: io::Error,
    },
    /// `reload` failed; the running configuration is unchanged.
    #[error("reload failed, configuration unchanged: {0}")]
    Reload(String),
    /// `upgrade` failed: no new process took over, and this one keeps serving.
    #[error("upgrade failed, this process keeps serving: {0}")]
    Upgrade(String),
    /// `upgrade` asked of a process that is already shutting down (a successor took over, or
    /// it was told to stop): there is nothing to hand over.
    #[error("no upgrade: this process is shutting down (a successor, if one took over, serves)")]
    ShuttingDown,
    /// A setting whose value is not valid; the message names the setting and the expected form.
    #[error("{0}")]
    InvalidSetting(String),
    /// A health check specification that does not parse.
    #[error("invalid health check {0}")]
    InvalidHealthCheck(String),
    /// The listening socket could not be set up.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address the listener was to bind.
        addr: SocketAddr,
        /// Why (address in use, permission denied, ...).
        #[source]
        source: io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_refused_while_shutting_down_does_not_claim_to_keep_serving() {
        let refused = Error::Upgrade("the new process exited".into()).to_string();
        assert!(refused.starts_with("upgrade failed, this process keeps serving: "));
        let stopping = Error::ShuttingDown.to_string();
        assert!(!stopping.contains("keeps serving"), "{stopping}");
        assert!(stopping.contains("shutting down"), "{stopping}");
    }
}
