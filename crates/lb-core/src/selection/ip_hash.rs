//! `ip_hash`: Maglev consistent hashing of the client IP.
//!
//! Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load Balancer" (NSDI 2016),
//! section 3.4. Each backend has a pseudo-random permutation of the table's slots derived from
//! a hash of its address; backends take turns claiming their next preferred free slot until the
//! table is full. A client IP hashes to a slot, and the slot names its backend.
//!
//! - The table size is prime (65537 for up to 655 backends, larger beyond), so every
//!   permutation visits every slot. Every backend gets the same number of slots per unit of
//!   weight to within one, so the slots per backend bound the spread: at least 100 per backend
//!   (within 1 %) up to 1,310 backends; from there the table stays at 262,147 slots (512 KiB)
//!   up to 10,082 backends, at least 26 slots each (within 4 %), then grows again. The cap keeps
//!   the table in a core's L2 cache at 10,000 backends, where a 2 MiB table made each lookup a
//!   memory access (180 against 52 ns per pick), and makes each rebuild a quarter of the
//!   work. Fewer slots per backend do not move more clients when a backend comes or goes:
//!   removing one of 10,000 moves 0.08 % of the others' slots at 26 and at 105 per backend.
//! - Weighted: a backend with twice the weight takes twice as many turns.
//! - Deterministic: hashes are fixed functions of addresses (no per-process random seed) and
//!   the build orders backends by address, so every balancer instance with the same backend
//!   set, however it was assembled, maps every client to the same backend.
//! - Minimal disruption: removing one of N backends moves about 1/N of clients (those of the
//!   removed backend, plus a small fraction of others).

use std::net::{IpAddr, SocketAddr};

use super::{first_allowed_from, FastMod, PickCtx, Select};
use crate::slot::Candidate;

/// Table sizes: primes, each used up to the given backend count; at least 100 slots per backend
/// up to 1,310 backends, then at least 26.
///
/// Changing a size remaps every client of the pools it applies to: the release that capped the
/// table at 262,147 slots between 1,311 and 10,082 backends did so (and 524,287 up to 20,164)
/// for pools of 2,622 to 20,164 backends, and says so in its notes.
const TABLE_SIZES: [(usize, u64); 5] = [
    (655, 65_537),
    (1_310, 131_071),
    (10_082, 262_147),
    (20_164, 524_287),
    (usize::MAX, 1_048_573),
];

/// Fewest slots per backend a table has, up to its backend count, beyond the first two sizes.
#[cfg(test)]
const MIN_SLOTS_PER_BACKEND: u64 = 26;

/// The table size used for `backends` backends.
pub fn table_size(backends: usize) -> u64 {
    TABLE_SIZES.iter().find(|(max, _)| backends <= *max).map_or(1_048_573, |&(_, m)| m)
}

/// A fixed 64-bit mixer (splitmix64's finaliser): every input bit affects every output bit.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a over `bytes`, then mixed: stable across processes, platforms and releases.
fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// The hash of a client IP used to find its slot. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`,
/// what a dual-stack listener reports for IPv4 clients) hash as the IPv4 address, so a client
/// keeps its backend whichever way it arrived.
#[inline]
pub fn hash_client(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => mix(u64::from(u32::from(v4)) ^ 0x5bd1_e995_0000_0000),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => hash_client(IpAddr::V4(v4)),
            None => {
                let bits = u128::from(v6);
                mix((bits as u64) ^ mix((bits >> 64) as u64))
            }
        },
    }
}

fn addr_bytes(addr: &SocketAddr) -> Vec<u8> {
    let mut bytes = match addr.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.extend_from_slice(&addr.port().to_be_bytes());
    bytes
}

/// A Maglev lookup table over a set of weighted backends.
///
/// Public so that the property of the algorithm (spread, disruption) can be measured on its own;
/// the pool builds one per snapshot when `ip_hash` is selected.
#[derive(Debug, Clone)]
pub struct MaglevTable {
    /// Slot -> index into the `backends` slice given to [`MaglevTable::build`].
    slots: Slots,
    /// Reduces a hash to a slot.
    slot_of: FastMod,
}

/// The slots, two bytes each when every backend index fits: each lookup reads one slot at a
/// random place in a table of hundreds of kilobytes, so halving it keeps more of it in cache.
#[derive(Debug, Clone)]
enum Slots {
    Narrow(Box<[u16]>),
    Wide(Box<[u32]>),
}

