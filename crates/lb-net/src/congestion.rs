//! The TCP congestion control of a listener's client connections ([`CongestionControl`]).
//!
//! It is set on the listening sockets: Linux gives each accepted connection its listener's
//! algorithm, so no connection pays a system call for it. Setting it on an accepted connection
//! would be too late anyway: an algorithm that paces (BBR) has turned pacing on by the time
//! `accept` returns, and pacing stays on under the next algorithm.
//!
//! Why `auto` leaves loopback listeners unpaced: BBR sends at a rate it estimates, and without
//! the `fq` queueing discipline the kernel paces each connection itself, arming a timer
//! whenever a connection is ahead of its rate. Over a network that spreads bursts out as the
//! path would; on loopback, where the "path" is memory and the rate estimate is whatever the
//! CPU managed, it only adds timers and interrupts to every large transfer. Measured with
//! `benches/compare/run.sh -t bulk` on a host whose default is `bbr`: about half the CPU per
//! megabyte relayed with `cubic` on the client side (docs/performance.md).
//!
//! Backend connections follow the same rule by themselves ([`apply_for_backend`], called by the
//! TCP connector before each connect): one to a loopback address gets `cubic` when the system's
//! default paces, and any other the system's default, with no system call.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};

/// Which congestion control algorithm a listener's client connections use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CongestionControl {
    /// The system's default (`net.ipv4.tcp_congestion_control`), except on a listener bound to
    /// a loopback address when that default paces (`bbr`): `cubic` there (`reno` where the
    /// kernel has no `cubic`). Clients on loopback are on the same host, with no network to
    /// pace for.
    #[default]
    Auto,
    /// The system's default, wherever the listener is.
    System,
    /// This algorithm, by the kernel's name for it (`cubic`, `reno`, `bbr`, `dctcp`, ...).
    Named(String),
}

/// Longest algorithm name the kernel takes (`TCP_CA_NAME_MAX` less its terminating zero).
const NAME_MAX: usize = 15;

/// Where Linux keeps the system's default algorithm.
const SYSTEM_DEFAULT: &str = "/proc/sys/net/ipv4/tcp_congestion_control";

/// Where Linux lists the algorithms loaded now (others may load when asked for).
const AVAILABLE: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";

impl FromStr for CongestionControl {
    type Err = String;

    /// `auto`, `system`, or an algorithm's name: only its form is checked here
    /// ([`CongestionControl::check`] asks the kernel whether it has it).
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "auto" => return Ok(CongestionControl::Auto),
            "system" => return Ok(CongestionControl::System),
            _ => {}
        }
        if s.len() > NAME_MAX {
            return Err(format!(
                "invalid congestion control {s:?}: too long (the kernel's names have at most \
                 {NAME_MAX} characters)"
            ));
        }
        let well_formed =
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !well_formed {
            return Err(format!(
                "invalid congestion control {s:?}: expected auto, system or an algorithm's name \
                 (cubic, reno, bbr, ...: letters, digits, '_' or '-')"
            ));
        }
        Ok(CongestionControl::Named(s.to_owned()))
    }
}

impl fmt::Display for CongestionControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CongestionControl::Auto => "auto",
            CongestionControl::System => "system",
            CongestionControl::Named(name) => name,
        })
    }
}

