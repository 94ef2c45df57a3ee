//! Every per-backend counter, declared once.
//!
//! The table below (the one `backend_counters!` invocation) gives each counter its field name,
//! JSON key, Prometheus metric, help text and kind, and expands into everything that holds or
//! names counters:
//!
//! - `Counters`, one backend's live atomics (a field per plain counter);
//! - the counter fields of [`BackendStats`], [`Totals`] and [`RetiredTotals`], and the sums
//!   between them;
//! - [`CounterInfo`]: each counter's names for outputs, listed by the `COUNTERS` constant of
//!   each of those three structs and paired with their values by their `counters()` method.
//!
//! Adding a counter is one line in the table, plus the code that counts it (a `Lease` method).
//!
//! How `Counters` counts picks, releases and the peak is in `live`.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use crate::backend::{AdminState, Backend, BackendId};
use crate::health::Health;

mod live;

/// What kind of number a counter is, in Prometheus's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CounterKind {
    /// How much there is at the moment of reading, such as connections open; it goes up and
    /// down. Prometheus type `gauge`.
    Gauge,
    /// How many times something has happened; it only grows. Prometheus type `counter`, whose
    /// sample the exposition format names with a `_total` suffix.
    Counter,
}

/// A backend's state besides its counters, as [`BackendStats`] shows it (see its fields).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BackendState {
    pub(crate) health: Health,
    pub(crate) checked: bool,
    pub(crate) admin: AdminState,
    pub(crate) last_change: Option<Instant>,
    pub(crate) removed: bool,
    pub(crate) backup: bool,
    pub(crate) ramp_percent: Option<u8>,
}

/// One backend counter's names and description, for outputs that list every counter.
///
/// [`BackendStats::COUNTERS`], [`Totals::COUNTERS`] and [`RetiredTotals::COUNTERS`] list the
/// counters each struct has, in one order (that of the admin endpoint's JSON). Their
/// `counters()` method pairs each with its value in that order, and `value(counter)` reads one.
/// An output built from these lists shows a counter added to the table without being changed.
///
/// ```
/// use lb_core::{BackendStats, CounterKind, Pool};
///
/// let pool = Pool::default();
/// let addr = "127.0.0.1:8001".parse()?;
/// pool.add(addr, None)?;
/// let lease = pool.pick(None, &[])?;
/// lease.record_connected();
/// lease.record_bytes_in(512);
/// let stats = pool.stats();
///
/// // Prometheus: one family per counter, one sample in it per backend address.
/// for counter in BackendStats::COUNTERS {
///     let _family = (counter.metric, counter.help, counter.kind);
///     for backend in stats.per_address() {
///         let _sample = (backend.addr, backend.value(counter).unwrap());
///     }
/// }
/// let bytes_in = BackendStats::COUNTERS.iter().find(|c| c.field == "bytes_in").unwrap();
/// assert_eq!((bytes_in.metric, bytes_in.kind), ("lb_backend_in_bytes", CounterKind::Counter));
/// assert_eq!(stats.backend(addr).unwrap().value(bytes_in), Some(512));
///
/// // JSON: one key per counter, in this order, after the fields that are not counters.
/// let backend = stats.backend(addr).unwrap();
/// let keys: Vec<(&str, u64)> = backend.counters().map(|(c, v)| (c.json, v)).collect();
/// assert_eq!(keys[..3], [("active", 1), ("peak", 1), ("total", 1)]);
/// let totals: Vec<&str> = stats.totals.counters().map(|(c, _)| c.json).collect();
/// assert_eq!(totals, ["active", "total", "failures", "retries", "bytes_in", "bytes_out", "picks"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct CounterInfo {
    /// The field's name in [`BackendStats`] (and in [`Totals`] and [`RetiredTotals`], where
    /// they have it), e.g. `"connect_failures"`. Unique: it identifies the counter.
    pub field: &'static str,
    /// Its key in the admin endpoint's JSON (`GET /stats`), e.g. `"failures"`.
    pub json: &'static str,
    /// Its Prometheus metric family, e.g. `"lb_backend_connect_failures"`. For a
    /// [`CounterKind::Counter`] this is the name without the `_total` suffix, which the encoder
    /// adds to the sample (as `prometheus-client` does).
    pub metric: &'static str,
    /// The Prometheus `# HELP` text: one sentence about one backend.
    pub help: &'static str,
    /// Gauge or counter: the Prometheus type.
    pub kind: CounterKind,
}

