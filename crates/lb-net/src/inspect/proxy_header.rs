//! The PROXY protocol (HAProxy's `doc/proxy-protocol.txt`, versions 1 and 2): [`parse`] the
//! header an upstream balancer puts in front of each client connection (`accept-proxy`), and
//! [`encode`] one for a backend connection (`send-proxy`).
//!
//! The wire formats are handled by the [`ppp`] crate, the most used maintained implementation
//! (and the one with both versions, both directions and no dependencies beyond `thiserror`): its
//! parser borrows the input, never reads beyond the length a v2 header announces, and tells a
//! partial v2 header from an invalid one. Its judgement of partial v1 lines has gaps (a valid
//! prefix ending in the space before the last port is "invalid"; an `UNKNOWN` line with more
//! than four fields stays "partial" for ever; it takes `+80` as a port), so v1 lines are handed
//! to it only once their CRLF is in, as the spec recommends anyway. This module wraps it in the
//! contract of [`crate::inspect`] and settles what the spec leaves to the receiver:
//!
//! - **Families.** Only TCP over IPv4 or IPv6 carries addresses ([`Header::Tcp`]). v1 `UNKNOWN`
//!   and v2 `PROXY` headers for UNSPEC, UDP or `AF_UNIX` connections are accepted as
//!   [`Header::Unknown`], as the spec asks of a receiver that does not support them ("falls back
//!   to the UNSPEC mode"); v2 `LOCAL` (the upstream's own connection, e.g. a health check) is
//!   [`Header::Local`]. In both cases the caller uses the connection's real endpoints.
//! - **IPv4-mapped IPv6** addresses (`::ffff:192.0.2.7`) come back as IPv4, whichever family the
//!   header used, so one client is one key for `ip_hash` and one address in the logs.
//! - **TLVs** of v2 must each end within the header, and a CRC32C checksum (`PP2_TYPE_CRC32C`)
//!   must match the header (the spec asks a receiver that can to verify it; `crc32c` crate);
//!   the others are skipped without being interpreted (the spec allows it). `consumed` always
//!   covers them.
//! - **Size.** [`MAX_LEN`] is the largest header the spec allows (v2 with 65,535 bytes of
//!   addresses and TLVs); v1 lines end within 107 bytes or are invalid.
//!
//! The protocol must only be accepted from trusted proxies: whoever may send a header chooses
//! the client address the balancer sees.

use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2, PartialResult};

/// The longest header [`parse`] may need: a v2 header with the largest length field (16 bytes
/// of fixed header and 65,535 of addresses and TLVs). The parser rejects no spec-valid header
/// for its size (a caller may: the balancer's `accept-proxy` stops at 4 KiB); v1 lines are
/// much shorter ([`V1_MAX_LEN`]). `parse` never returns [`Parse::Incomplete`] for this many
/// bytes or more.
pub const MAX_LEN: usize = 16 + u16::MAX as usize;

/// The longest v1 line, CRLF included, as the spec bounds it (`PROXY UNKNOWN` with two full
/// IPv6 addresses and ports).
pub const V1_MAX_LEN: usize = 107;

/// How a v1 header starts: the word and its one space.
const V1_SIGNATURE: &[u8] = b"PROXY ";

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// A prefix of a valid header: read more and parse again.
    Incomplete,
    /// A complete header of `consumed` bytes. The bytes after it belong to the client's stream.
    Done {
        /// What the header says.
        header: Header,
        /// Length of the header, to drop from the front of the buffer.
        consumed: usize,
    },
    /// Not a PROXY protocol header: close the connection (the spec forbids guessing).
    Invalid(InvalidHeader),
}

/// The connection a header describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Header {
    /// A proxied TCP connection (v1 `TCP4`/`TCP6`, v2 `PROXY` over TCP/IPv4 or TCP/IPv6).
    Tcp {
        /// The client, as the upstream proxy saw it.
        source: SocketAddr,
        /// The address the client connected to, on the upstream proxy.
        destination: SocketAddr,
    },
    /// v2 `LOCAL`: the upstream proxy's own connection (typically a health check). Use the real
    /// endpoints.
    Local,
    /// v1 `UNKNOWN`, or v2 `PROXY` for a connection this proxy does not carry (UNSPEC family or
    /// protocol, UDP, `AF_UNIX`). Use the real endpoints.
    Unknown,
}

impl Header {
    /// The original client's address, for a proxied TCP connection.
    pub fn source(&self) -> Option<SocketAddr> {
        match self {
            Header::Tcp { source, .. } => Some(*source),
            Header::Local | Header::Unknown => None,
        }
    }