impl MaglevTable {
    /// Builds the table for `(address, weight)` pairs. The result does not depend on their
    /// order. An empty slice gives an empty table, whose lookups return `None`.
    pub fn build(backends: &[(SocketAddr, u32)]) -> MaglevTable {
        let n = backends.len();
        if n == 0 {
            return MaglevTable { slots: Slots::Wide(Box::new([])), slot_of: FastMod::new(1) };
        }
        let m = table_size(n);
        let slots = if n <= usize::from(u16::MAX) + 1 {
            Slots::Narrow(fill(backends, m, |i| i as u16))
        } else {
            Slots::Wide(fill(backends, m, |i| i))
        };
        MaglevTable { slots, slot_of: FastMod::new(m) }
    }

    /// Number of slots (a prime), or 0 for an empty table.
    pub fn len(&self) -> usize {
        match &self.slots {
            Slots::Narrow(s) => s.len(),
            Slots::Wide(s) => s.len(),
        }
    }

    /// Whether the table has no backends.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The index (into the slice given to `build`) of the backend for `hash`.
    #[inline]
    pub fn lookup(&self, hash: u64) -> Option<usize> {
        let slot = self.slot_of.rem(hash) as usize;
        match &self.slots {
            Slots::Narrow(s) => s.get(slot).map(|&i| usize::from(i)),
            Slots::Wide(s) => s.get(slot).map(|&i| i as usize),
        }
    }

    /// Like [`lookup`](Self::lookup), but walks on from the hash's slot past backends `skip`
    /// rejects, so a key's second choice is as stable as its first.
    #[inline]
    pub fn lookup_skipping(&self, hash: u64, skip: impl Fn(usize) -> bool) -> Option<usize> {
        if self.is_empty() {
            return None;
        }
        let start = self.slot_of.rem(hash) as usize;
        match &self.slots {
            Slots::Narrow(s) => first_allowed_from(s, start, skip),
            Slots::Wide(s) => first_allowed_from(s, start, skip),
        }
    }

    /// The slot a hash falls in (`hash % len`), or `None` for an empty table.
    pub fn slot_of(&self, hash: u64) -> Option<u64> {
        (!self.is_empty()).then(|| self.slot_of.rem(hash))
    }

    /// The distinct backends (indices into the slice given to `build`) in the order a key
    /// whose hash is `hash` prefers them: the table's slots from the key's own onwards,
    /// wrapping, each backend at its first appearance. This is the order in which a pick walks
    /// on past backends it cannot use.
    pub fn preference(&self, hash: u64, backends: usize) -> Vec<usize> {
        let mut seen = vec![false; backends];
        let mut order = Vec::with_capacity(backends);
        let Some(start) = self.slot_of(hash) else { return order };
        let len = self.len() as u64;
        for k in 0..len {
            let Some(i) = self.lookup((start + k) % len) else { break };
            if !std::mem::replace(&mut seen[i], true) {
                order.push(i);
                if order.len() == backends {
                    break;
                }
            }
        }
        order
    }

    /// How many slots each backend (by index into the slice given to `build`) owns.
    pub fn slot_counts(&self, backends: usize) -> Vec<u64> {
        let mut counts = vec![0; backends];
        match &self.slots {
            Slots::Narrow(s) => s.iter().for_each(|&i| counts[usize::from(i)] += 1),
            Slots::Wide(s) => s.iter().for_each(|&i| counts[i as usize] += 1),
        }
        counts
    }
}

/// One backend's walk through the table while it is being filled.
struct Walk {
    /// The next slot it will try: its permutation is offset, offset + skip, offset + 2 skip, ...
    /// (mod m), advanced by addition, not multiplication and division.
    position: u64,
    skip: u64,
    weight: u64,
    /// Credit towards a turn: a backend takes one turn per `max_weight` of credit, so turns are
    /// proportional to weight and the heaviest backend takes one every round.
    credit: u64,
    /// Its index in the caller's slice.
    index: u32,
}

