//! `lb_net::inspect::proxy_header::parse` on arbitrary bytes: no panic, and the contract of
//! `lb_net::inspect` (final verdicts, `consumed` within the input, re-encoding round-trips).
#![no_main]

mod common;

use lb_net::inspect::proxy_header::{encode, parse, Header, Parse, Version, MAX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let invalid = |verdict: &Parse| matches!(verdict, Parse::Invalid(_));
    let whole = common::bounded_and_final(data, parse, MAX_LEN, Parse::Incomplete, invalid);
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
