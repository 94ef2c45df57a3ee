//! The server name (SNI) in a TLS ClientHello, read from a connection's first bytes so that it
//! can be routed without being decrypted. The bytes are only looked at: the caller forwards
//! every byte it read, untouched, to the backend it picks.
//!
//! # Choices
//!
//! - **Parser.** Records are reassembled here (a ClientHello may span several TLS records and
//!   TCP segments); the ClientHello itself, its extension list and the server_name entries are
//!   read with the [`tls_parser`] crate (rusticata's nom-based TLS parsers, maintained since
//!   2016). rustls's server `Acceptor` was the alternative, and builds without a crypto provider,
//!   but it rejects any ClientHello without the signature_algorithms extension, which TLS 1.0
//!   and 1.1 clients never send (`testdata/client_hello/openssl-3.0-tls10.bin` is one); a
//!   passthrough proxy must still route those, and leave the verdict to the backend.
//! - **Leniency.** Only what routing depends on is checked: the record and handshake framing,
//!   the ClientHello's fields and extension framing, and the server_name extension. Other
//!   extensions are not interpreted (a malformed key share is the backend's business), and
//!   whatever follows the ClientHello is ignored.
//! - **Server names** come back lower-cased, without a trailing dot, and are valid DNS names by
//!   the rules rustls applies (`rustls-pki-types`: ASCII letters, digits, `-` and `_`, labels of
//!   1 to 63 bytes, 253 bytes in all, a last label that is not numeric). An IP literal, which RFC
//!   6066 forbids but some clients send, counts as no name (as rustls does). Anything else in
//!   the extension is [`InvalidHello::ServerName`]: a name that cannot be matched against a
//!   route is not passed on to the default one.
//! - **Ambiguity is invalid.** Two server_name extensions, or two host names in one, would let
//!   the balancer and the backend read different names (a routing bypass), so they are refused.
//! - **Encrypted ClientHello (ECH)**: the name read is the outer, public one, which is the one a
//!   passthrough proxy is meant to route by.
//! - **SSLv2-format ClientHellos** (from clients of the 1990s) are [`Parse::NotTls`].

use std::borrow::Cow;

use rustls_pki_types::ServerName;
use tls_parser::nom::multi::length_data;
use tls_parser::nom::number::complete::be_u16;
use tls_parser::{
    parse_tls_extension_sni_hostname, parse_tls_extension_unknown,
    parse_tls_handshake_client_hello, SNIType, TlsExtension, TlsExtensionType, TlsHandshakeType,
    TlsRecordType,
};

/// The most bytes [`parse`] looks at; it never returns [`Parse::Incomplete`] for this many or
/// more. 16 KiB holds any ClientHello seen in practice many times over (a browser's, with a
/// post-quantum key share and ECH, is about 2 KB) while keeping what a slow or hostile client
/// can make the balancer hold small.
pub const MAX_LEN: usize = 16 * 1024;

/// A TLS record header: content type, version, length.
const RECORD_HEADER_LEN: usize = 5;
/// A handshake message header: type, 24-bit length.
const HANDSHAKE_HEADER_LEN: usize = 4;
/// The largest plaintext record (RFC 8446 §5.1, and every earlier version).
const MAX_FRAGMENT_LEN: usize = 1 << 14;

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// A prefix of a TLS handshake: read more and parse again.
    Incomplete,
    /// A complete ClientHello.
    Done(ClientHello),
    /// The bytes are not TLS (their first bytes are not a TLS handshake record): plain text such
    /// as an HTTP request or an SSH banner, or an SSLv2-format hello.
    NotTls,
    /// TLS framing that breaks the rules, or a ClientHello that does not parse.
    Invalid(InvalidHello),
}

/// What a ClientHello says that routing can use.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ClientHello {
    /// The server name the client asks for: lower-cased, no trailing dot. `None` when the
    /// client sent none (or an IP literal).
    pub server_name: Option<String>,
}

