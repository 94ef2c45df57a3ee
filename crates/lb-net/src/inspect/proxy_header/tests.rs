use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

use proptest::prelude::*;

use super::*;

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn tcp_header(source: &str, destination: &str) -> Header {
    Header::Tcp { source: addr(source), destination: addr(destination) }
}

fn done(header: Header, consumed: usize) -> Parse {
    Parse::Done { header, consumed }
}

/// A v2 header from its parts: signature, version/command, family/protocol, length, payload.
fn v2(version_command: u8, family_protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut header = V2_SIGNATURE.to_vec();
    header.extend([version_command, family_protocol]);
    header.extend(u16::try_from(payload.len()).unwrap().to_be_bytes());
    header.extend(payload);
    header
}

fn is_invalid(parse: &Parse) -> bool {
    matches!(parse, Parse::Invalid(_))
}

// The spec's examples and limits (doc/proxy-protocol.txt, section 2.1).

#[test]
fn v1_tcp4_example_before_an_http_request() {
    let line = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    let input = format!("{line}GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n");
    assert_eq!(
        parse(input.as_bytes()),
        done(tcp_header("192.168.0.1:56324", "192.168.0.11:443"), line.len())
    );
}

#[test]
fn v1_tcp4_longest_line_is_56_bytes() {
    let line = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n";
    assert_eq!(line.len(), 56);
    let header = tcp_header("255.255.255.255:65535", "255.255.255.255:65535");
    assert_eq!(parse(line), done(header, 56));
}

#[test]
fn v1_tcp6_longest_line_is_104_bytes() {
    let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let line = format!("PROXY TCP6 {f} {f} 65535 65535\r\n");
    assert_eq!(line.len(), 104);
    let header = tcp_header(&format!("[{f}]:65535"), &format!("[{f}]:65535"));
    assert_eq!(parse(line.as_bytes()), done(header, 104));
}

#[test]
fn v1_tcp6_compressed_and_upper_case() {
    let line = b"PROXY TCP6 2001:DB8::1 2001:db8::2:1 1234 443\r\n";
    let header = tcp_header("[2001:db8::1]:1234", "[2001:db8::2:1]:443");
    assert_eq!(parse(line), done(header, line.len()));
}

#[test]
fn v1_unknown_short_and_worst_case() {
    assert_eq!(parse(b"PROXY UNKNOWN\r\nabc"), done(Header::Unknown, 15));
    let f = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let line = format!("PROXY UNKNOWN {f} {f} 65535 65535\r\n");
    assert_eq!(line.len(), 107);
    assert_eq!(parse(line.as_bytes()), done(Header::Unknown, 107));
}

#[test]
fn v1_unknown_ignores_whatever_precedes_the_crlf() {
    let line = b"PROXY UNKNOWN some proxies write more than four fields here\r\nrest";
    assert_eq!(parse(line), done(Header::Unknown, line.len() - 4));
}

#[test]
fn v1_ipv4_mapped_addresses_come_back_as_ipv4() {
    let line = b"PROXY TCP6 ::ffff:192.0.2.7 ::ffff:198.51.100.1 40000 443\r\n";
    let header = tcp_header("192.0.2.7:40000", "198.51.100.1:443");
    assert_eq!(parse(line), done(header, line.len()));
}