/// Expands the counter table (below) into the types that hold counters; see the module docs.
///
/// A row is `field "JSON key" "Prometheus metric" "help";`, optionally after `///` lines that
/// say more in the `BackendStats` field's docs (which start with the help text). The section a
/// row is in says how the counter is kept and combined:
///
/// - `gauge`: how many connections are open; read by the `Counters` method of the same name.
///   Summed over backends (in `Totals`, and when `per_address` merges two); not in
///   `RetiredTotals`, since a retired backend has none open.
/// - `peak`: a high-water mark, read by the `Counters` method of the same name. Per backend
///   only (peaks of different backends do not add up); two merged keep the larger.
/// - `counter`: an `AtomicU64` field of `Counters`, which a `Lease` method adds to. Summed
///   everywhere, and kept in `RetiredTotals` once its backend is gone.
/// - `computed_counter`: like `counter`, but read by the `Counters` method of the same name from
///   what `Counters` keeps anyway (`picks` is `opened`).
///
/// The order of the rows, section after section, is the order of every output.
macro_rules! backend_counters {
    (
        gauge { $($(#[doc = $g_doc:literal])* $g:ident $g_json:literal $g_metric:literal $g_help:literal;)* }
        peak { $($(#[doc = $p_doc:literal])* $p:ident $p_json:literal $p_metric:literal $p_help:literal;)* }
        counter { $($(#[doc = $c_doc:literal])* $c:ident $c_json:literal $c_metric:literal $c_help:literal;)* }
        computed_counter { $($(#[doc = $d_doc:literal])* $d:ident $d_json:literal $d_metric:literal $d_help:literal;)* }
    ) => {
        // The same rows, sorted by what uses them: `(field json metric help kind [docs])`.
        backend_counters! { @expand
            every: [
                $(($g $g_json $g_metric $g_help Gauge [$($g_doc)*]))*
                $(($p $p_json $p_metric $p_help Gauge [$($p_doc)*]))*
                $(($c $c_json $c_metric $c_help Counter [$($c_doc)*]))*
                $(($d $d_json $d_metric $d_help Counter [$($d_doc)*]))*
            ]
            summed: [
                $(($g $g_json $g_metric $g_help Gauge))*
                $(($c $c_json $c_metric $c_help Counter))*
                $(($d $d_json $d_metric $d_help Counter))*
            ]
            cumulative: [
                $(($c $c_json $c_metric $c_help Counter))*
                $(($d $d_json $d_metric $d_help Counter))*
            ]
            stored: [$(($c $c_help))*]
            peak: [$($p)*]
        }
    };

    (@expand
        every: [$(($f:ident $json:literal $metric:literal $help:literal $kind:ident [$($doc:literal)*]))*]
        summed: [$(($s:ident $($s_info:tt)*))*]
        cumulative: [$(($k:ident $($k_info:tt)*))*]
        stored: [$(($a:ident $a_help:literal))*]
        peak: [$($p:ident)*]
    ) => {
        /// Live counters of one backend, shared by the pool's snapshots and every open
        /// [`Lease`](crate::Lease).
        ///
        /// It outlives the backend's removal for as long as a connection still holds it, so
        /// accounting of connections opened before a removal finishes normally.
        ///
        /// Active connections are not a counter of their own but `opened - closed`. A pick then
        /// costs one atomic read-modify-write, which counts the pick and the new connection at
        /// once, and a release one; both counters only ever grow, so the active count cannot
        /// underflow.
        ///
        /// `repr(C)`: the counters a pick and a release write come first, see `Slot`.
        #[derive(Debug, Default)]
        #[repr(C)]
        pub(crate) struct Counters {
            /// Successful picks, each of which opened a lease: the stats' `picks`.
            opened: AtomicU64,
            /// Leases dropped: connections that have ended.
            closed: AtomicU64,
            /// The most connections open at once, as `try_acquire` saw it.
            peak_active: AtomicU64,
            $(#[doc = $a_help] pub(crate) $a: AtomicU64,)*
        }

        impl Counters {
            $(
                #[doc = concat!("The `", stringify!($a), "` counted so far.")]
                pub(crate) fn $a(&self) -> u64 {
                    self.$a.load(Relaxed)
                }
            )*
        }

        /// One backend's state and counters at the moment [`Pool::stats`](crate::Pool::stats)
        /// was called.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct BackendStats {
            /// The backend's id in the pool: never reused, unlike its address.
            pub id: BackendId,
            /// The backend's address, where its connections go.
            pub addr: SocketAddr,
            /// The backend's weight when the stats were read.
            pub weight: u32,
            /// Health as the checks and real traffic last established it.
            pub health: Health,
            /// Whether any health result (a check, a failure seen in traffic, an operator's
            /// `set_health`) has arrived since the backend was added. Until then `health` is
            /// the configured initial state, taken on trust.
            pub checked: bool,
            /// What the operator has asked of the backend: ready, drain or maint.
            pub admin: AdminState,
            /// Whether the backend has been removed (shown only while connections are still
            /// open).
            pub removed: bool,
            /// Whether the backend is a backup: it takes new connections only while no
            /// primary is available ([`PoolStats::backup_active`](crate::PoolStats::backup_active)
            /// says when that is).
            pub backup: bool,
            /// While a slow-start ramp runs: the share of its weight the backend has now, in
            /// percent (10, 20, ... 100); `None` at full weight. See
            /// [`effective_weight`](Self::effective_weight).
            pub ramp_percent: Option<u8>,
            $(#[doc = $help] $(#[doc = $doc])* pub $f: u64,)*
            /// When health last changed (as passed in by whoever reported it), if ever.
            pub last_change: Option<Instant>,
        }

        impl BackendStats {
            pub(crate) fn read(backend: Backend, counters: &Counters, state: BackendState) -> Self {
                BackendStats {
                    id: backend.id,
                    addr: backend.addr,
                    weight: backend.weight,
                    health: state.health,
                    checked: state.checked,
                    admin: state.admin,
                    removed: state.removed,
                    backup: state.backup,
                    ramp_percent: state.ramp_percent,
                    $($f: counters.$f(),)*
                    last_change: state.last_change,
                }
            }

            /// Adds `other`'s counters to these, for two backends shown as one: the sums, and
            /// the larger of the two peaks.
            pub(crate) fn merge(&mut self, other: &BackendStats) {
                $(self.$s += other.$s;)*
                $(self.$p = self.$p.max(other.$p);)*
            }
        }

        backend_counters!(@outputs BackendStats [$(($f $json $metric $help $kind))*]);

        /// Sums over every backend the pool has ever had: those listed in
        /// [`PoolStats::backends`](crate::PoolStats::backends) plus the removed ones no longer
        /// listed ([`PoolStats::retired`](crate::PoolStats::retired)). The cumulative fields
        /// (everything but `backends`, `available` and `active`) therefore never go backwards,
        /// also across removals, re-adds and reloads.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct Totals {
            /// Backends in the pool (not counting removed ones).
            pub backends: usize,
            /// Backends that can take a new connection now (up and ready).
            pub available: usize,
            $(#[doc = concat!("[`BackendStats::", stringify!($s), "`], summed.")] pub $s: u64,)*
            /// Picks that found no backend available.
            pub no_backend: u64,
        }

        impl Totals {
            /// Adds one listed backend's counters.
            pub(crate) fn add_backend(&mut self, backend: &BackendStats) {
                $(self.$s += backend.$s;)*
            }

            /// Adds the counters of retired backends (or of a balancer's retired pools).
            pub fn add_retired(&mut self, retired: &RetiredTotals) {
                $(self.$k += retired.$k;)*
            }

            /// Adds another pool's totals, every field: for sums over several pools.
            pub fn add_pool(&mut self, other: &Totals) {
                self.backends += other.backends;
                self.available += other.available;
                self.no_backend += other.no_backend;
                $(self.$s += other.$s;)*
            }
        }

        backend_counters!(@outputs Totals [$(($s $($s_info)*))*]);

        /// The cumulative counters of removed backends that are no longer listed in
        /// [`PoolStats::backends`](crate::PoolStats::backends) (their last connection has
        /// ended), summed.
        ///
        /// [`Totals`] include them, so that dropping a removed backend's record never makes a
        /// total go backwards: `totals.connections` is the sum of the listed backends'
        /// `connections` plus `retired.connections`, and likewise for the other fields here.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
        pub struct RetiredTotals {
            /// Removed backends counted here (records dropped or about to be).
            pub backends: u64,
            $(#[doc = concat!("[`BackendStats::", stringify!($k), "`], summed.")] pub $k: u64,)*
        }

        impl RetiredTotals {
            /// Adds one removed backend's counters as read into `stats`.
            pub(crate) fn add_stats(&mut self, stats: &BackendStats) {
                self.backends += 1;
                $(self.$k += stats.$k;)*
            }

            /// Adds what a whole pool did, from its final `totals` over `backends` backends:
            /// for a balancer that drops a pool once its last connection has ended and keeps
            /// its history in one of these, so its own totals never go backwards either.
            pub fn add_totals(&mut self, totals: &Totals, backends: u64) {
                self.backends += backends;
                $(self.$k += totals.$k;)*
            }
        }

        backend_counters!(@outputs RetiredTotals [$(($k $($k_info)*))*]);
    };

    // The output metadata of a struct with these counter fields.
    (@outputs $ty:ident [$(($f:ident $json:literal $metric:literal $help:literal $kind:ident))*]) => {
        impl $ty {
            #[doc = concat!("The counters of a `", stringify!($ty), "`, in output order: that of the admin endpoint's JSON.")]
            pub const COUNTERS: &'static [CounterInfo] = &[$(CounterInfo {
                field: stringify!($f),
                json: $json,
                metric: $metric,
                help: $help,
                kind: CounterKind::$kind,
            },)*];

            /// Each of [`COUNTERS`](Self::COUNTERS) with its value here, in that order.
            pub fn counters(&self) -> impl Iterator<Item = (&'static CounterInfo, u64)> {
                Self::COUNTERS.iter().zip([$(self.$f),*])
            }

            /// The value of `counter` here, or `None` if this struct does not have it.
            pub fn value(&self, counter: &CounterInfo) -> Option<u64> {
                self.counters().find(|(c, _)| c.field == counter.field).map(|(_, value)| value)
            }
        }
    };
}

backend_counters! {
    // field             JSON key     Prometheus metric                      help
    gauge {
        active           "active"     "lb_backend_active_connections"        "Connections open to the backend now.";
    }
    peak {
        /// Counted since the backend was added. A connection closing while another is being
        /// picked can make this miss that one pick's peak; it never overstates.
        peak_active      "peak"       "lb_backend_peak_active_connections"   "Most connections open to the backend at once.";
    }
    counter {
        connections      "total"      "lb_backend_connections"               "Connections established to the backend.";
        /// Refused, timed out, and so on.
        connect_failures "failures"   "lb_backend_connect_failures"          "Failed attempts to connect to the backend.";
        retries          "retries"    "lb_backend_retries"                   "Failed connects to the backend after which another backend was tried.";
        bytes_in         "bytes_in"   "lb_backend_in_bytes"                  "Bytes from clients relayed to the backend.";
        bytes_out        "bytes_out"  "lb_backend_out_bytes"                 "Bytes from the backend relayed to clients.";
    }
    computed_counter {
        /// Including picks whose connect then failed.
        picks            "picks"      "lb_backend_picks"                     "Times the algorithm chose the backend.";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire names of the admin endpoint and metrics, one counter a line: field, JSON key,
    /// Prometheus metric, kind, help.
    const WIRE: &str = "\
active active lb_backend_active_connections Gauge Connections open to the backend now.
peak_active peak lb_backend_peak_active_connections Gauge Most connections open to the backend at once.
connections total lb_backend_connections Counter Connections established to the backend.
connect_failures failures lb_backend_connect_failures Counter Failed attempts to connect to the backend.
retries retries lb_backend_retries Counter Failed connects to the backend after which another backend was tried.
bytes_in bytes_in lb_backend_in_bytes Counter Bytes from clients relayed to the backend.
bytes_out bytes_out lb_backend_out_bytes Counter Bytes from the backend relayed to clients.
picks picks lb_backend_picks Counter Times the algorithm chose the backend.
";

    /// The fields named in `WIRE`, so that a counter added to the table later (which these
    /// tests do not know) leaves them passing: adding one stays a one-line change.
    fn known(field: &str) -> bool {
        WIRE.lines().any(|line| line.split(' ').next() == Some(field))
    }

    fn fields(list: &[CounterInfo]) -> Vec<&'static str> {
        list.iter().map(|c| c.field).filter(|f| known(f)).collect()
    }

    fn values<'a>(counters: impl Iterator<Item = (&'a CounterInfo, u64)>) -> Vec<(&'a str, u64)> {
        counters.filter(|(c, _)| known(c.field)).map(|(c, v)| (c.field, v)).collect()
    }

    #[test]
    fn the_table_carries_the_wire_names_in_output_order() {
        let table: String = BackendStats::COUNTERS
            .iter()
            .filter(|c| known(c.field))
            .map(|c| format!("{} {} {} {:?} {}\n", c.field, c.json, c.metric, c.kind, c.help))
            .collect();
        assert_eq!(table, WIRE);
        let cumulative =
            ["connections", "connect_failures", "retries", "bytes_in", "bytes_out", "picks"];
        assert_eq!(fields(RetiredTotals::COUNTERS), cumulative);
        assert_eq!(fields(Totals::COUNTERS)[0], "active");
        assert_eq!(fields(Totals::COUNTERS)[1..], cumulative);
        // Every struct describes a counter the same way, so outputs name it the same everywhere.
        for c in Totals::COUNTERS.iter().chain(RetiredTotals::COUNTERS) {
            assert!(BackendStats::COUNTERS.contains(c), "{c:?}");
        }
    }

    #[test]
    fn each_value_is_read_from_its_own_counter_and_summed_into_its_own_field() {
        let counters = Counters::default();
        counters.opened.store(10, Relaxed);
        counters.closed.store(9, Relaxed);
        counters.peak_active.store(2, Relaxed);
        counters.connections.store(3, Relaxed);
        counters.connect_failures.store(4, Relaxed);
        counters.retries.store(5, Relaxed);
        counters.bytes_in.store(6, Relaxed);
        counters.bytes_out.store(7, Relaxed);
        let backend =
            Backend { id: BackendId(1), addr: SocketAddr::from(([10, 0, 0, 1], 80)), weight: 1 };
        let state = BackendState {
            health: Health::Up,
            checked: false,
            admin: AdminState::Ready,
            last_change: None,
            removed: false,
            backup: false,
            ramp_percent: None,
        };
        let stats = BackendStats::read(backend, &counters, state);
        let read = [("active", 1), ("peak_active", 2), ("connections", 3), ("connect_failures", 4)];
        assert_eq!(values(stats.counters())[..4], read);
        let read = [("retries", 5), ("bytes_in", 6), ("bytes_out", 7), ("picks", 10)];
        assert_eq!(values(stats.counters())[4..], read);
        assert_eq!((stats.active, stats.peak_active, stats.picks), (1, 2, 10));
        assert_eq!((stats.connect_failures, stats.bytes_out), (4, 7));
        for c in BackendStats::COUNTERS {
            assert_eq!(stats.value(c), stats.counters().find(|(d, _)| d == &c).map(|(_, v)| v));
        }

        let mut retired = RetiredTotals::default();
        retired.add_stats(&stats);
        retired.add_stats(&stats);
        assert_eq!((retired.backends, retired.connections, retired.picks), (2, 6, 20));
        let peak = &BackendStats::COUNTERS[1];
        assert_eq!(retired.value(peak), None, "a retired backend has no peak");

        let mut totals = Totals::default();
        totals.add_backend(&stats);
        totals.add_retired(&retired);
        let sums = [("active", 1), ("connections", 9), ("connect_failures", 12), ("retries", 15)];
        assert_eq!(values(totals.counters())[..4], sums);
        let sums = [("bytes_in", 18), ("bytes_out", 21), ("picks", 30)];
        assert_eq!(values(totals.counters())[4..], sums);

        let (mut merged, mut other) = (stats.clone(), stats.clone());
        other.peak_active = 5;
        merged.merge(&other);
        let active_peak_in_picks =
            (merged.active, merged.peak_active, merged.bytes_in, merged.picks);
        assert_eq!(active_peak_in_picks, (2, 5, 12, 20), "sums, and the larger peak");
    }
}
