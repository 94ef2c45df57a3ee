use proptest::prelude::*;

use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/client_hello/", $name))
            .as_slice()
    };
}

/// Real first flights (see testdata/client_hello/README.md), with the name each asks for.
const FIXTURES: [(&str, &[u8], Option<&str>); 5] = [
    ("chromium-156", fixture!("chromium-156.bin"), Some("www.example.test")),
    ("openssl-3.0-tls13", fixture!("openssl-3.0-tls13.bin"), Some("example.com")),
    ("openssl-3.0-tls12", fixture!("openssl-3.0-tls12.bin"), Some("tls12.example.net")),
    ("openssl-3.0-tls10", fixture!("openssl-3.0-tls10.bin"), Some("legacy.example.org")),
    ("openssl-3.0-no-sni", fixture!("openssl-3.0-no-sni.bin"), None),
];

const SERVER_NAME: u16 = 0;

fn u16_len(bytes: &[u8]) -> [u8; 2] {
    u16::try_from(bytes.len()).unwrap().to_be_bytes()
}

/// A handshake message: type, 24-bit length, body.
fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).unwrap().to_be_bytes();
    [&[kind][..], &len[1..], body].concat()
}

/// A ClientHello message shaped like a TLS 1.3 client's, with these extensions in this order.
fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([0x5a; 32]); // random
    body.push(32);
    body.extend([0x11; 32]); // legacy session id
    body.extend([0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]); // cipher suites
    body.extend([0x01, 0x00]); // compression methods: null
    let mut block = Vec::new();
    for (kind, data) in extensions {
        block.extend(kind.to_be_bytes());
        block.extend(u16_len(data));
        block.extend(data);
    }
    body.extend(u16_len(&block));
    body.extend(block);
    handshake(1, &body)
}

/// The data of a server_name extension holding these entries (name type, name).
fn sni_entries(entries: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in entries {
        list.push(*kind);
        list.extend(u16_len(name));
        list.extend(*name);
    }
    [&u16_len(&list)[..], &list].concat()
}

fn sni(name: &str) -> (u16, Vec<u8>) {
    (SERVER_NAME, sni_entries(&[(0, name.as_bytes())]))
}

/// `message` in handshake records of at most `fragment` bytes each.
fn records(message: &[u8], fragment: usize) -> Vec<u8> {
    let mut stream = Vec::new();
    for chunk in message.chunks(fragment) {
        stream.extend([22, 3, 1]);
        stream.extend(u16_len(chunk));
        stream.extend(chunk);
    }
    stream
}

fn named(name: &str) -> Parse {
    Parse::Done(ClientHello { server_name: Some(name.to_owned()) })
}

fn unnamed() -> Parse {
    Parse::Done(ClientHello { server_name: None })
}

fn invalid(reason: InvalidHello) -> Parse {
    Parse::Invalid(reason)
}

#[test]
fn real_client_hellos() {
    for (client, bytes, name) in FIXTURES {
        let expected = Parse::Done(ClientHello { server_name: name.map(str::to_owned) });
        assert_eq!(parse(bytes), expected, "{client}");
        // Data after the ClientHello (early data, a second flight) changes nothing.
        let mut more = bytes.to_vec();
        more.extend([23, 3, 3, 0, 4, 1, 2, 3, 4]);
        assert_eq!(parse(&more), expected, "{client}");
    }
}

#[test]
fn every_prefix_of_a_real_client_hello_is_incomplete() {
    for (client, bytes, _) in FIXTURES {
        for end in 0..bytes.len() {
            assert_eq!(parse(&bytes[..end]), Parse::Incomplete, "{client}, {end} bytes");
        }
    }
}

#[test]
fn a_client_hello_split_across_two_records_at_every_byte() {
    let (_, bytes, _) = FIXTURES[0];
    let message = &bytes[5..];
    for split in 1..message.len() {
        let stream =
            [records(&message[..split], split), records(&message[split..], 1 << 14)].concat();
        assert_eq!(parse(&stream), named("www.example.test"), "split at {split}");
        if [1, 3, 4, 5, 200, message.len() - 1].contains(&split) {
            for end in 0..stream.len() {
                assert_eq!(parse(&stream[..end]), Parse::Incomplete, "split {split}, {end} bytes");
            }
        }
    }
}