#[test]
fn v1_rejects_what_the_spec_rejects() {
    for line in [
        &b"PROXY TCP4 192.168.0.01 192.168.0.11 56324 443\r\n"[..], // leading zero in address
        b"PROXY TCP4 192.168.0.1 192.168.0.11 056324 443\r\n",      // leading zero in port
        b"PROXY TCP4 192.168.0.1 192.168.0.11 65536 443\r\n",       // port out of range
        b"PROXY TCP4 192.168.0.1 192.168.0.11 +80 443\r\n",         // sign
        b"PROXY TCP4 2001:db8::1 192.168.0.11 56324 443\r\n",       // family mismatch
        b"PROXY TCP6 192.168.0.1 192.168.0.11 56324 443\r\n",       // family mismatch
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324\r\n",           // missing field
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443 1\r\n",     // extra field
        b"PROXY TCP4  192.168.0.1 192.168.0.11 56324 443\r\n",      // two spaces
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n",         // LF alone
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rX",        // CR alone
        b"PROXY tcp4 192.168.0.1 192.168.0.11 56324 443\r\n",       // case
        b"PROXY UDP4 192.168.0.1 192.168.0.11 56324 443\r\n",       // protocol
        b"PROXY UNKNOWNX\r\n",
        b"PROXY UNKNOWN a\nb\r\n", // LF alone, even where anything goes (found by fuzzing)
        b"PROXY UNKNOWN a\rb\r\n",
        b"PROXY\r\n",
    ] {
        let parsed = parse(line);
        assert!(is_invalid(&parsed), "{:?}: {parsed:?}", String::from_utf8_lossy(line));
        // The verdict is final: no prefix may be complete, nor the line with more bytes.
        for end in 0..line.len() {
            assert!(!matches!(parse(&line[..end]), Parse::Done { .. }), "{line:?}, {end} bytes");
        }
        assert!(is_invalid(&parse(&[line, b"GET / HTTP/1.1\r\n"].concat())));
    }
}

#[test]
fn v1_without_crlf_in_107_bytes_is_invalid() {
    let mut line = b"PROXY UNKNOWN ".to_vec();
    line.resize(106, b'f');
    assert_eq!(parse(&line), Parse::Incomplete);
    line.push(b'f');
    assert!(is_invalid(&parse(&line)));
    // A CRLF at bytes 107 and 108 is one byte too late.
    line.truncate(105);
    line.extend(b" \r\n");
    assert!(is_invalid(&parse(&line)));
}

// v2 (section 2.2).

#[test]
fn v2_tcp_over_ipv4() {
    let header = v2(0x21, 0x11, &[192, 0, 2, 7, 198, 51, 100, 1, 0xdb, 0xe4, 0x01, 0xbb]);
    assert_eq!(header.len(), 28);
    let mut input = header.clone();
    input.extend(b"\x16\x03\x01");
    assert_eq!(parse(&input), done(tcp_header("192.0.2.7:56292", "198.51.100.1:443"), 28));
}

#[test]
fn v2_tcp_over_ipv6() {
    let source = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
    let destination = "2001:db8:1::1".parse::<Ipv6Addr>().unwrap().octets();
    let payload = [&source[..], &destination[..], &[0xdb, 0xe4, 0x01, 0xbb]].concat();
    let header = v2(0x21, 0x21, &payload);
    assert_eq!(header.len(), 52);
    let expected = tcp_header("[2001:db8::7]:56292", "[2001:db8:1::1]:443");
    assert_eq!(parse(&header), done(expected, 52));
}

#[test]
fn v2_local_ignores_any_address_block() {
    assert_eq!(parse(&v2(0x20, 0x00, &[])), done(Header::Local, 16));
    // "Receivers ... must not assume zero is presented for LOCAL connections."
    let header = v2(0x20, 0x11, &[127, 0, 0, 1, 127, 0, 0, 1, 0, 80, 0, 80]);
    assert_eq!(parse(&header), done(Header::Local, 28));
}

#[test]
fn v2_tlvs_are_skipped_and_consumed() {
    let mut payload = vec![10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x00, 0x50];
    payload.extend([0x01, 0x00, 0x02, b'h', b'2']); // PP2_TYPE_ALPN "h2"
    payload.extend([0x02, 0x00, 0x0b]); // PP2_TYPE_AUTHORITY
    payload.extend(b"example.com");
    payload.extend([0x04, 0x00, 0x03, 0, 0, 0]); // PP2_TYPE_NOOP
    payload.extend([0x20, 0x00, 0x05, 0x01, 0, 0, 0, 0]); // PP2_TYPE_SSL, client connected over TLS
    payload.extend([0xea, 0x00, 0x04, 1, 2, 3, 4]); // a custom type, as AWS and Azure send
    let header = v2(0x21, 0x11, &payload);
    let mut input = header.clone();
    input.extend(b"client bytes");
    assert_eq!(parse(&input), done(tcp_header("10.0.0.1:12345", "10.0.0.2:80"), header.len()));
}