impl CongestionControl {
    /// Whether this system can give sockets this setting: always for `auto` and `system`;
    /// for an algorithm, whether the kernel takes it on a socket (it may load a module for
    /// it). The error names the algorithms the kernel has loaded.
    pub fn check(&self) -> Result<(), String> {
        let CongestionControl::Named(name) = self else { return Ok(()) };
        // An IPv6 socket where the host has no IPv4.
        let (stream, tcp) = (socket2::Type::STREAM, Some(socket2::Protocol::TCP));
        let probe = socket2::Socket::new(socket2::Domain::IPV4, stream, tcp)
            .or_else(|_| socket2::Socket::new(socket2::Domain::IPV6, stream, tcp))
            .map_err(|e| {
                format!("congestion control {name}: cannot make a socket to try it: {e}")
            })?;
        set(&probe, name).map_err(|e| {
            let why = match e.kind() {
                io::ErrorKind::NotFound => "the kernel has no algorithm of that name".to_owned(),
                io::ErrorKind::PermissionDenied => "not allowed to this user (only root may use \
                     algorithms not in net.ipv4.tcp_allowed_congestion_control)"
                    .to_owned(),
                _ => e.to_string(),
            };
            let offered = std::fs::read_to_string(AVAILABLE).unwrap_or_default();
            let lower = name.to_ascii_lowercase();
            let offered = match offered.split_whitespace().find(|n| **n == lower && lower != *name)
            {
                Some(known) => format!(" (names are lower case: {known})"),
                None if offered.trim().is_empty() => String::new(),
                None => format!(" (it has: {})", offered.trim()),
            };
            format!("congestion control {name}: {why}{offered}")
        })
    }

    /// The algorithm a listener on `local` gets, or `None` to leave the system's default (or
    /// where the system does not say what its default is).
    fn algorithm(&self, local: SocketAddr) -> Option<String> {
        match self {
            CongestionControl::Named(name) => Some(name.clone()),
            CongestionControl::System => read_system_default(),
            CongestionControl::Auto => {
                let system = read_system_default()?;
                Some(match local.ip().to_canonical().is_loopback() && paces(&system) {
                    true => UNPACED.to_owned(),
                    false => system,
                })
            }
        }
    }

    /// The algorithm `socket` gives its connections, where the system says.
    pub fn of(socket: &std::net::TcpListener) -> Option<String> {
        current(socket)
    }

    /// Gives `socket`, a listening socket, this setting: its connections accepted from now on
    /// get it. A socket that has the algorithm wanted already is left alone, so that one left
    /// to the system's default goes on following that default if it changes.
    ///
    /// [`Handle::add_listener`](crate::Handle::add_listener) does this with the listener's
    /// setting; a program running its own accept loop ([`Balancer::run`](crate::Balancer::run))
    /// calls it on its socket:
    ///
    /// ```
    /// use lb_net::CongestionControl;
    ///
    /// let socket = lb_net::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
    /// CongestionControl::Auto.apply(&socket).unwrap();
    /// # #[cfg(target_os = "linux")]
    /// assert!(CongestionControl::of(&socket).is_some());
    /// ```
    pub fn apply(&self, socket: &std::net::TcpListener) -> io::Result<()> {
        let Some(wanted) = self.algorithm(socket.local_addr()?) else { return Ok(()) };
        if current(socket).as_ref() == Some(&wanted) {
            return Ok(());
        }
        let result = match set(socket, &wanted) {
            // A kernel without cubic (built without it): reno, always built in, paces neither.
            Err(_) if wanted == UNPACED && *self == CongestionControl::Auto => set(socket, "reno"),
            result => result,
        };
        match result {
            // The default never keeps a listener from starting: it stays as the system made it.
            Err(e) if *self == CongestionControl::Auto => {
                tracing::warn!(algorithm = %wanted, error = %e, "congestion control auto: cannot set it; the listener keeps the system's");
                Ok(())
            }
            result => result,
        }
    }
}

/// Whether the system's default algorithm paces, as last read: [`PACES_UNKNOWN`] until the
/// first backend connect or listener reads it, then [`PACES_YES`] or [`PACES_NO`]. Every
/// listener added or changed (start-up, each reload) reads the default again, so a changed
/// `net.ipv4.tcp_congestion_control` reaches backend connections with the next reload.
static SYSTEM_PACES: AtomicU8 = AtomicU8::new(PACES_UNKNOWN);
const PACES_UNKNOWN: u8 = 0;
const PACES_YES: u8 = 1;
const PACES_NO: u8 = 2;

/// Reads the system's default algorithm, noting for backend connections whether it paces.
fn read_system_default() -> Option<String> {
    let name = system_default();
    let paced = name.as_deref().is_some_and(paces);
    SYSTEM_PACES.store(if paced { PACES_YES } else { PACES_NO }, Ordering::Relaxed);
    name
}

