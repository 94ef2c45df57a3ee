//! `lb_net::inspect::proxy_header::parse` on arbitrary bytes: no panic, and the contract of
//! `lb_net::inspect` (final verdicts, `consumed` within the input, re-encoding round-trips).
#![no_main]

use lb_net::inspect::proxy_header::{encode, parse, Header, Parse, Version, MAX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if data.len() >= MAX_LEN {
        assert_ne!(whole, Parse::Incomplete);
    }
    // A verdict on a prefix stands for the whole input.
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        match parse(&data[..cut]) {
            Parse::Incomplete => {}
            Parse::Invalid(_) => assert!(matches!(whole, Parse::Invalid(_)), "{whole:?}"),
            verdict => assert_eq!(verdict, whole),
        }
    }
    if let Parse::Done { header, consumed } = whole {
        assert!(consumed <= data.len());
        assert_eq!(parse(&data[..consumed]), Parse::Done { header, consumed });
        if let Header::Tcp { source, destination } = header {
            for version in [Version::V1, Version::V2] {
                let encoded = encode(version, source, destination);
                assert_eq!(parse(&encoded), Parse::Done { header, consumed: encoded.len() });
            }
        }
    }
});
