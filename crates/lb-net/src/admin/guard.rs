//! Who may talk to the admin endpoint: the checks made on every request before it is routed.
//!
//! The endpoint's clients are programs (`lb ctl`, a Prometheus scraper, curl) and, with the
//! dashboard, the operator's own browser. A browser is the risk: any web page it has open can
//! send requests to `127.0.0.1`, and two tricks would let that page drive lb.
//!
//! - **Cross-site requests.** A page may send a "simple" cross-origin `POST` (a `text/plain`
//!   body, no custom header) without asking the server first. So a state-changing request must
//!   carry [`CLIENT_HEADER`]: a browser sends a custom header cross-origin only after a CORS
//!   preflight, which this endpoint never approves. On top of that, a request whose `Origin` is
//!   not the endpoint itself, or whose `Sec-Fetch-Site` says another site sent it, is refused.
//! - **DNS rebinding.** A page on `rebind.evil.example` can make that name resolve to
//!   `127.0.0.1`; the browser then treats the endpoint as the page's own origin and lets it
//!   read the answers. Its requests still say `Host: rebind.evil.example`, so a request whose
//!   `Host` is not an IP address, `localhost`, or a name the operator allowed
//!   ([`AllowedHost`]) is refused.
//!
//! Every refusal is `403 Forbidden` with one line saying why. The bearer token, when set, is
//! checked after these (see [`super::AdminConfig::token`]).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use hyper::header::{HeaderMap, HOST, ORIGIN};
use hyper::Uri;

use crate::Error;

/// The request header every `POST /command` must carry, with any value (`lb ctl` sends
/// `X-LB-Admin: 1`). Web pages cannot send it to another origin without a CORS preflight,
/// which the endpoint never approves, so a page open in the operator's browser cannot issue
/// commands.
pub const CLIENT_HEADER: &str = "x-lb-admin";

/// A host name the admin endpoint answers to, besides IP addresses and `localhost`: the
/// `admin-allowed-hosts` setting, for operators who reach the endpoint by a DNS name.
///
/// Written as a name (`lb1.internal`, matched exactly, ignoring case and a trailing dot), as
/// `*.corp.example` (any name under `corp.example`, not `corp.example` itself), or as `*` (any
/// `Host` at all: turns off the DNS-rebinding check; the other checks and the token remain).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost(Pattern);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Any,
    Exact(String),
    /// `*.suffix`: the suffix with its leading dot (`.corp.example`).
    Under(String),
}