#[test]
fn v2_tlvs_must_fit_in_the_header() {
    let addresses = [10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x00, 0x50];
    for tlvs in [
        &[0x01, 0x00, 0xff, b'h', b'2'][..], // announces 255 bytes, has 2
        &[0x01, 0x00, 0x02, b'h', b'2', 0x04][..], // a byte left over after the last TLV
        &[0x04, 0x00][..],                   // a TLV cut inside its length
    ] {
        let header = v2(0x21, 0x11, &[&addresses[..], tlvs].concat());
        assert!(is_invalid(&parse(&header)), "{tlvs:x?}");
    }
}

#[test]
fn v2_a_crc32c_checksum_must_match_the_header() {
    let mut payload = vec![10, 0, 0, 1, 10, 0, 0, 2, 0x30, 0x39, 0x00, 0x50];
    payload.extend([0x01, 0x00, 0x02, b'h', b'2']);
    payload.extend([0x03, 0x00, 0x04, 0, 0, 0, 0]); // PP2_TYPE_CRC32C, zeros for now
    let mut header = v2(0x21, 0x11, &payload);
    let at = header.len() - 4;
    let crc = crc32c::crc32c(&header);
    header[at..].copy_from_slice(&crc.to_be_bytes());
    let expected = done(tcp_header("10.0.0.1:12345", "10.0.0.2:80"), header.len());
    assert_eq!(parse(&header), expected);
    // One bit changed anywhere (an address here) and it no longer matches.
    let mut altered = header.clone();
    altered[16] ^= 1;
    assert_eq!(
        parse(&altered),
        Parse::Invalid(InvalidHeader::V2("the CRC32C checksum does not match the header".into()))
    );
    let mut wrong = header.clone();
    wrong[at] ^= 0x80;
    assert!(is_invalid(&parse(&wrong)));
    // A checksum is four bytes.
    let short = v2(0x21, 0x11, &[&payload[..17], &[0x03, 0x00, 0x02, 1, 2][..]].concat());
    assert!(is_invalid(&parse(&short)));
}

#[test]
fn v2_families_without_tcp_addresses_are_unknown() {
    let ipv4 = [127, 0, 0, 1, 127, 0, 0, 2, 0, 1, 0, 2];
    for (family_protocol, payload) in [
        (0x00, &[][..]),       // UNSPEC
        (0x12, &ipv4[..]),     // UDP over IPv4
        (0x22, &[0; 36][..]),  // UDP over IPv6
        (0x31, &[0; 216][..]), // UNIX stream
        (0x32, &[0; 216][..]), // UNIX datagram
        (0x10, &ipv4[..]),     // IPv4, unspecified protocol
    ] {
        let header = v2(0x21, family_protocol, payload);
        assert_eq!(parse(&header), done(Header::Unknown, header.len()), "{family_protocol:#x}");
    }
}

#[test]
fn v2_rejects_bad_version_command_family_protocol_and_short_lengths() {
    let ipv4 = [127, 0, 0, 1, 127, 0, 0, 2, 0, 1, 0, 2];
    for header in [
        v2(0x11, 0x11, &ipv4),      // version 1 in the binary format
        v2(0x31, 0x11, &ipv4),      // version 3
        v2(0x22, 0x11, &ipv4),      // command 2
        v2(0x21, 0x41, &ipv4),      // family 4
        v2(0x21, 0x13, &ipv4),      // protocol 3
        v2(0x21, 0x11, &ipv4[..8]), // length shorter than the addresses
        v2(0x21, 0x21, &ipv4),      // IPv6 needs 36 bytes
    ] {
        assert!(is_invalid(&parse(&header)), "{header:x?}");
    }
}

#[test]
fn v2_with_the_largest_length_field_fits_max_len() {
    let mut payload = vec![0; usize::from(u16::MAX)];
    payload[..12].copy_from_slice(&[127, 0, 0, 1, 127, 0, 0, 2, 0, 1, 0, 2]);
    // One NOOP TLV filling the rest.
    let tlv_len = u16::try_from(payload.len() - 12 - 3).unwrap();
    payload[12] = 0x04;
    payload[13..15].copy_from_slice(&tlv_len.to_be_bytes());
    let header = v2(0x21, 0x11, &payload);
    assert_eq!(header.len(), MAX_LEN);
    assert_eq!(parse(&header[..MAX_LEN - 1]), Parse::Incomplete);
    assert_eq!(parse(&header), done(tcp_header("127.0.0.1:1", "127.0.0.2:2"), MAX_LEN));
}

