//! Listening sockets as the balancer wants them: `SO_REUSEADDR`, `SO_REUSEPORT` for one
//! listener per worker thread, a deep backlog, and a refusal to share a port held by another
//! process.

use std::net::SocketAddr;

/// Binds `count` listeners (at least one) sharing `addr` with `SO_REUSEPORT`, one per worker
/// thread; port 0 picks one free port for all of them.
///
/// `SO_REUSEPORT` alone would also let the group join a port another process already listens
/// on with the same option (another `lb`, HAProxy), silently splitting that port's traffic
/// between the two. So a fixed port is first bound once without it: if anything holds the port,
/// that fails with "address in use", as it would for a single listener.
pub fn bind_shared(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        drop(probe_bind(addr)?);
    }
    let first = bind(addr, true)?;
    let local = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..count {
        listeners.push(bind(local, true)?);
    }
    Ok(listeners)
}

/// Binds (without listening, without `SO_REUSEPORT`) to check that nobody holds `addr`.
fn probe_bind(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Binds a listening socket the way the balancer wants it: `SO_REUSEADDR` (restart without
/// waiting for old connections in TIME_WAIT), `SO_REUSEPORT` when `reuse_port` (several
/// listeners, one per worker thread, share the port and the kernel spreads connections over
/// them), and a backlog of 4096 so a burst of connections is queued rather than refused.
///
/// Returns a standard listener in non-blocking mode: turn it into a tokio one
/// (`TcpListener::from_std`) on the runtime that will accept on it.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Sets `TCP_NODELAY` on a listening socket, and says whether the sockets it accepts have it
/// from the start, saving a system call per connection. Linux copies a listener's TCP options
/// to each connection it accepts (checked by a test); elsewhere, or if setting it failed, the
/// answer is `false` and each accepted socket is to be set.
pub(crate) fn nodelay_inherited<'a, L>(listener: &'a L) -> bool
where
    socket2::SockRef<'a>: From<&'a L>,
{
    cfg!(target_os = "linux") && socket2::SockRef::from(listener).set_nodelay(true).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let listener =
            tokio::net::TcpListener::from_std(bind("127.0.0.1:0".parse().unwrap(), false).unwrap())
                .unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let (accepted, _) = accepted.unwrap();
        assert!(!accepted.nodelay().unwrap(), "off by default");
        drop((client, accepted));

        assert!(nodelay_inherited(&listener));
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (_client, accepted) = tokio::join!(client, listener.accept());
        assert!(accepted.unwrap().0.nodelay().unwrap());
    }
}