impl AllowedHost {
    fn matches(&self, host: &str) -> bool {
        match &self.0 {
            Pattern::Any => true,
            Pattern::Exact(name) => host == name,
            Pattern::Under(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

impl FromStr for AllowedHost {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: &str| {
            Error::InvalidSetting(format!(
                "invalid allowed host {:?}: {why}; expected a DNS name such as lb1.internal, \
                 *.corp.example, or * for any",
                s.escape_debug().to_string()
            ))
        };
        let s = s.trim();
        if s == "*" {
            return Ok(AllowedHost(Pattern::Any));
        }
        let (under, name) = match s.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if name.is_empty() {
            return Err(bad("the name is empty"));
        }
        if name.parse::<IpAddr>().is_ok() || name.starts_with('[') {
            return Err(bad("IP addresses are always allowed; list names only"));
        }
        if name.contains(':') {
            return Err(bad("give the name without a port"));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(bad("a name is letters, digits, '-' and '_' in dot-separated labels"));
        }
        Ok(AllowedHost(if under {
            Pattern::Under(format!(".{name}"))
        } else {
            Pattern::Exact(name)
        }))
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Pattern::Any => f.write_str("*"),
            Pattern::Exact(name) => f.write_str(name),
            Pattern::Under(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Why a request was refused: the one line of the 403 answer.
pub(super) type Refusal = String;

/// Checks a request's `Host` (and absolute URI), `Origin` and `Sec-Fetch-Site`; for a
/// state-changing request also that it carries [`CLIENT_HEADER`].
pub(super) fn admit(
    uri: &Uri,
    headers: &HeaderMap,
    allowed: &[AllowedHost],
    changes_state: bool,
) -> Result<(), Refusal> {
    // One of each: a second Host (RFC 9112 says 400), Origin or Sec-Fetch-Site would let a
    // request show one value to this check and another to whatever reads it next.
    for name in [HOST.as_str(), ORIGIN.as_str(), "sec-fetch-site"] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(format!("more than one {name} header"));
        }
    }
    let host_header = match headers.get(HOST) {
        Some(v) => Some(v.to_str().map_err(|_| "the Host header is not ASCII text".to_owned())?),
        None => None,
    };
    // A request in absolute form (`GET http://name/stats`) names its host in the URI too.
    for authority in host_header.into_iter().chain(uri.authority().map(|a| a.as_str())) {
        let (host, _) = split_authority(authority)
            .ok_or_else(|| format!("the Host {:?} is not a host name or address", authority))?;
        if !host_allowed(&host, allowed) {
            return Err(format!(
                "the Host {authority:?} is not allowed: the admin endpoint answers to IP \
                 addresses, localhost and the names in admin-allowed-hosts (a web page could \
                 otherwise reach it through DNS rebinding)"
            ));
        }
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        // Sent by browsers: `same-origin` for the endpoint's own pages, `none` for an address
        // typed by the user; anything else came from another site.
        if !matches!(site.as_bytes(), b"same-origin" | b"none") {
            return Err("cross-site request refused (Sec-Fetch-Site)".to_owned());
        }
    }
    if let Some(origin) = headers.get(ORIGIN) {
        let origin = origin.to_str().unwrap_or("?");
        if !same_origin(origin, host_header) {
            return Err(format!(
                "cross-site request refused: Origin {origin:?} is not this endpoint"
            ));
        }
    }
    if changes_state && headers.get(CLIENT_HEADER).is_none() {
        return Err(
            "a command needs the header X-LB-Admin (any value, e.g. curl -H 'X-LB-Admin: 1'); \
             lb ctl sends it. Web pages cannot, which is what keeps them from driving lb"
                .to_owned(),
        );
    }
    Ok(())
}

/// Whether `host` (lower-case, without brackets or port) may be the endpoint's name.
fn host_allowed(host: &str, allowed: &[AllowedHost]) -> bool {
    host.parse::<IpAddr>().is_ok() || host == "localhost" || allowed.iter().any(|a| a.matches(host))
}

/// Splits `host[:port]` or `[v6][:port]` into the host (lower-case, trailing dot and brackets
/// removed) and the port if one is written. `None` if it is neither.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?.parse().ok()?),
        };
        return Some((v6.to_ascii_lowercase(), port));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port.parse().ok()?)),
        None => (authority, None),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() || host.contains(['[', ']', ':', '/', '@', ' ', '\\']) {
        return None;
    }
    Some((host.to_ascii_lowercase(), port))
}