#[test]
fn a_client_hello_in_one_byte_records() {
    let (_, bytes, _) = FIXTURES[0];
    let stream = records(&bytes[5..], 1);
    assert!(stream.len() < MAX_LEN);
    assert_eq!(parse(&stream), named("www.example.test"));
    assert_eq!(parse(&stream[..stream.len() - 1]), Parse::Incomplete);
}

#[test]
fn no_server_name() {
    assert_eq!(parse(&records(&client_hello(&[]), 1 << 14)), unnamed());
    assert_eq!(
        parse(&records(&client_hello(&[(0x0a0a, vec![]), (43, vec![2, 3, 4])]), 512)),
        unnamed()
    );
    // A TLS 1.0-era ClientHello may end after the compression methods, with no extensions.
    let mut message = client_hello(&[]);
    message.truncate(message.len() - 2);
    message[3] -= 2;
    assert_eq!(parse(&records(&message, 100)), unnamed());
}

#[test]
fn server_names_are_lower_case_without_trailing_dot() {
    let stream = |name: &str| records(&client_hello(&[sni(name)]), 1 << 14);
    assert_eq!(parse(&stream("WWW.Example.COM")), named("www.example.com"));
    assert_eq!(parse(&stream("example.com.")), named("example.com"));
    assert_eq!(
        parse(&stream("_acme-challenge.xn--bcher-kva.example")),
        named("_acme-challenge.xn--bcher-kva.example")
    );
    assert_eq!(parse(&stream("localhost")), named("localhost"));
}

#[test]
fn an_ip_literal_is_no_server_name() {
    for ip in ["192.0.2.1", "2001:db8::1", "::ffff:192.0.2.1"] {
        assert_eq!(parse(&records(&client_hello(&[sni(ip)]), 1 << 14)), unnamed(), "{ip}");
    }
}

#[test]
fn a_server_name_that_is_not_a_dns_name_is_invalid() {
    let long_label = "a".repeat(64);
    let long_name = ["abcdefghi"; 26].join(".");
    for name in [
        "exa mple.com",
        "exam\0ple.com",
        "bücher.example",
        "-leading.example.com",
        "trailing-.example.com",
        "a..b",
        ".",
        "",
        "[2001:db8::1]",
        "192.0.2.1:443",
        "1.2.3",
        long_label.as_str(),
        long_name.as_str(),
    ] {
        let stream = records(&client_hello(&[sni(name)]), 1 << 14);
        assert_eq!(parse(&stream), invalid(InvalidHello::ServerName), "{name:?}");
    }
    let not_utf8 = sni_entries(&[(0, b"\xff\xfe.example")]);
    let stream = records(&client_hello(&[(SERVER_NAME, not_utf8)]), 1 << 14);
    assert_eq!(parse(&stream), invalid(InvalidHello::ServerName));
}

#[test]
fn ambiguous_server_names_are_invalid() {
    let twice = client_hello(&[sni("a.example"), (43, vec![2, 3, 4]), sni("b.example")]);
    assert_eq!(parse(&records(&twice, 1 << 14)), invalid(InvalidHello::ServerName));
    let two_hosts = sni_entries(&[(0, b"a.example"), (0, b"b.example")]);
    let stream = records(&client_hello(&[(SERVER_NAME, two_hosts)]), 1 << 14);
    assert_eq!(parse(&stream), invalid(InvalidHello::ServerName));
}

#[test]
fn unknown_name_types_and_an_empty_extension_are_tolerated() {
    let entries = sni_entries(&[(0, b"a.example"), (7, b"whatever")]);
    let stream = records(&client_hello(&[(SERVER_NAME, entries)]), 1 << 14);
    assert_eq!(parse(&stream), named("a.example"));
    let stream = records(&client_hello(&[(SERVER_NAME, vec![])]), 1 << 14);
    assert_eq!(parse(&stream), unnamed());
}