/// Maglev's fill: backends in address order take turns claiming the next free slot of their
/// permutation until all `m` slots are taken.
fn fill<T: Copy + Default>(
    backends: &[(SocketAddr, u32)],
    m: u64,
    entry: impl Fn(u32) -> T,
) -> Box<[T]> {
    let mut walks: Vec<Walk> = backends
        .iter()
        .enumerate()
        .map(|(i, &(addr, weight))| {
            let bytes = addr_bytes(&addr);
            Walk {
                position: hash_bytes(0x6d61_676c_6576_0001, &bytes) % m,
                skip: hash_bytes(0x6d61_676c_6576_0002, &bytes) % (m - 1) + 1,
                weight: u64::from(weight),
                credit: 0,
                index: i as u32,
            }
        })
        .collect();
    // Address order makes the result independent of the input order.
    walks.sort_by_key(|w| backends[w.index as usize].0);
    let max_weight = walks.iter().map(|w| w.weight).max().unwrap_or(1).max(1);
    let mut slots = vec![T::default(); m as usize];
    // Which slots are taken, one bit each. Most probes find a taken slot (filling m slots takes
    // about m ln m probes), and a bitmap of m / 8 bytes (16 KiB for 131071 slots) answers them
    // from the L1 cache, where the table itself would miss.
    let mut taken = vec![0u64; (m as usize).div_ceil(64)];
    let mut filled = 0u64;
    loop {
        for w in &mut walks {
            w.credit += w.weight;
            if w.credit < max_weight {
                continue;
            }
            w.credit -= max_weight;
            let slot = loop {
                let candidate = w.position as usize;
                w.position += w.skip;
                if w.position >= m {
                    w.position -= m;
                }
                let (word, bit) = (candidate / 64, 1u64 << (candidate % 64));
                if taken[word] & bit == 0 {
                    taken[word] |= bit;
                    break candidate;
                }
            };
            slots[slot] = entry(w.index);
            filled += 1;
            if filled == m {
                return slots.into_boxed_slice();
            }
        }
    }
}

/// The most active connections a backend may hold under bounded-load consistent hashing:
/// `ceil(factor / 100 × (total_active + 1) × weight / total_weight)`.
///
/// Mirrokni, Thorup and Zadimoghaddam, "Consistent Hashing with Bounded Loads" (SODA 2018):
/// each bin's capacity is `ceil(c × m / n)` for `m` balls (the one being placed included) in
/// `n` bins; weighted here, as HAProxy's `hash-balance-factor` does, so a backend's share of
/// the capacity is its share of the weight. `total_active` and `total_weight` are over the
/// backends the pick chooses from; `factor` is the percentage (125 for `c = 1.25`). A backend
/// takes a new connection only while its active count is *below* this bound, so after the
/// pick it holds at most the bound computed with the new total.
///
/// ```
/// use lb_core::selection::load_bound;
/// // 3 equal backends, 8 connections open, factor 125: ceil(1.25 × 9 / 3) = 4.
/// assert_eq!(load_bound(125, 8, 3, 1), 4);
/// ```
pub fn load_bound(factor: u32, total_active: u64, total_weight: u64, weight: u32) -> u64 {
    let numerator = u128::from(factor) * (u128::from(total_active) + 1) * u128::from(weight);
    let denominator = 100 * u128::from(total_weight.max(1));
    u64::try_from(numerator.div_ceil(denominator)).unwrap_or(u64::MAX)
}

#[derive(Debug)]
pub(crate) struct IpHash {
    table: MaglevTable,
    /// Bounded load's factor in percent, 0 for plain Maglev.
    balance_factor: u32,
    /// Sum of the candidates' weights, for the bound.
    total_weight: u64,
}

impl IpHash {
    pub(crate) fn new(candidates: &[Candidate], balance_factor: u32) -> Self {
        let backends: Vec<(SocketAddr, u32)> =
            candidates.iter().map(|c| (c.addr(), c.weight)).collect();
        let total_weight = candidates.iter().map(|c| u64::from(c.weight)).sum();
        IpHash { table: MaglevTable::build(&backends), balance_factor, total_weight }
    }

    pub(crate) fn table(&self) -> &MaglevTable {
        &self.table
    }

    pub(crate) fn balance_factor(&self) -> u32 {
        self.balance_factor
    }

    pub(crate) fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// The hash a pick uses for `client`.
    #[inline]
    pub(crate) fn hash(ctx: &mut PickCtx<'_>) -> u64 {
        // Without a client address (an in-memory test stream, a Unix socket) there is nothing to
        // be sticky to: any slot will do.
        match ctx.client {
            Some(ip) => hash_client(ip),
            None => ctx.rng().u64(..),
        }
    }

    /// The pick for a client whose hash is `hash`: what [`Select::pick`] does once it has the
    /// hash, and what `explain` asks to agree with it.
    #[inline(always)]
    pub(crate) fn pick_hash(
        &self,
        candidates: &[Candidate],
        hash: u64,
        skip: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        if self.balance_factor == 0 {
            return self.table.lookup_skipping(hash, skip);
        }
        self.pick_bounded(candidates, hash, skip)
    }

