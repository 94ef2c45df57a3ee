//! Where a balancer's long-lived tasks run: accept loops on the worker runtimes, health
//! checkers on the control runtime. The [`Handle`](crate::Handle) starts them when pools and
//! listeners are added, through [`Tasks`], which hides the connector's type from it.

use std::fmt;
use std::sync::Arc;

use crate::accept::Listening;
use crate::connector::Connector;
use crate::error::Error;
use crate::health_check;
use crate::listener::ListenerRuntime;
use crate::pools::PoolRuntime;
use crate::proxy::ProxyShared;

/// Starts the tasks that serve pools and listeners.
pub(crate) trait Tasks: Send + Sync + fmt::Debug {
    /// Starts `pool`'s health checker, if the balancer is running and none runs yet (a pool
    /// added before then gets its checker when the balancer starts).
    fn start_checker(&self, pool: &Arc<PoolRuntime>);

    /// Starts an accept loop on each of `sockets` for `listener`, one per worker runtime.
    fn start_listener(
        self: Arc<Self>,
        listener: Arc<ListenerRuntime>,
        sockets: Vec<std::net::TcpListener>,
    ) -> Result<(), Error>;
}

impl<C: Connector> Tasks for ProxyShared<C> {
    fn start_checker(&self, pool: &Arc<PoolRuntime>) {
        let control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let Some(runtime) = control.as_ref() else { return };
        let mut checker = pool.checker.lock().unwrap_or_else(|p| p.into_inner());
        if checker.is_some() {
            return;
        }
        let shutdown = Arc::clone(&self.shutdown);
        let task = runtime.spawn(health_check::run(
            pool.pool.clone(),
            Arc::clone(&self.connector),
            pool.settings.load().health.clone(),
            Arc::clone(&pool.checks),
            Arc::clone(&pool.wake),
            async move { shutdown.requested().await },
        ));
        *checker = Some(task.abort_handle());
    }

    fn start_listener(
        self: Arc<Self>,
        listener: Arc<ListenerRuntime>,
        sockets: Vec<std::net::TcpListener>,
    ) -> Result<(), Error> {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let runtimes = if workers.is_empty() {
            vec![tokio::runtime::Handle::try_current().map_err(|_| {
                Error::InvalidSetting(
                    "a listener needs a tokio runtime or worker runtimes to accept on".into(),
                )
            })?]
        } else {
            workers
        };
        if let Some(address) = listener.address {
            let congestion = sockets.first().and_then(crate::CongestionControl::of);
            let congestion = congestion.as_deref().unwrap_or("?");
            tracing::info!(listener = %listener.name, address = %address, sockets = sockets.len(), congestion_control = congestion, "listening");
        }
        match sockets.iter().map(std::net::TcpListener::try_clone).collect() {
            Ok(kept) => listener.keep_sockets(kept),
            // Serving matters more: without them, an upgrade's successor binds this address
            // itself (and fails, saying why, while this process keeps serving).
            Err(e) => tracing::warn!(
                listener = %listener.name,
                error = %e,
                "cannot keep the listening sockets for an upgrade"
            ),
        }
        for (i, socket) in sockets.into_iter().enumerate() {
            let (shared, listener) = (Arc::clone(&self), Arc::clone(&listener));
            runtimes[i % runtimes.len()].spawn(async move {
                // Registered with the reactor of the runtime that accepts on it.
                match Listening::new(socket) {
                    Ok(socket) => shared.accept_on(&listener, &socket).await,
                    Err(e) => tracing::error!(
                        listener = %listener.name,
                        error = %e,
                        "cannot register a listening socket"
                    ),
                }
            });
        }
        Ok(())
    }
}
