//! Backends as commands name them: `host:port`, `[v6]:port` or `host port`, optionally after
//! their pool (`web/10.0.0.5:443`), resolved only when a command runs; and pool names.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use crate::error::Error;

/// A backend as named in a command: a host (name or IP) and a port, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Host name or IP address.
    pub host: String,
    /// The TCP port, 1 to 65535.
    pub port: u16,
}

/// A backend of a pool as a command names it: `POOL/HOST:PORT` (HAProxy's runtime-API form),
/// or `HOST:PORT` alone when the pool goes without saying (one pool, or one pool with that
/// backend).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendRef {
    /// The pool named before the `/`, if any.
    pub pool: Option<String>,
    /// The backend's address as written.
    pub target: Target,
}

impl fmt::Display for BackendRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pool {
            Some(pool) => write!(f, "{pool}/{}", self.target),
            None => write!(f, "{}", self.target),
        }
    }
}

/// Longest pool name: it appears in every metric label and access log line of the pool.
pub const MAX_POOL_NAME: usize = 64;

/// Checks a pool name: 1 to 64 letters, digits, `_`, `-` and `.`, starting with a letter, so
/// that it can never be mistaken for an address or a port in a command (`add web
/// 10.0.0.5:443`, `drain web/10.0.0.5:443`), and not an algorithm's name (`algorithm web p2c`).
pub fn validate_pool_name(name: &str) -> Result<(), Error> {
    let bad = |why: &str| Error::BadCommand(format!("invalid pool name {name:?}: {why}"));
    if name.is_empty() || name.len() > MAX_POOL_NAME {
        return Err(bad("a pool name is 1 to 64 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(bad("a pool name starts with a letter"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(bad("a pool name is letters, digits, '_', '-' and '.'"));
    }
    if name.parse::<lb_core::Algorithm>().is_ok() {
        return Err(bad("that is an algorithm's name"));
    }
    Ok(())
}

impl BackendRef {
    /// Takes a backend from the front of `words`: `[POOL/]host:port` or `[POOL/]host port`.
    pub(super) fn take(words: &mut &[&str], command: &str) -> Result<BackendRef, Error> {
        let Some((&first, rest)) = words.split_first() else {
            return Target::take(words, command).map(|target| BackendRef { pool: None, target });
        };
        let Some((pool, address)) = first.split_once('/') else {
            return Target::take(words, command).map(|target| BackendRef { pool: None, target });
        };
        validate_pool_name(pool)?;
        if address.is_empty() {
            return Err(Error::BadCommand(format!(
                "{command}: missing backend after {pool:?}/, e.g. `{command} {pool}/127.0.0.1:8001`"
            )));
        }
        let mut after: Vec<&str> = vec![address];
        after.extend_from_slice(rest);
        let mut remaining = &after[..];
        let target = Target::take(&mut remaining, command)?;
        let used = after.len() - remaining.len();
        *words = &words[used..];
        Ok(BackendRef { pool: Some(pool.to_owned()), target })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(s: &str, whole: &str) -> Result<u16, Error> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(Error::BadCommand(format!(
            "invalid port {s:?} in {whole:?}: expected a number from 1 to 65535"
        ))),
        Ok(p) => Ok(p),
    }
}

fn check_host(host: &str, whole: &str) -> Result<(), Error> {
    let ok = !host.is_empty()
        && host.len() <= 253
        && (host.parse::<IpAddr>().is_ok()
            || host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    if ok {
        return Ok(());
    }
    let why = if !host.is_ascii() {
        "a host name is ASCII (write an internationalised name in its xn-- form)"
    } else if host.len() > 253 {
        "a host name is at most 253 characters"
    } else {
        "a host is an IP address or a name of letters, digits, '-' and '.'"
    };
    Err(Error::BadCommand(format!("invalid host {host:?} in {whole:?}: {why}")))
}

/// How to write the bare IPv6 address `v6` with a port: `::1:8001` most likely meant ::1 port
/// 8001, so `[::1]:8001`; otherwise the address in brackets with an example port.
fn bracketed_example(v6: &str) -> String {
    if let Some((host, port)) = v6.rsplit_once(':') {
        if host.parse::<std::net::Ipv6Addr>().is_ok() && port.parse::<u16>().is_ok_and(|p| p > 0) {
            return format!("[{host}]:{port}");
        }
    }
    format!("[{v6}]:8001")
}

impl Target {
    /// Parses `host:port` or `[v6]:port` from one word.
    pub fn parse_one(s: &str) -> Result<Target, Error> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            if addr.port() == 0 {
                return Err(Error::BadCommand(format!(
                    "invalid port \"0\" in {s:?}: expected a number from 1 to 65535"
                )));
            }
            let host = match addr {
                // The parser takes only the canonical dotted-quad form (no leading zeros), so
                // the text is what formatting the address would give, without formatting it:
                // a file of 10,000 backends is read on every reload.
                SocketAddr::V4(_) => s.rsplit_once(':').map_or(s, |(host, _)| host).to_owned(),
                SocketAddr::V6(v6) => v6.ip().to_string(),
            };
            return Ok(Target { host, port: addr.port() });
        }
        if let Some(rest) = s.strip_prefix('[') {
            return Self::parse_bracketed(s, rest);
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| {
            Error::BadCommand(format!(
                "missing port in {s:?}: expected host:port, e.g. 127.0.0.1:8001"
            ))
        })?;
        if host.contains(':') {
            return Err(Error::BadCommand(format!(
                "invalid address {s:?}: write IPv6 addresses in brackets, e.g. [::1]:8001"
            )));
        }
        check_host(host, s)?;
        Ok(Target { host: host.to_owned(), port: parse_port(port, s)? })
    }

    /// `[v6]:port` that did not parse as a socket address (`rest` is what follows the `[`):
    /// says which part is wrong.
    fn parse_bracketed(s: &str, rest: &str) -> Result<Target, Error> {
        let bad = |why: String| Err(Error::BadCommand(format!("invalid address {s:?}: {why}")));
        let Some((inside, after)) = rest.split_once(']') else {
            return bad("missing ']' after the IPv6 address, e.g. [::1]:8001".to_owned());
        };
        if inside.contains('%') {
            return bad("IPv6 zone IDs (%...) are not supported; use a global or loopback \
                        address"
                .to_owned());
        }
        let Ok(ip) = inside.parse::<std::net::Ipv6Addr>() else {
            return bad(format!("{inside:?} is not an IPv6 address"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(Error::BadCommand(format!(
                "missing port in {s:?}: expected [address]:port, e.g. [{ip}]:8001"
            )));
        };
        Ok(Target { host: ip.to_string(), port: parse_port(port, s)? })
    }

    /// Takes a target from the front of `words`: either `host:port` or `host port`.
    pub(super) fn take(words: &mut &[&str], command: &str) -> Result<Target, Error> {
        let Some((&first, rest)) = words.split_first() else {
            return Err(Error::BadCommand(format!(
                "{command}: missing backend, e.g. `{command} 127.0.0.1:8001` or `{command} 127.0.0.1 8001`"
            )));
        };
        // A bare IP (IPv6 included) or a name without a port takes the next word as its port.
        let ip = first.parse::<IpAddr>().ok();
        if ip.is_some() || !first.contains(':') {
            let Some((&port, rest)) = rest.split_first() else {
                let example = match ip {
                    // `::1:8001` is one IPv6 address, not ::1 with a port: say how to write the
                    // port, which `add ::1:8001 8001` would not.
                    Some(IpAddr::V6(_)) => format!(
                        "write an IPv6 address in brackets before its port, e.g. `{command} {}`",
                        bracketed_example(first)
                    ),
                    _ => format!("e.g. `{command} {first} 8001`"),
                };
                return Err(Error::BadCommand(format!(
                    "{command}: missing port after {first:?}: {example}"
                )));
            };
            check_host(first, first)?;
            let whole = format!("{first} {port}");
            let port = parse_port(port, &whole).map_err(|e| match ip {
                Some(IpAddr::V6(_)) => Error::BadCommand(format!(
                    "{e} (an IPv6 address with its port is written in brackets, e.g. `{command} {}`)",
                    bracketed_example(first)
                )),
                _ => e,
            })?;
            let target = Target { host: first.to_owned(), port };
            *words = rest;
            return Ok(target);
        }
        let target = Target::parse_one(first)?;
        *words = rest;
        Ok(target)
    }

    /// Resolves to socket addresses: an IP directly, a name through the system resolver. An
    /// IPv4 address written as IPv6 (`::ffff:10.0.0.5`) comes back as the IPv4 address it is,
    /// so that one backend has one address however it is written.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, Error> {
        let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![canonical(SocketAddr::new(ip, self.port))]);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|source| Error::Resolve { host: self.host.clone(), source })?
            .map(canonical)
            .collect();
        if addrs.is_empty() {
            return Err(Error::Resolve {
                host: self.host.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses"),
            });
        }
        Ok(addrs)
    }
}