// Telling a header from plain traffic.

#[test]
fn plain_traffic_is_invalid_from_its_first_byte() {
    for input in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"SSH-2.0-OpenSSH_9.2p1\r\n",
        b"\x16\x03\x01\x02\x00\x01",
        b"EHLO example.com\r\n",
    ] {
        assert_eq!(parse(&input[..1]), Parse::Invalid(InvalidHeader::NoSignature));
        assert_eq!(parse(input), Parse::Invalid(InvalidHeader::NoSignature));
    }
    // Close to a signature: rejected at the first byte that differs.
    for input in [&b"\r\n\r\n\x00\r\nQUIT\r"[..], b"PROXX", b"PROXY\t"] {
        assert_eq!(parse(&input[..input.len() - 1]), Parse::Incomplete);
        assert_eq!(parse(input), Parse::Invalid(InvalidHeader::NoSignature));
    }
    for input in [&b"PROXY GET"[..], b"PROXY TCP4 1.2.3.4\n", b"PROXY TCP4 1.2.3.4 *"] {
        assert!(is_invalid(&parse(input)), "{input:?}");
    }
}

#[test]
fn empty_and_short_prefixes_are_incomplete() {
    for input in
        [&b""[..], b"P", b"PROXY", b"PROXY ", b"PROXY T", b"PROXY UNKNOWN", b"\r", b"\r\n\r\n\0"]
    {
        assert_eq!(parse(input), Parse::Incomplete, "{input:?}");
    }
    // The v2 version and command are only checked once the 16-byte header is in.
    assert_eq!(parse(&v2(0x21, 0x11, &[])[..15]), Parse::Incomplete);
}

// Encoding.

