//! The promises every parser in `lb_net::inspect` makes (see that module), checked the same way
//! for each. Shared by the targets (`mod common;`); not a target itself.

use std::fmt::Debug;

/// Parses `data` whole and returns the verdict, having checked that it is **bounded** (not
/// `incomplete` for `max_len` bytes or more) and **final**: a verdict on a prefix stands for the
/// whole input, except that an invalid prefix may be invalid for another reason.
pub fn bounded_and_final<P: PartialEq + Debug>(
    data: &[u8],
    parse: fn(&[u8]) -> P,
    max_len: usize,
    incomplete: P,
    is_invalid: fn(&P) -> bool,
) -> P {
    let whole = parse(data);
    if data.len() >= max_len {
        assert_ne!(whole, incomplete);
    }
    for cut in [data.len() / 2, data.len().saturating_sub(1)] {
        match parse(&data[..cut]) {
            verdict if verdict == incomplete => {}
            verdict if is_invalid(&verdict) => assert!(is_invalid(&whole), "{whole:?}"),
            verdict => assert_eq!(verdict, whole),
        }
    }
    whole
}