#[test]
fn not_tls_is_known_from_the_first_bytes() {
    for input in [
        &b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"[..],
        b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n",
        b"\x80\x2e\x01\x00\x02\x00\x15\x00\x00\x00\x10", // SSLv2-format hello
        b"\x17\x03\x03\x00\x10",                         // application data first
    ] {
        assert_eq!(parse(&input[..1]), Parse::NotTls, "{input:?}");
        assert_eq!(parse(input), Parse::NotTls, "{input:?}");
    }
    assert_eq!(parse(b"\x16"), Parse::Incomplete);
    assert_eq!(parse(b"\x16\x02"), Parse::NotTls); // SSL 2.0 / unknown major version
    assert_eq!(parse(b""), Parse::Incomplete);
}

#[test]
fn record_framing_errors() {
    assert_eq!(parse(&[22, 3, 1, 0, 0, 1]), invalid(InvalidHello::RecordLength));
    assert_eq!(parse(&[22, 3, 1, 0x40, 0x01, 1]), invalid(InvalidHello::RecordLength));
    // Another record type before the ClientHello is complete.
    let message = client_hello(&[sni("a.example")]);
    let mut stream = records(&message[..10], 10);
    stream.extend([21, 3, 3, 0, 2, 2, 40]); // an alert
    assert_eq!(parse(&stream), invalid(InvalidHello::UnexpectedRecord));
    let mut stream = records(&message[..10], 10);
    stream.extend([22, 2]);
    assert_eq!(parse(&stream), invalid(InvalidHello::UnexpectedRecord));
}

#[test]
fn the_first_handshake_message_must_be_a_client_hello() {
    // A ServerHello (type 2) is refused from its first byte.
    assert_eq!(parse(&[22, 3, 3, 0, 80, 2]), invalid(InvalidHello::NotClientHello));
    let server_hello = handshake(2, &[0; 70]);
    assert_eq!(parse(&records(&server_hello, 100)), invalid(InvalidHello::NotClientHello));
}

#[test]
fn a_client_hello_too_long_for_max_len_is_refused_early() {
    // Its length alone gives it away: no need to wait for 16 KiB.
    assert_eq!(
        parse(&[22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff]),
        invalid(InvalidHello::TooLarge)
    );
    let padding = (21, vec![0; MAX_LEN]);
    let message = client_hello(&[sni("a.example"), padding]);
    assert_eq!(parse(&records(&message, 1 << 14)[..20]), invalid(InvalidHello::TooLarge));
    // Small enough, but cut into so many records that it does not end within MAX_LEN.
    let message = client_hello(&[sni("a.example"), (21, vec![0; 4000])]);
    let stream = records(&message, 1);
    assert_eq!(parse(&stream[..MAX_LEN - 1]), Parse::Incomplete);
    assert_eq!(parse(&stream), invalid(InvalidHello::TooLarge));
}

#[test]
fn lying_lengths_are_malformed() {
    let message = client_hello(&[sni("a.example"), (43, vec![2, 3, 4])]);
    // Offsets in the message: 4 header, 2 version, 32 random, then the session id length.
    let session_id_len = 4 + 2 + 32;
    let ciphers_len = session_id_len + 1 + 32;
    let extensions_len = ciphers_len + 2 + 6 + 2;
    let first_extension_len = extensions_len + 2 + 2;
    for (at, value) in [
        (session_id_len, 33),           // longer than allowed
        (session_id_len, 200),          // past the end
        (ciphers_len + 1, 7),           // odd cipher suite list
        (ciphers_len + 1, 250),         // past the end
        (extensions_len + 1, 0xff),     // extension block past the end of the message
        (extensions_len + 1, 3),        // extension block shorter than the extensions
        (first_extension_len + 1, 200), // one extension past the end of the block
    ] {
        let mut damaged = message.clone();
        damaged[at] = value;
        let parsed = parse(&records(&damaged, 1 << 14));
        assert!(matches!(parsed, Parse::Invalid(_)), "byte {at} = {value}: {parsed:?}");
    }
    // Bytes after the extension block, inside the message.
    let mut long = message.clone();
    long.extend([0, 0]);
    long[3] += 2;
    assert_eq!(parse(&records(&long, 1 << 14)), invalid(InvalidHello::Malformed));
    // A server_name list length that disagrees with the extension length.
    let mut entries = sni_entries(&[(0, b"a.example")]);
    entries[1] += 1;
    let stream = records(&client_hello(&[(SERVER_NAME, entries)]), 1 << 14);
    assert_eq!(parse(&stream), invalid(InvalidHello::ServerName));
}

