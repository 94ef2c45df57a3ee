//! `lb_net::inspect::client_hello::parse` on arbitrary bytes: no panic, final verdicts, and
//! every server name returned is a lower-case DNS name without a trailing dot.
#![no_main]

use lb_net::inspect::client_hello::{parse, Parse, MAX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse(data);
    if data.len() >= MAX_LEN {
        assert_ne!(whole, Parse::Incomplete);
    }
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        match parse(&data[..cut]) {
            Parse::Incomplete => {}
            Parse::Invalid(_) => assert!(matches!(whole, Parse::Invalid(_)), "{whole:?}"),
            verdict => assert_eq!(verdict, whole),
        }
    }
    if let Parse::Done(hello) = &whole {
        if let Some(name) = &hello.server_name {
            assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
            assert!(!name.ends_with('.') && !name.starts_with('.'), "{name:?}");
            assert!(
                name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.')),
                "{name:?}"
            );
            assert!(name.split('.').all(|label| (1..=63).contains(&label.len())), "{name:?}");
        }
    }
});