    /// The address the original client connected to, for a proxied TCP connection.
    pub fn destination(&self) -> Option<SocketAddr> {
        match self {
            Header::Tcp { destination, .. } => Some(*destination),
            Header::Local | Header::Unknown => None,
        }
    }
}

/// Why bytes are not a PROXY protocol header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidHeader {
    /// Neither signature: the peer does not speak the protocol (a direct client, or a proxy not
    /// configured to send it).
    #[error("no PROXY protocol header (the peer is not a proxy sending one)")]
    NoSignature,
    /// A v1 line that does not follow the grammar.
    #[error("malformed PROXY protocol v1 header: {0}")]
    V1(String),
    /// A v2 header with a bad version, command, family or length.
    #[error("malformed PROXY protocol v2 header: {0}")]
    V2(String),
}

/// Parses the PROXY protocol header at the start of `buf`, either version (told apart by their
/// signatures). See [`Parse`] and the contract in [`crate::inspect`].
pub fn parse(buf: &[u8]) -> Parse {
    let buf = &buf[..buf.len().min(MAX_LEN)];
    if could_start_with(buf, v2::PROTOCOL_PREFIX) {
        parse_v2(buf)
    } else if could_start_with(buf, V1_SIGNATURE) {
        parse_v1(buf)
    } else {
        Parse::Invalid(InvalidHeader::NoSignature)
    }
}

/// Whether `buf` is a prefix of `signature` or starts with it.
fn could_start_with(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

fn parse_v2(buf: &[u8]) -> Parse {
    match v2::Header::try_from(buf) {
        Ok(parsed) => {
            let header = match (parsed.command, parsed.protocol, parsed.addresses) {
                (v2::Command::Local, _, _) => Header::Local,
                (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv4(a)) => tcp(
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                ),
                (v2::Command::Proxy, v2::Protocol::Stream, v2::Addresses::IPv6(a)) => tcp(
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                ),
                (v2::Command::Proxy, _, _) => Header::Unknown,
            };
            if let Err(why) = check_tlvs(&parsed) {
                return Parse::Invalid(InvalidHeader::V2(why));
            }
            Parse::Done { header, consumed: parsed.len() }
        }
        Err(e) if e.is_incomplete() => Parse::Incomplete,
        Err(e) => Parse::Invalid(InvalidHeader::V2(e.to_string())),
    }
}

/// The v2 TLV type of a CRC32C checksum of the header (`PP2_TYPE_CRC32C`).
const TLV_CRC32C: u8 = 0x03;

/// Checks a v2 header's TLVs: each must end within the header (HAProxy refuses a header whose
/// TLVs do not add up, and so does this), and a CRC32C checksum, where the sender gave one,
/// must match: the spec asks a receiver that supports it to verify it ("the receiver MUST also
/// calculate the checksum of the header and verify it"), over the whole header with the
/// checksum's own four bytes as zeros. Other TLVs are not interpreted.
fn check_tlvs(parsed: &v2::Header<'_>) -> Result<(), String> {
    let header = parsed.as_bytes();
    // Where each TLV starts in `header`: after the addresses, then one after the other.
    let mut at = header.len() - parsed.tlv_bytes().len();
    for tlv in parsed.tlvs() {
        let tlv = tlv.map_err(|e| format!("a TLV does not fit in the header ({e})"))?;
        let value = at + 3;
        at = value + tlv.value.len();
        if tlv.kind != TLV_CRC32C {
            continue;
        }
        let Ok(given) = <[u8; 4]>::try_from(&*tlv.value) else {
            return Err(format!("a CRC32C TLV of {} bytes, not 4", tlv.value.len()));
        };
        let crc = crc32c::crc32c_append(crc32c::crc32c(&header[..value]), &[0; 4]);
        let crc = crc32c::crc32c_append(crc, &header[value + 4..]);
        if crc != u32::from_be_bytes(given) {
            return Err("the CRC32C checksum does not match the header".to_owned());
        }
    }
    Ok(())
}

/// v1 waits for the CRLF before the line is decoded, as the spec asks (and `ppp` alone would
/// misjudge some prefixes, such as one ending in the space before the last port). Until then
/// only the shape is checked, so that garbage fails at once: the protocol word, and for TCP
/// lines the characters addresses and ports are written with.
fn parse_v1(buf: &[u8]) -> Parse {
    let line = &buf[..buf.len().min(V1_MAX_LEN)];
    let invalid = |why: &str| Parse::Invalid(InvalidHeader::V1(why.to_owned()));
    let end = line.windows(2).position(|w| w == b"\r\n");
    let text = match end {
        Some(end) => &line[..end],
        None => line.strip_suffix(b"\r").unwrap_or(line),
    };
    // The same checks with or without the CRLF, so that a verdict on a prefix stands.
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        return invalid("a CR or LF alone in the line");
    }
    if let Err(why) = check_v1_text(text) {
        return invalid(why);
    }
    let Some(end) = end else {
        return if buf.len() >= V1_MAX_LEN {
            invalid("no CRLF within 107 bytes")
        } else {
            Parse::Incomplete
        };
    };
    let line = &line[..end + 2];
    let unknown = line.starts_with(b"PROXY UNKNOWN ") || line == b"PROXY UNKNOWN\r\n";
    match v1::Header::try_from(line) {
        Ok(parsed) => {
            let header = match parsed.addresses {
                v1::Addresses::Tcp4(a) => tcp(
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                ),
                v1::Addresses::Tcp6(a) => tcp(
                    SocketAddr::from((a.source_address, a.source_port)),
                    SocketAddr::from((a.destination_address, a.destination_port)),
                ),
                v1::Addresses::Unknown => Header::Unknown,
            };
            Parse::Done { header, consumed: line.len() }
        }
        // `ppp` does not take every `UNKNOWN` line (not one with more than four fields after
        // the word), but whatever precedes the CRLF "the receiver must ignore".
        Err(_) if unknown => Parse::Done { header: Header::Unknown, consumed: line.len() },
        Err(e) => Parse::Invalid(InvalidHeader::V1(e.to_string())),
    }
}