/// Why bytes that began as TLS are not a usable ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidHello {
    /// A record after the first is not a handshake record of TLS version 3.x.
    #[error("a TLS record other than a handshake record arrived before the ClientHello ended")]
    UnexpectedRecord,
    /// An empty record, or one longer than TLS allows (2^14 bytes).
    #[error("a TLS record is empty or longer than 16384 bytes")]
    RecordLength,
    /// The first handshake message is something else.
    #[error("the first TLS handshake message is not a ClientHello")]
    NotClientHello,
    /// The ClientHello does not end within [`MAX_LEN`] bytes.
    #[error("the TLS ClientHello is longer than {MAX_LEN} bytes")]
    TooLarge,
    /// Fields, lengths or extension framing of the ClientHello do not add up.
    #[error("the TLS ClientHello is malformed")]
    Malformed,
    /// The server_name extension is malformed, repeated, names two hosts, or holds something
    /// that is neither a DNS name nor an IP address.
    #[error("the TLS ClientHello's server name is malformed or not a DNS name")]
    ServerName,
}

/// Parses the TLS ClientHello at the start of `buf`. See [`Parse`] and the contract in
/// [`crate::inspect`].
pub fn parse(buf: &[u8]) -> Parse {
    let buf = &buf[..buf.len().min(MAX_LEN)];
    match reassemble(buf) {
        Ok(message) => match read_client_hello(&message) {
            Ok(hello) => Parse::Done(hello),
            Err(e) => Parse::Invalid(e),
        },
        Err(Parse::Incomplete) if buf.len() >= MAX_LEN => Parse::Invalid(InvalidHello::TooLarge),
        Err(verdict) => verdict,
    }
}

/// The first handshake message, reassembled from the handshake records it spans (borrowed
/// when it fits in one), header included; or the verdict if there is none yet.
fn reassemble(buf: &[u8]) -> Result<Cow<'_, [u8]>, Parse> {
    // The handshake bytes of each record so far (the last one possibly partial).
    let mut fragments: Vec<&[u8]> = Vec::new();
    let mut received = 0;
    let mut pos = 0;
    loop {
        let record = &buf[pos..];
        check_record_start(record, pos == 0)?;
        let Some(header) = record.get(..RECORD_HEADER_LEN) else {
            return Err(Parse::Incomplete);
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_FRAGMENT_LEN {
            return Err(Parse::Invalid(InvalidHello::RecordLength));
        }
        let body = &record[RECORD_HEADER_LEN..];
        let fragment = &body[..len.min(body.len())];
        fragments.push(fragment);
        received += fragment.len();
        if let Some(needed) = message_len(&fragments, received)? {
            if received >= needed {
                return Ok(join(&fragments, needed));
            }
        }
        if fragment.len() < len {
            return Err(Parse::Incomplete);
        }
        pos += RECORD_HEADER_LEN + len;
    }
}

/// Checks the content type and major version of a record, as far as they have arrived: the
/// first record decides whether this is TLS at all, later ones must continue the handshake.
fn check_record_start(record: &[u8], first: bool) -> Result<(), Parse> {
    let handshake = record.first().is_none_or(|&t| t == TlsRecordType::Handshake.0);
    let version_3 = record.get(1).is_none_or(|&major| major == 3);
    match (handshake && version_3, first) {
        (true, _) => Ok(()),
        (false, true) => Err(Parse::NotTls),
        (false, false) => Err(Parse::Invalid(InvalidHello::UnexpectedRecord)),
    }
}

/// The length of the first handshake message, header included, once its header has arrived;
/// refuses a message that is not a ClientHello, or one too long to fit in [`MAX_LEN`], as soon
/// as that is known.
fn message_len(fragments: &[&[u8]], received: usize) -> Result<Option<usize>, Parse> {
    let mut header = [0; HANDSHAKE_HEADER_LEN];
    for (slot, &byte) in header.iter_mut().zip(fragments.iter().flat_map(|f| f.iter())) {
        *slot = byte;
    }
    if received >= 1 && header[0] != TlsHandshakeType::ClientHello.0 {
        return Err(Parse::Invalid(InvalidHello::NotClientHello));
    }
    if received < HANDSHAKE_HEADER_LEN {
        return Ok(None);
    }
    let needed = HANDSHAKE_HEADER_LEN
        + (usize::from(header[1]) << 16)
        + (usize::from(header[2]) << 8)
        + usize::from(header[3]);
    // Even in a single record it must fit, behind that record's header.
    if needed + RECORD_HEADER_LEN > MAX_LEN {
        return Err(Parse::Invalid(InvalidHello::TooLarge));
    }
    Ok(Some(needed))
}