#[test]
fn encode_v1_matches_the_spec_examples() {
    let encoded = encode(Version::V1, addr("192.168.0.1:56324"), addr("192.168.0.11:443"));
    assert_eq!(encoded, b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    let encoded = encode(Version::V1, addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2"));
    assert_eq!(encoded, b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n");
}

#[test]
fn encode_v2_byte_for_byte() {
    let encoded = encode(Version::V2, addr("192.0.2.7:56292"), addr("198.51.100.1:443"));
    assert_eq!(encoded, v2(0x21, 0x11, &[192, 0, 2, 7, 198, 51, 100, 1, 0xdb, 0xe4, 0x01, 0xbb]));
    assert_eq!(encode_v2_local(), v2(0x20, 0x00, &[]));
    assert_eq!(parse(&encode_v2_local()), done(Header::Local, 16));
}

#[test]
fn encode_mixed_families_maps_ipv4_into_ipv6() {
    let (v4, v6) = (addr("192.0.2.7:1000"), addr("[2001:db8::1]:443"));
    let encoded = encode(Version::V1, v4, v6);
    assert_eq!(encoded, b"PROXY TCP6 ::ffff:192.0.2.7 2001:db8::1 1000 443\r\n");
    for version in [Version::V1, Version::V2] {
        let encoded = encode(version, v6, v4);
        // The mapped address parses back as the IPv4 address it stands for.
        assert_eq!(
            parse(&encoded),
            done(Header::Tcp { source: v6, destination: v4 }, encoded.len())
        );
    }
}

#[test]
fn encode_canonicalises_ipv4_mapped_ipv6() {
    let mapped =
        SocketAddr::V6(SocketAddrV6::new(Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped(), 1000, 0, 0));
    let encoded = encode(Version::V1, mapped, addr("192.0.2.1:443"));
    assert_eq!(encoded, b"PROXY TCP4 192.0.2.7 192.0.2.1 1000 443\r\n");
}

// Properties.

fn any_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

fn any_version() -> impl Strategy<Value = Version> {
    prop_oneof![Just(Version::V1), Just(Version::V2)]
}

fn any_tlv_but_a_checksum() -> impl Strategy<Value = (u8, Vec<u8>)> {
    any::<(u8, Vec<u8>)>().prop_filter("a CRC32C TLV must match", |(kind, _)| *kind != 0x03)
}

/// Valid headers of every kind, with what they parse to.
fn any_valid_header() -> impl Strategy<Value = (Vec<u8>, Header)> {
    let tcp_headers =
        (any_version(), any_addr(), any_addr()).prop_map(|(version, source, destination)| {
            let expected = tcp(source, destination);
            (encode(version, source, destination), expected)
        });
    let v2_with_tlvs =
        // Any TLVs but a checksum (which must match: tested on its own).
        (any_addr(), any_addr(), prop::collection::vec(any_tlv_but_a_checksum(), 0..4)).prop_map(
            |(source, destination, tlvs)| {
                let (source, destination) = same_family(canonical(source), canonical(destination));
                let mut builder = ppp::v2::Builder::with_addresses(
                    ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                    ppp::v2::Protocol::Stream,
                    (source, destination),
                );
                for (kind, value) in &tlvs {
                    builder = builder.write_tlv(*kind, value).unwrap();
                }
                (builder.build().unwrap(), tcp(source, destination))
            },
        );
    let unknown = "[0-9a-f: .]{0,91}"
        .prop_map(|tail| (format!("PROXY UNKNOWN {tail}\r\n").into_bytes(), Header::Unknown));
    prop_oneof![
        4 => tcp_headers,
        2 => v2_with_tlvs,
        1 => unknown,
        1 => Just((b"PROXY UNKNOWN\r\n".to_vec(), Header::Unknown)),
        1 => Just((encode_v2_local(), Header::Local)),
    ]
}

proptest! {
    #[test]
    fn encode_then_parse_round_trips(
        version in any_version(), source in any_addr(), destination in any_addr()
    ) {
        let encoded = encode(version, source, destination);
        let expected = Header::Tcp { source: canonical(source), destination: canonical(destination) };
        prop_assert_eq!(parse(&encoded), done(expected, encoded.len()));
    }

    #[test]
    fn every_prefix_of_a_valid_header_is_incomplete((header, _) in any_valid_header()) {
        for end in 0..header.len() {
            prop_assert_eq!(parse(&header[..end]), Parse::Incomplete, "prefix of {} bytes", end);
        }
    }

    #[test]
    fn trailing_bytes_do_not_change_the_header(
        (header, expected) in any_valid_header(), rest in prop::collection::vec(any::<u8>(), 0..64)
    ) {
        let mut input = header.clone();
        input.extend(&rest);
        prop_assert_eq!(parse(&input), done(expected, header.len()));
    }

    #[test]
    fn parse_never_panics_and_verdicts_are_final(
        start in prop_oneof![
            Just(Vec::new()),
            Just(b"PROXY ".to_vec()),
            Just(b"PROXY TCP4 ".to_vec()),
            Just(b"PROXY TCP6 ".to_vec()),
            Just(V2_SIGNATURE.to_vec()),
            Just([V2_SIGNATURE, &[0x21]].concat()),
        ],
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        cut in any::<prop::sample::Index>(),
    ) {
        let input = [start, bytes].concat();
        check_final(&input, cut.index(input.len() + 1))?;
    }

    #[test]
    fn damaged_headers_never_panic_and_verdicts_are_final(
        (header, _) in any_valid_header(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut input = header;
        for (at, byte) in flips {
            let at = at.index(input.len());
            input[at] = byte;
        }
        check_final(&input, cut.index(input.len() + 1))?;
    }
}

/// The contract of `crate::inspect`: a verdict on a prefix stands for the whole input, and a
/// buffer of `MAX_LEN` bytes or more gets a verdict.
fn check_final(input: &[u8], cut: usize) -> Result<(), TestCaseError> {
    let whole = parse(input);
    match parse(&input[..cut]) {
        Parse::Incomplete => {}
        Parse::Invalid(_) => prop_assert!(is_invalid(&whole), "{:?} then {:?}", input, whole),
        verdict => prop_assert_eq!(verdict, whole),
    }
    if let Parse::Done { consumed, .. } = parse(input) {
        prop_assert!(consumed <= input.len());
    }
    Ok(())
}