/// Whether an `Origin` header (`scheme://host[:port]`) names the same host and port the
/// request was sent to (its `Host`). `null` (a sandboxed or opaque origin) never does.
fn same_origin(origin: &str, host_header: Option<&str>) -> bool {
    let Some(host_header) = host_header else { return false };
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    let (Some((origin_host, origin_port)), Some((host, port))) =
        (split_authority(authority), split_authority(host_header))
    else {
        return false;
    };
    // Behind a TLS-terminating proxy the page's scheme is https while the endpoint speaks
    // http; the Host it forwards then leaves out the page's default port, like the Origin.
    origin_host == host && origin_port.unwrap_or(default_port) == port.unwrap_or(default_port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn check(pairs: &[(&'static str, &str)], allowed: &[&str], post: bool) -> Result<(), String> {
        let allowed: Vec<AllowedHost> = allowed.iter().map(|a| a.parse().unwrap()).collect();
        admit(&Uri::from_static("/stats"), &headers(pairs), &allowed, post)
    }

    #[test]
    fn hosts_that_are_addresses_or_localhost_pass() {
        for host in [
            "127.0.0.1:9090",
            "127.0.0.1",
            "[::1]:9090",
            "[::1]",
            "localhost:1",
            "LocalHost.",
            "10.1.2.3",
        ] {
            assert_eq!(check(&[("host", host)], &[], false), Ok(()), "{host}");
        }
        // No Host at all: not a browser (they always send one).
        assert_eq!(check(&[], &[], false), Ok(()));
    }

    #[test]
    fn other_names_are_refused_unless_allowed() {
        for host in
            ["rebind.evil.example:9519", "test", "localhost.evil.example", "127.0.0.1.nip.io"]
        {
            let e = check(&[("host", host)], &[], false).unwrap_err();
            assert!(e.contains("is not allowed") && e.contains("admin-allowed-hosts"), "{e}");
        }
        assert_eq!(check(&[("host", "LB1.internal:9090")], &["lb1.internal"], false), Ok(()));
        assert_eq!(check(&[("host", "a.corp.example")], &["*.corp.example"], false), Ok(()));
        assert!(check(&[("host", "corp.example")], &["*.corp.example"], false).is_err());
        assert!(check(&[("host", "evilcorp.example")], &["*.corp.example"], false).is_err());
        assert_eq!(check(&[("host", "anything.at.all")], &["*"], false), Ok(()));
        // The absolute form of a request names a host too.
        let e = admit(
            &Uri::from_static("http://evil.example/stats"),
            &headers(&[("host", "127.0.0.1")]),
            &[],
            false,
        );
        assert!(e.is_err());
    }

    #[test]
    fn garbage_hosts_are_refused() {
        for host in ["", "[::1", "[zz]:80", "a:b", "1.2.3.4:99999", "a b"] {
            assert!(check(&[("host", host)], &["*"], false).is_err(), "{host:?}");
        }
    }

    #[test]
    fn foreign_origins_and_cross_site_fetches_are_refused() {
        let host = ("host", "127.0.0.1:9519");
        let e = check(&[host, ("origin", "http://evil.example")], &[], false).unwrap_err();
        assert!(e.contains("Origin \"http://evil.example\""), "{e}");
        for origin in ["null", "http://127.0.0.1:9520", "http://127.0.0.1", "file://", "x"] {
            assert!(check(&[host, ("origin", origin)], &[], false).is_err(), "{origin}");
        }
        assert_eq!(check(&[host, ("origin", "http://127.0.0.1:9519")], &[], false), Ok(()));
        assert_eq!(
            check(&[("host", "lb.corp"), ("origin", "https://LB.corp")], &["lb.corp"], false),
            Ok(())
        );
        for site in ["cross-site", "same-site"] {
            assert!(check(&[host, ("sec-fetch-site", site)], &[], false).is_err());
        }
        for site in ["same-origin", "none"] {
            assert_eq!(check(&[host, ("sec-fetch-site", site)], &[], false), Ok(()));
        }
    }

    #[test]
    fn a_repeated_host_origin_or_fetch_site_is_refused() {
        for name in ["host", "origin", "sec-fetch-site"] {
            let mut h = headers(&[("host", "127.0.0.1:9519")]);
            h.append(name, HeaderValue::from_static("127.0.0.1:9519"));
            if name != "host" {
                h.append(name, HeaderValue::from_static("x"));
            }
            let e = admit(&Uri::from_static("/stats"), &h, &[], false).unwrap_err();
            assert_eq!(e, format!("more than one {name} header"));
        }
    }

    #[test]
    fn commands_need_the_client_header() {
        let host = ("host", "127.0.0.1:9519");
        let e = check(&[host], &[], true).unwrap_err();
        assert!(e.contains("X-LB-Admin"), "{e}");
        // Any value, even none: a browser cannot send the header cross-origin at all.
        assert_eq!(check(&[host, (CLIENT_HEADER, "")], &[], true), Ok(()));
        assert_eq!(check(&[host, (CLIENT_HEADER, "1")], &[], true), Ok(()));
    }

    #[test]
    fn allowed_host_patterns_parse_or_say_why_not() {
        for (text, shown) in
            [("lb1.internal", "lb1.internal"), ("*.Corp.Example.", "*.corp.example"), ("*", "*")]
        {
            assert_eq!(text.parse::<AllowedHost>().unwrap().to_string(), shown);
        }
        for (bad, why) in [
            ("", "empty"),
            ("127.0.0.1", "always allowed"),
            ("::1", "always allowed"),
            ("lb:9090", "without a port"),
            ("a..b", "labels"),
            ("héllo", "labels"),
            ("*.", "empty"),
        ] {
            let e = bad.parse::<AllowedHost>().unwrap_err().to_string();
            assert!(e.starts_with("invalid allowed host") && e.contains(why), "{bad:?}: {e}");
        }
    }
}
