//! The proxy's own counters, declared once: the table below expands into the atomics the
//! connection path increments ([`ProxyCounters`]), the snapshot `stats` shows and `GET /stats`
//! serialises ([`ProxyStats`], JSON keys = field names), and the Prometheus families
//! (`ProxyStats::counters`). Adding a counter is one line here plus the code that counts it.
//! Per-backend counters are lb-core's (`lb_core::BackendStats`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::metrics::{Histogram, CONNECT_BUCKETS, DURATION_BUCKETS};

/// What a counter of the proxy is called in the metrics, and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyCounter {
    /// The field of [`ProxyStats`] and key of the `clients` object of `GET /stats`.
    pub name: &'static str,
    /// The Prometheus metric family (a counter; `_total` is added by the encoder).
    pub metric: &'static str,
    /// The metric's help text.
    pub help: &'static str,
}

macro_rules! proxy_counters {
    ($( $(#[doc = $doc:literal])* $field:ident => $metric:literal, $help:literal; )*) => {
        /// The proxy's counters, shared by the accept loops and every connection task.
        #[derive(Debug)]
        pub(crate) struct ProxyCounters {
            $( pub(crate) $field: AtomicU64, )*
            /// Time to connect to a backend, every attempt.
            pub(crate) connect_time: Histogram,
            /// Time from accept to close, every client connection.
            pub(crate) connection_duration: Histogram,
        }

        impl Default for ProxyCounters {
            fn default() -> Self {
                ProxyCounters {
                    $( $field: AtomicU64::new(0), )*
                    connect_time: Histogram::new(CONNECT_BUCKETS),
                    connection_duration: Histogram::new(DURATION_BUCKETS),
                }
            }
        }

        impl ProxyCounters {
            /// The counters now, with `open` connections (the tracker's count).
            pub(crate) fn snapshot(&self, open: u64) -> ProxyStats {
                ProxyStats { open, $( $field: self.$field.load(Relaxed), )* }
            }
        }

        /// Counters of the proxy as a whole at one moment; also the `clients` object of
        /// `GET /stats`, with the same field names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct ProxyStats {
            /// Client connections open now.
            pub open: u64,
            $( $(#[doc = $doc])* pub $field: u64, )*
        }

        impl ProxyStats {
            /// Every counter (all but `open`, a gauge) with its value, in table order.
            pub fn counters(&self) -> impl Iterator<Item = (ProxyCounter, u64)> {
                [$( (ProxyCounter { name: stringify!($field), metric: $metric, help: $help }, self.$field), )*]
                    .into_iter()
            }
        }
    };
}

proxy_counters! {
    /// Client connections accepted since start.
    accepted => "lb_connections_accepted", "Client connections accepted.";
    /// Closed at once because the global limit was reached.
    rejected_at_limit => "lb_connections_rejected", "Client connections closed at once because the global limit was reached.";
    /// Closed because no backend was available.
    no_backend => "lb_connections_no_backend", "Client connections closed because no backend was available.";
    /// Closed because every backend tried failed to connect.
    connect_failed => "lb_connections_connect_failed", "Client connections closed because every backend tried failed to connect.";
    /// Connect attempts beyond each connection's first.
    retries => "lb_retries", "Connect attempts beyond a connection's first.";
    /// Errors from accept itself (out of file descriptors, ...).
    accept_errors => "lb_accept_errors", "Errors accepting client connections.";
    /// Closed because the balancer was out of descriptors, ports or memory for a backend
    /// connection (not counted against any backend).
    resource_errors => "lb_connections_resource_errors", "Client connections closed because the balancer had no descriptor, local port or memory for a backend connection within the connect timeout.";
    /// Closed because SNI routing found no pool for the client's server name.
    no_route => "lb_connections_no_route", "Client connections closed because no route matched their TLS server name and there was no default pool.";
    /// Closed because SNI routing needed a TLS ClientHello and got none (not TLS, malformed,
    /// too large, or not within the inspect timeout).
    bad_hello => "lb_connections_bad_hello", "Client connections closed because they sent no usable TLS ClientHello where SNI routing needed one.";
    /// Closed because an `accept-proxy` listener got no valid PROXY header in time.
    bad_proxy => "lb_connections_bad_proxy", "Client connections closed because their PROXY protocol header was missing, malformed, too large or late.";
    /// Refused at once by a listener's `allow`/`deny` ranges.
    denied => "lb_connections_denied", "Client connections refused at once by a listener's allow/deny address ranges.";
    /// Refused at once at a per-client limit (connections open, or new per second).
    rate_limited => "lb_connections_rate_limited", "Client connections refused at once at a per-client limit of connections open or new connections per second.";
    /// Closed when the deadline of their backend's drain passed.
    drained => "lb_connections_drained", "Client connections closed when the deadline of their backend's drain passed.";
    /// Relays run on the io_uring engine (`--io uring`); the others ran on epoll.
    uring_relays => "lb_uring_relays", "Connections relayed on the io_uring engine (the others on epoll).";
    /// Of those, relays handed to the epoll engine to splice bulk data.
    uring_bulk_handoffs => "lb_uring_bulk_handoffs", "Connections the io_uring engine handed to the epoll engine to splice bulk data.";
    /// Times new connections were spread over the workers because the one taking them was
    /// busy (`--placement pack`); packed again since when `placement_packs` equals it.
    placement_spreads => "lb_placement_spreads", "Times new connections were spread over the worker threads because the one taking them all was busy (--placement pack).";
    /// Times new connections were packed onto one worker again after a calm spell.
    placement_packs => "lb_placement_packs", "Times new connections were packed onto one worker thread again after a calm spell (--placement pack).";
}

/// What a counter of a pool's DNS discovery is called in the metrics, and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscoveryCounter {
    /// The field of [`DiscoveryCounts`] and its key in `GET /stats`.
    pub name: &'static str,
    /// The Prometheus metric family (a counter, labelled with the pool; `_total` is added by
    /// the encoder).
    pub metric: &'static str,
    /// The metric's help text.
    pub help: &'static str,
}

macro_rules! discovery_counters {
    ($( $(#[doc = $doc:literal])* $field:ident => $metric:literal, $help:literal; )*) => {
        /// One pool's discovery counters, written by its discovery task.
        #[derive(Debug, Default)]
        pub(crate) struct DiscoveryCounters {
            $( pub(crate) $field: AtomicU64, )*
        }

        impl DiscoveryCounters {
            /// The counters now.
            pub(crate) fn snapshot(&self) -> DiscoveryCounts {
                DiscoveryCounts { $( $field: self.$field.load(Relaxed), )* }
            }

            /// Adds one to the counter `which` picks.
            pub(crate) fn bump(&self, which: impl FnOnce(&Self) -> &AtomicU64) {
                which(self).fetch_add(1, Relaxed);
            }
        }

        /// A pool's discovery counters at one moment; in `GET /stats` under the same names.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        pub struct DiscoveryCounts {
            $( $(#[doc = $doc])* pub $field: u64, )*
        }

        impl DiscoveryCounts {
            /// Every counter with its value, in table order.
            pub fn counters(&self) -> impl Iterator<Item = (DiscoveryCounter, u64)> {
                [$( (DiscoveryCounter { name: stringify!($field), metric: $metric, help: $help }, self.$field), )*]
                    .into_iter()
            }
        }
    };
}

discovery_counters! {
    /// Lookups that answered with at least one address.
    refreshes => "lb_dns_refreshes", "DNS lookups of the pool's discovery that answered with at least one address.";
    /// Lookups that failed, timed out or answered with no address (the pool kept its members).
    errors => "lb_dns_errors", "DNS lookups of the pool's discovery that failed, timed out or answered with no address; the pool kept its last known members.";
    /// Backends added because DNS listed them.
    added => "lb_dns_backends_added", "Backends added to the pool because DNS listed them.";
    /// Backends removed because DNS no longer listed them.
    removed => "lb_dns_backends_removed", "Backends removed from the pool because DNS no longer listed them (their open connections finish).";
    /// Backends whose weight changed because their SRV weight did.
    reweighted => "lb_dns_backends_reweighted", "Backends of the pool whose weight changed because their SRV record's weight did.";
}
