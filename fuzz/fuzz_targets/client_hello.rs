//! `lb_net::inspect::client_hello::parse` on arbitrary bytes: no panic, final verdicts, and
//! every server name returned is a lower-case DNS name without a trailing dot.
#![no_main]

mod common;

use lb_net::inspect::client_hello::{parse, Parse, MAX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let invalid = |verdict: &Parse| matches!(verdict, Parse::Invalid(_));
    let whole = common::bounded_and_final(data, parse, MAX_LEN, Parse::Incomplete, invalid);
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