// Properties.

/// DNS names as rustls accepts them, in mixed case: the last label starts with a letter.
fn any_dns_name() -> impl Strategy<Value = String> {
    let label = "[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,20}[a-zA-Z0-9_])?";
    (prop::collection::vec(label, 0..4), "[a-zA-Z]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?").prop_map(
        |(mut labels, last)| {
            labels.push(last);
            labels.join(".")
        },
    )
}

/// Extensions a real client might put around server_name: GREASE, padding, opaque data.
fn any_other_extensions() -> impl Strategy<Value = Vec<(u16, Vec<u8>)>> {
    let kind = prop_oneof![Just(0x0a0a_u16), Just(21), Just(43), Just(51), 0xff00_u16..];
    prop::collection::vec((kind, prop::collection::vec(any::<u8>(), 0..300)), 0..4)
}

/// A stream holding a ClientHello for `name`, in records of random size.
fn any_client_hello() -> impl Strategy<Value = (Vec<u8>, String)> {
    (any_dns_name(), any_other_extensions(), any_other_extensions(), 1..2000_usize).prop_map(
        |(name, before, after, fragment)| {
            let extensions: Vec<_> = before.into_iter().chain([sni(&name)]).chain(after).collect();
            (records(&client_hello(&extensions), fragment), name)
        },
    )
}

/// What the module promises of every name it returns.
fn is_routable(name: &str) -> bool {
    matches!(ServerName::try_from(name), Ok(ServerName::DnsName(_)))
        && !name.ends_with('.')
        && name == name.to_ascii_lowercase()
}

proptest! {
    #[test]
    fn server_names_round_trip((stream, name) in any_client_hello()) {
        prop_assert_eq!(parse(&stream), named(&name.to_ascii_lowercase()));
    }

    #[test]
    fn every_prefix_is_incomplete((stream, _) in any_client_hello()) {
        for end in 0..stream.len() {
            prop_assert_eq!(parse(&stream[..end]), Parse::Incomplete, "{} bytes", end);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_yield_a_bad_name(
        start in prop_oneof![
            Just(Vec::new()),
            Just(vec![22, 3, 1]),
            Just(vec![22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3]),
        ],
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        cut in any::<prop::sample::Index>(),
    ) {
        let input = [start, bytes].concat();
        check(&input, cut.index(input.len() + 1))?;
    }

    #[test]
    fn damaged_client_hellos_never_panic_nor_yield_a_bad_name(
        (stream, _) in any_client_hello(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut input = stream;
        for (at, byte) in flips {
            let at = at.index(input.len());
            input[at] = byte;
        }
        check(&input, cut.index(input.len() + 1))?;
    }
}

/// Names are routable, and a verdict on a prefix stands for the whole input.
fn check(input: &[u8], cut: usize) -> Result<(), TestCaseError> {
    let whole = parse(input);
    if let Parse::Done(ClientHello { server_name: Some(name) }) = &whole {
        prop_assert!(is_routable(name), "{:?}", name);
    }
    match parse(&input[..cut]) {
        Parse::Incomplete => {}
        Parse::Invalid(_) => prop_assert!(matches!(whole, Parse::Invalid(_)), "{:?}", whole),
        verdict => prop_assert_eq!(verdict, whole),
    }
    Ok(())
}