    /// The bounded-load pick: the client's first choice `skip` allows if it is under the
    /// bound, else the next backend in the client's preference order (the table's slots from
    /// its own) that is; if every backend `skip` allows is at the bound (the ones under it
    /// excluded or at their connection limit), the first choice after all, rather than none.
    ///
    /// Out of line: only pools with the factor set come here, and the plain pick stays small.
    #[inline(never)]
    pub(crate) fn pick_bounded(
        &self,
        candidates: &[Candidate],
        hash: u64,
        skip: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let first = self.table.lookup_skipping(hash, &skip)?;
        // An idle backend is under any bound (at least 1), so the sum is not needed.
        if candidates[first].active() == 0 {
            return Some(first);
        }
        let total: u64 = candidates.iter().map(Candidate::active).sum();
        let under = |i: usize| {
            let c = &candidates[i];
            c.active() < load_bound(self.balance_factor, total, self.total_weight, c.weight)
        };
        if under(first) {
            return Some(first);
        }
        self.table.lookup_skipping(hash, |i| skip(i) || !under(i)).or(Some(first))
    }
}

impl Select for IpHash {
    fn build(candidates: &[Candidate]) -> Self {
        IpHash::new(candidates, 0)
    }

    #[inline]
    fn pick(&self, ctx: &mut PickCtx<'_>, skip: impl Fn(usize) -> bool) -> Option<usize> {
        let hash = IpHash::hash(ctx);
        self.pick_hash(ctx.candidates, hash, skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_prime(n: u64) -> bool {
        n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| !n.is_multiple_of(d))
    }

    #[test]
    fn table_sizes_are_prime_with_room_for_each_backend() {
        for (k, (max, m)) in TABLE_SIZES.into_iter().enumerate() {
            assert!(is_prime(m), "{m} is not prime");
            let per_backend = if k < 2 { 100 } else { MIN_SLOTS_PER_BACKEND };
            if max != usize::MAX {
                assert!(m >= per_backend * max as u64, "{m} slots for {max} backends");
            }
        }
        // A pool of 10,000 backends keeps its table in 512 KiB (two bytes a slot).
        assert_eq!(table_size(10_000) * 2, 524_294);
    }

    #[test]
    fn mapped_ipv4_hashes_as_ipv4() {
        let v4: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(hash_client(v4), hash_client(mapped));
        assert_ne!(hash_client(v4), hash_client("10.1.2.4".parse().unwrap()));
    }

    #[test]
    fn hash_is_stable_across_releases() {
        // Pinned values: changing the hash would remap every client of every deployed balancer.
        assert_eq!(hash_client("192.0.2.1".parse().unwrap()) % 65_537, PINNED_V4);
        assert_eq!(hash_client("2001:db8::1".parse().unwrap()) % 65_537, PINNED_V6);
    }

    const PINNED_V4: u64 = 17_208;
    const PINNED_V6: u64 = 49_936;

    #[test]
    fn tables_are_stable_across_releases() {
        // Pinned digests of whole tables, narrow and wide: a faster build must fill exactly the
        // same slots, or every deployed balancer would remap its clients on upgrade.
        let digest = |n: usize, weights: &[u32]| {
            let backends: Vec<(SocketAddr, u32)> = (0..n)
                .map(|i| {
                    let addr =
                        SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 9000));
                    (addr, weights[i % weights.len()])
                })
                .collect();
            let table = MaglevTable::build(&backends);
            (0..table.len() as u64).fold(0u64, |h, slot| {
                h.wrapping_mul(31).wrapping_add(table.lookup(slot).unwrap() as u64)
            })
        };
        assert_eq!(digest(10, &[3, 1, 1]), PINNED_10);
        assert_eq!(digest(1000, &[1]), PINNED_1000);
        assert_eq!(digest(70_000, &[1, 2]), PINNED_70000);
    }

    const PINNED_10: u64 = 0x5026_6be1_419d_6a28;
    const PINNED_1000: u64 = 0x8bd1_cfea_c46c_f419;
    const PINNED_70000: u64 = 0x04fa_b3ac_5349_7fd8;

    #[test]
    fn every_slot_is_filled_and_weights_are_honoured() {
        let backends: Vec<(SocketAddr, u32)> = (0..10)
            .map(|i| (format!("10.0.0.{i}:80").parse().unwrap(), if i == 0 { 3 } else { 1 }))
            .collect();
        let t = MaglevTable::build(&backends);
        assert_eq!(t.len(), 65_537);
        let counts = t.slot_counts(backends.len());
        assert_eq!(counts.iter().sum::<u64>(), 65_537);
        let unit = 65_537.0 / 12.0;
        assert!((counts[0] as f64 - 3.0 * unit).abs() < 5.0, "{counts:?}");
        for &c in &counts[1..] {
            assert!((c as f64 - unit).abs() < 5.0, "{counts:?}");
        }
    }
}