/// The algorithm a backend connection to `peer` gets before it connects, if any: on loopback,
/// when the system's default paces (`bbr`), what `auto` gives a loopback listener, for the same
/// reason (on an upload, lb's `splice` bursts to a backend on this host would wait for pacing
/// timers: half the CPU per MB without them, docs/performance.md). Elsewhere `None`: the
/// system's default, and no system call.
pub(crate) fn for_backend(peer: SocketAddr) -> Option<&'static str> {
    if !peer.ip().to_canonical().is_loopback() {
        return None;
    }
    let paced = match SYSTEM_PACES.load(Ordering::Relaxed) {
        PACES_UNKNOWN => read_system_default().is_some_and(|name| paces(&name)),
        known => known == PACES_YES,
    };
    paced.then_some(UNPACED)
}

/// Gives a backend socket about to connect to `peer` the algorithm [`for_backend`] chooses, if
/// any. Where the kernel refuses it (a kernel without `cubic`, a container that forbids it) the
/// connection keeps the system's, and later ones are not tried until the next reload: the
/// connection works either way, and a warning per connection would flood the log.
pub(crate) fn apply_for_backend(socket: &socket2::Socket, peer: SocketAddr) {
    if let Some(algorithm) = for_backend(peer) {
        if set(socket, algorithm).is_err() {
            // Not tried again until a listener reads the default again (the next reload).
            SYSTEM_PACES.store(PACES_NO, Ordering::Relaxed);
        }
    }
}

/// What `auto` chooses on loopback when the system's default paces.
const UNPACED: &str = "cubic";

/// Whether the kernel paces connections using `algorithm` itself (without `fq`): BBR in all its
/// versions asks for pacing; the loss-based algorithms do not.
fn paces(algorithm: &str) -> bool {
    algorithm.starts_with("bbr")
}

/// The system's default algorithm, where the system says (Linux).
fn system_default() -> Option<String> {
    let name = std::fs::read_to_string(SYSTEM_DEFAULT).ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// Sets `TCP_CONGESTION` on `socket`.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn set<'a, S>(socket: &'a S, algorithm: &str) -> io::Result<()>
where
    socket2::SockRef<'a>: From<&'a S>,
{
    socket2::SockRef::from(socket).set_tcp_congestion(algorithm.as_bytes())
}

/// Elsewhere the algorithm cannot be chosen per socket.
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn set<S>(_socket: &S, _algorithm: &str) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "not settable per socket on this system"))
}

/// The algorithm `socket` has, where the system says.
#[cfg(any(target_os = "linux", target_os = "freebsd"))]
fn current<'a, S>(socket: &'a S) -> Option<String>
where
    socket2::SockRef<'a>: From<&'a S>,
{
    let name = socket2::SockRef::from(socket).tcp_congestion().ok()?;
    Some(String::from_utf8_lossy(&name).trim_end_matches('\0').to_owned())
}

