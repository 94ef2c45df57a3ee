//! A setting's value written back as a configuration file writes it (`5m`, `unlimited`,
//! `v2`, `off`), for the reload answer's `key old->new`. One implementation per value type, so
//! every setting of a type reads the same in every answer; the settings table
//! ([`crate::settings`]) says which setting has which type.

use std::time::Duration;

use lb_core::Algorithm;
use lb_net::inspect::proxy_header::Version;
use lb_net::AddressRange;

use crate::args::{BackendSpec, HealthCheck, Limit, OptionalDuration, SendProxy};

/// A value as the file writes it.
pub(crate) trait Show {
    /// The value's text.
    fn show(&self) -> String;
}

impl Show for String {
    fn show(&self) -> String {
        self.clone()
    }
}

impl Show for u16 {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for u8 {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for u32 {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for bool {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for Algorithm {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for lb_net::CongestionControl {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for Duration {
    /// `500ms`, `2s`, `5m`, `1m30s`, `1h`; `0s` for zero.
    fn show(&self) -> String {
        let secs = self.as_secs();
        let parts = [
            (secs / 3600, "h"),
            (secs / 60 % 60, "m"),
            (secs % 60, "s"),
            (u64::from(self.subsec_millis()), "ms"),
        ];
        let text: String =
            parts.iter().filter(|(n, _)| *n > 0).map(|(n, unit)| format!("{n}{unit}")).collect();
        if text.is_empty() {
            "0s".into()
        } else {
            text
        }
    }
}

impl Show for Option<lb_net::DnsQuery> {
    /// The source as written, or `none`.
    fn show(&self) -> String {
        self.as_ref().map_or("none".into(), ToString::to_string)
    }
}

impl Show for Option<std::net::SocketAddr> {
    /// The server, or `system` for the system's resolver.
    fn show(&self) -> String {
        self.map_or("system".into(), |a| a.to_string())
    }
}

impl Show for OptionalDuration {
    fn show(&self) -> String {
        self.0.map_or("off".into(), |d| d.show())
    }
}

impl<T: std::fmt::Display> Show for Limit<T> {
    fn show(&self) -> String {
        self.0.as_ref().map_or("unlimited".into(), ToString::to_string)
    }
}

impl Show for HealthCheck {
    fn show(&self) -> String {
        self.0.as_ref().map_or("off".into(), ToString::to_string)
    }
}

impl Show for SendProxy {
    fn show(&self) -> String {
        match self.0 {
            None => "off",
            Some(Version::V1) => "v1",
            Some(Version::V2) => "v2",
        }
        .into()
    }
}

impl Show for Vec<AddressRange> {
    /// Comma separated, as `--allow` takes them; `none` for the empty list.
    fn show(&self) -> String {
        if self.is_empty() {
            return "none".into();
        }
        self.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }
}

impl Show for Vec<BackendSpec> {
    /// The addresses, comma separated (a reload's plan says what changed backend by backend).
    fn show(&self) -> String {
        self.iter().map(|b| b.target.to_string()).collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_back_as_written() {
        for text in ["500ms", "2s", "5m", "1m30s", "1h", "2h5m", "1s250ms", "0s"] {
            let d = crate::args::parse_duration(text).unwrap();
            assert_eq!(d.show(), text);
        }
    }

    #[test]
    fn values_read_back_as_the_file_writes_them() {
        use crate::args::{parse_address_range, parse_client_limit, parse_send_proxy};
        assert_eq!(parse_client_limit("0").unwrap().show(), "unlimited");
        assert_eq!(parse_client_limit("20").unwrap().show(), "20");
        assert_eq!(parse_send_proxy("2").unwrap().show(), "v2");
        assert_eq!(OptionalDuration(None).show(), "off");
        let ranges: Vec<AddressRange> = ["10.1.0.0/16", "192.0.2.7"]
            .into_iter()
            .map(|r| parse_address_range(r).unwrap())
            .collect();
        assert_eq!(ranges.show(), "10.1.0.0/16,192.0.2.7/32");
        assert_eq!(Vec::<AddressRange>::new().show(), "none");
    }
}