/// The first `needed` bytes of the fragments, concatenated.
fn join<'a>(fragments: &[&'a [u8]], needed: usize) -> Cow<'a, [u8]> {
    match fragments {
        [first, ..] if first.len() >= needed => Cow::Borrowed(&first[..needed]),
        _ => {
            let mut message = Vec::with_capacity(needed);
            for fragment in fragments {
                let take = fragment.len().min(needed - message.len());
                message.extend_from_slice(&fragment[..take]);
            }
            Cow::Owned(message)
        }
    }
}

/// Reads a complete ClientHello message (handshake header included).
fn read_client_hello(message: &[u8]) -> Result<ClientHello, InvalidHello> {
    let body = &message[HANDSHAKE_HEADER_LEN..];
    let (rest, hello) =
        parse_tls_handshake_client_hello(body).map_err(|_| InvalidHello::Malformed)?;
    // tls-parser treats an extension block whose length overruns the message as absent; the
    // bytes it leaves behind give it away.
    if !rest.is_empty() {
        return Err(InvalidHello::Malformed);
    }
    let server_name = match hello.ext {
        Some(extensions) => find_server_name(extensions)?,
        None => None,
    };
    Ok(ClientHello { server_name })
}

/// Walks the extension list (framing only) and reads the one server_name extension, if any.
fn find_server_name(mut extensions: &[u8]) -> Result<Option<String>, InvalidHello> {
    let mut found = None;
    while !extensions.is_empty() {
        let (rest, extension) =
            parse_tls_extension_unknown(extensions).map_err(|_| InvalidHello::Malformed)?;
        extensions = rest;
        if let TlsExtension::Unknown(TlsExtensionType::ServerName, data) = extension {
            if found.is_some() {
                return Err(InvalidHello::ServerName);
            }
            found = Some(read_server_name(data)?);
        }
    }
    Ok(found.flatten())
}

/// The content of a server_name extension: a list of (name type, name) entries (RFC 6066 §3).
fn read_server_name(data: &[u8]) -> Result<Option<String>, InvalidHello> {
    if data.is_empty() {
        return Ok(None);
    }
    let (rest, mut entries) =
        length_data(be_u16::<_, ()>)(data).map_err(|_| InvalidHello::ServerName)?;
    if !rest.is_empty() {
        return Err(InvalidHello::ServerName);
    }
    let mut host_name = None;
    while !entries.is_empty() {
        let (rest, (kind, name)) =
            parse_tls_extension_sni_hostname(entries).map_err(|_| InvalidHello::ServerName)?;
        // No other name type is defined, so neither is how to skip one: stop there, as rustls
        // does.
        if kind != SNIType::HostName {
            break;
        }
        if host_name.is_some() {
            return Err(InvalidHello::ServerName);
        }
        host_name = Some(name);
        entries = rest;
    }
    host_name.map_or(Ok(None), dns_name)
}

/// A host name as a lower-case DNS name without trailing dot; `None` for an IP literal.
fn dns_name(raw: &[u8]) -> Result<Option<String>, InvalidHello> {
    let text = std::str::from_utf8(raw).map_err(|_| InvalidHello::ServerName)?;
    match ServerName::try_from(text) {
        Ok(ServerName::DnsName(name)) => {
            let name = name.as_ref();
            Ok(Some(name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()))
        }
        Ok(ServerName::IpAddress(_)) => Ok(None),
        Ok(_) | Err(_) => Err(InvalidHello::ServerName),
    }
}

#[cfg(test)]
mod tests;