/// Elsewhere nobody says.
#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
fn current<S>(_socket: &S) -> Option<String> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_and_written_back() {
        for text in ["auto", "system", "cubic", "reno", "bbr", "my_algo-2"] {
            assert_eq!(text.parse::<CongestionControl>().unwrap().to_string(), text);
        }
        assert_eq!(" AUTO ".parse::<CongestionControl>(), Ok(CongestionControl::Auto));
        let e = "x".repeat(16).parse::<CongestionControl>().unwrap_err();
        assert!(e.ends_with("too long (the kernel's names have at most 15 characters)"), "{e}");
        for bad in ["", "cu bic", "a/b", "cubic;", "bbr\0", "cübic"] {
            let e = bad.parse::<CongestionControl>().unwrap_err();
            assert!(e.contains("expected auto, system or an algorithm's name"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn only_bbr_paces() {
        assert!(paces("bbr") && paces("bbr2") && paces("bbr3"));
        assert!(!paces("cubic") && !paces("reno") && !paces("dctcp"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn auto_unpaces_loopback_listeners_only_when_the_default_paces() {
        let Some(system) = system_default() else { return };
        let loopback: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let v6_loopback: SocketAddr = "[::1]:1".parse().unwrap();
        let mapped_loopback: SocketAddr = "[::ffff:127.0.0.1]:1".parse().unwrap();
        let anywhere: SocketAddr = "0.0.0.0:1".parse().unwrap();
        let auto = CongestionControl::Auto;
        let on_loopback = if paces(&system) { UNPACED } else { system.as_str() };
        assert_eq!(auto.algorithm(loopback).as_deref(), Some(on_loopback));
        assert_eq!(auto.algorithm(v6_loopback).as_deref(), Some(on_loopback));
        assert_eq!(auto.algorithm(mapped_loopback).as_deref(), Some(on_loopback));
        assert_eq!(auto.algorithm(anywhere), Some(system.clone()));
        assert_eq!(CongestionControl::System.algorithm(loopback), Some(system));
        let named = CongestionControl::Named("reno".into());
        assert_eq!(named.algorithm(anywhere).as_deref(), Some("reno"));
    }

    /// Backend connections: `cubic` to loopback when the default paces, else untouched.
    #[cfg(target_os = "linux")]
    #[test]
    fn backend_connections_to_loopback_are_unpaced_when_the_default_paces() {
        let Some(system) = read_system_default() else { return };
        let wanted = paces(&system).then_some(UNPACED);
        for (peer, expected) in [
            ("127.0.0.1:1", wanted),
            ("[::1]:1", wanted),
            ("[::ffff:127.0.0.2]:1", wanted),
            ("192.0.2.1:1", None),
            ("[2001:db8::1]:1", None),
        ] {
            let peer: SocketAddr = peer.parse().unwrap();
            assert_eq!(for_backend(peer), expected, "{peer}");
            let Ok(socket) = socket2::Socket::new(
                socket2::Domain::for_address(peer),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            ) else {
                continue; // no IPv6 here
            };
            apply_for_backend(&socket, peer);
            assert_eq!(current(&socket).as_deref(), Some(expected.unwrap_or(&system)), "{peer}");
        }
    }

    /// What the listener is given is what its connections get.
    #[cfg(target_os = "linux")]
    #[test]
    fn accepted_connections_have_the_listeners_algorithm() {
        let reno = CongestionControl::Named("reno".into());
        reno.check().unwrap();
        let listener = crate::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        reno.apply(&listener).unwrap();
        assert_eq!(current(&listener).unwrap(), "reno");
        listener.set_nonblocking(false).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(current(&accepted).unwrap(), "reno");

        // And a change reaches the connections accepted after it.
        let system = CongestionControl::System;
        system.apply(&listener).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert_eq!(current(&accepted), system_default());
    }

    /// `auto` never fails a listener; an algorithm asked for by name does.
    #[cfg(target_os = "linux")]
    #[test]
    fn auto_keeps_the_system_s_where_it_cannot_set_one() {
        // A socket whose TCP options cannot be set: a UDP one, passed off as a listener.
        let udp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        udp.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        let socket: std::net::TcpListener = udp.into();
        assert!(CongestionControl::Auto.apply(&socket).is_ok());
        assert!(CongestionControl::Named("reno".into()).apply(&socket).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_algorithm_the_kernel_lacks_is_refused_with_what_it_has() {
        let e = CongestionControl::Named("no-such-cc".into()).check().unwrap_err();
        assert!(e.starts_with("congestion control no-such-cc: "), "{e}");
        assert!(e.contains("the kernel has no algorithm of that name (it has: "), "{e}");
        assert!(e.contains("reno"), "{e}");
        let e = CongestionControl::Named("RENO".into()).check().unwrap_err();
        assert!(e.ends_with("(names are lower case: reno)"), "{e}");
        assert_eq!(CongestionControl::Auto.check(), Ok(()));
        assert_eq!(CongestionControl::System.check(), Ok(()));
    }
}