/// The shape of (a prefix of) a v1 line without its CRLF: a known protocol word, and for TCP
/// only the characters of addresses and ports (which rules out `+80` as a port, which `ppp`
/// would take).
fn check_v1_text(text: &[u8]) -> Result<(), &'static str> {
    let protocol = text.get(V1_SIGNATURE.len()..).unwrap_or_default();
    if could_start_with(protocol, b"UNKNOWN ") {
        Ok(())
    } else if !(could_start_with(protocol, b"TCP4 ") || could_start_with(protocol, b"TCP6 ")) {
        Err("the protocol is not TCP4, TCP6 or UNKNOWN")
    } else if protocol.iter().all(|&b| b.is_ascii_alphanumeric() || b" .:".contains(&b)) {
        Ok(())
    } else {
        Err("a character that is not part of an address or port")
    }
}

fn tcp(source: SocketAddr, destination: SocketAddr) -> Header {
    Header::Tcp { source: canonical(source), destination: canonical(destination) }
}

/// IPv4-mapped IPv6 addresses as IPv4; flow label and scope dropped (no header carries them).
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// The header format to send to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The text line (`PROXY TCP4 …\r\n`): the one every receiver understands.
    V1,
    /// The binary header: shorter to parse, and the only one with `LOCAL` for health checks.
    V2,
}

/// The header telling a backend that the connection comes from `source` and was made to
/// `destination` (TCP).
///
/// Addresses are canonical first (IPv4-mapped IPv6 becomes IPv4). When the two are then of
/// different families, the IPv4 one is sent IPv4-mapped and the header is TCP over IPv6, as
/// HAProxy does: this is a faithful representation, so the spec's last resort `UNKNOWN` is never
/// needed. IPv6 scope IDs and flow labels are not carried.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(canonical(source), canonical(destination));
    match version {
        Version::V1 => v1::Addresses::from((source, destination)).to_string().into_bytes(),
        Version::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (source, destination),
        )
        .build()
        .expect("a 12- or 36-byte address block fits the 16-bit length"),
    }
}

/// The v2 `LOCAL` header (no addresses): for connections the balancer makes on its own
/// behalf, such as health checks, to a backend that expects a header on every connection.
pub fn encode_v2_local() -> Vec<u8> {
    v2::Builder::new(
        v2::Version::Two | v2::Command::Local,
        v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
    )
    .build()
    .expect("an empty address block fits the 16-bit length")
}

/// Both addresses in one family: IPv6 (the IPv4 one mapped) if they differ.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let to_v6 = |addr: SocketAddr| match addr.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), addr.port()),
        IpAddr::V6(_) => addr,
    };
    if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (to_v6(source), to_v6(destination))
    }
}

#[cfg(test)]
mod tests;
