//! What a pool's `discover` asks DNS for: [`DnsQuery`], read from `dns:HOST:PORT` or
//! `srv:NAME`.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::Error;

/// What to look up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DnsQuery {
    /// Every A and AAAA address of `name`, each a backend on `port` (weight 1).
    Host {
        /// The name, as written.
        name: String,
        /// The backends' port.
        port: u16,
    },
    /// The SRV records of `name` (`_http._tcp.web.service.consul`): each record's target
    /// host's addresses, on the record's port, with its weight.
    Srv {
        /// The name, as written.
        name: String,
    },
}

impl DnsQuery {
    /// The name looked up.
    pub fn name(&self) -> &str {
        match self {
            DnsQuery::Host { name, .. } | DnsQuery::Srv { name } => name,
        }
    }
}

impl fmt::Display for DnsQuery {
    /// As written in a configuration: `dns:HOST:PORT` or `srv:NAME`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsQuery::Host { name, port } => write!(f, "dns:{name}:{port}"),
            DnsQuery::Srv { name } => write!(f, "srv:{name}"),
        }
    }
}

/// The form of a discovery source, for messages.
const QUERY_FORMS: &str = "expected dns:HOST:PORT (every A/AAAA address of HOST, on PORT) or \
                           srv:NAME (SRV records, e.g. srv:_http._tcp.web.service.consul)";

impl FromStr for DnsQuery {
    type Err = Error;

    /// `dns:HOST:PORT` or `srv:NAME`; the names must be valid DNS names (letters, digits, `-`
    /// and `_`, labels of at most 63 characters, 253 in all).
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = |why: String| Error::InvalidSetting(format!("invalid discover {s:?}: {why}"));
        let (scheme, rest) = s.split_once(':').ok_or_else(|| bad(QUERY_FORMS.into()))?;
        match scheme.to_ascii_lowercase().as_str() {
            "dns" => {
                let (name, port) = rest.rsplit_once(':').ok_or_else(|| {
                    bad("expected dns:HOST:PORT, e.g. dns:app.internal:8080".into())
                })?;
                let port = match port.parse::<u16>() {
                    Ok(0) | Err(_) => {
                        return Err(bad(format!("port {port:?} is not a number from 1 to 65535")))
                    }
                    Ok(port) => port,
                };
                if name.parse::<IpAddr>().is_ok()
                    || name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok()
                {
                    return Err(bad(format!(
                        "{name} is an address, not a name to look up: list it as a backend"
                    )));
                }
                check_name(name).map_err(bad)?;
                Ok(DnsQuery::Host { name: name.to_owned(), port })
            }
            "srv" => {
                check_name(rest).map_err(bad)?;
                Ok(DnsQuery::Srv { name: rest.to_owned() })
            }
            _ => Err(bad(QUERY_FORMS.into())),
        }
    }
}

/// Whether `name` is a DNS name a lookup can be made for (a final dot allowed).
fn check_name(name: &str) -> Result<(), String> {
    let labels = name.strip_suffix('.').unwrap_or(name);
    if labels.is_empty() {
        return Err("the name is empty".into());
    }
    if labels.len() > 253 {
        return Err(format!("the name is {} characters long, at most 253 allowed", labels.len()));
    }
    for label in labels.split('.') {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if label.is_empty() || label.len() > 63 || !label.chars().all(ok) {
            return Err(format!(
                "{label:?} is not a DNS label (1 to 63 letters, digits, '-' or '_' between dots)"
            ));
        }
    }
    Ok(())
}