impl FromStr for Target {
    type Err = Error;
    fn from_str(s: &str) -> Result<Target, Error> {
        Target::parse_one(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_addresses_keep_their_canonical_text() {
        for (text, host) in [
            ("127.0.0.1:8001", "127.0.0.1"),
            ("10.255.0.9:1", "10.255.0.9"),
            ("[::1]:8001", "::1"),
            ("[0:0:0:0:0:0:0:1]:80", "::1"),
            ("[::ffff:10.0.0.1]:80", "::ffff:10.0.0.1"),
        ] {
            let target = Target::parse_one(text).unwrap();
            assert_eq!(target.host, host, "{text}");
            assert_eq!(target.host, target.host.parse::<IpAddr>().unwrap().to_string());
        }
        // What lets an IPv4 host keep its text: the parser refuses any non-canonical form
        // (such a host is then a name, handed to the resolver as before).
        for text in ["127.0.0.01:80", "0127.0.0.1:80", "127.1:80"] {
            assert!(text.parse::<SocketAddr>().is_err(), "{text}");
        }
    }

    #[tokio::test]
    async fn an_ipv4_address_written_as_ipv6_resolves_to_ipv4() {
        let mapped = Target::parse_one("[::ffff:127.0.0.1]:8001").unwrap();
        let plain = Target::parse_one("127.0.0.1:8001").unwrap();
        assert_eq!(mapped.resolve().await.unwrap(), plain.resolve().await.unwrap());
        let v6 = Target::parse_one("[::1]:8001").unwrap();
        assert_eq!(v6.resolve().await.unwrap(), vec!["[::1]:8001".parse().unwrap()]);
    }

    #[test]
    fn a_bracketed_address_with_a_bad_part_says_which() {
        for (text, says) in [
            ("[::1]:99999", "invalid port \"99999\" in \"[::1]:99999\": expected a number from 1"),
            ("[::1]:abc", "invalid port \"abc\""),
            ("[::1]:", "invalid port \"\""),
            ("[::1]:0", "invalid port \"0\""),
            ("[::1]", "missing port in \"[::1]\": expected [address]:port, e.g. [::1]:8001"),
            ("[::1", "missing ']' after the IPv6 address"),
            ("[fe80::1%eth0]:80", "zone IDs"),
            ("[db8::zz]:80", "\"db8::zz\" is not an IPv6 address"),
            ("[127.0.0.1]:80", "\"127.0.0.1\" is not an IPv6 address"),
        ] {
            let e = Target::parse_one(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains("write IPv6 addresses in brackets"), "{text}: {e}");
        }
        assert_eq!(Target::parse_one("[::1]:08001").unwrap().to_string(), "[::1]:8001");
    }
}
