//! Reading what a connection says about itself before its bytes are relayed: the PROXY protocol
//! header an upstream balancer puts in front of a client's bytes ([`proxy_header`]), and the
//! server name in a TLS ClientHello ([`client_hello`]), for routing by SNI without decrypting.
//!
//! Both parsers are pure functions over the bytes received so far: no I/O, no clock, no state.
//! The caller owns the socket and the time limit, and follows one loop:
//!
//! 1. read from the socket, appending to a buffer;
//! 2. call `parse(&buffer)`;
//! 3. on `Incomplete`, go back to 1; anything else is the verdict.
//!
//! Three promises make that loop safe:
//!
//! - **Bounded.** `parse` never returns `Incomplete` for a buffer of `MAX_LEN` bytes or more, so
//!   a caller never needs to buffer more than `MAX_LEN` bytes (read at most `MAX_LEN - len`
//!   bytes each time). A caller may also give up earlier, at a limit of its own.
//! - **Final.** A verdict other than `Incomplete` does not change when more bytes arrive (a
//!   complete header is the same header with the same length; invalid stays invalid), so the
//!   caller may stop at the first one.
//! - **Prompt.** Bytes that cannot begin what is expected are rejected as soon as they are seen:
//!   an HTTP request or an SSH banner on an `accept-proxy` listener fails on its first byte, not
//!   after a timeout.
//!
//! Neither parser panics or allocates in proportion to a length field beyond `MAX_LEN`, whatever
//! the bytes; the `fuzz/` directory at the repository root exercises both.
//!
//! # Example: a PROXY header, then the client's own bytes
//!
//! ```
//! use lb_net::inspect::proxy_header::{self, Parse};
//!
//! // What arrives on the socket, in two reads.
//! let reads: [&[u8]; 2] = [b"PROXY TCP4 192.0.2.7 198.51.100.1 5", b"6324 443\r\nGET / HTTP/1.1\r\n"];
//! let mut buffer = Vec::new();
//! for read in reads {
//!     buffer.extend_from_slice(read);
//!     match proxy_header::parse(&buffer) {
//!         Parse::Incomplete => continue,
//!         Parse::Done { header, consumed } => {
//!             assert_eq!(header.source(), Some("192.0.2.7:56324".parse().unwrap()));
//!             // The rest belongs to the client stream: relay it first.
//!             assert_eq!(&buffer[consumed..], b"GET / HTTP/1.1\r\n");
//!             return;
//!         }
//!         Parse::Invalid(reason) => panic!("{reason}"),
//!     }
//! }
//! # panic!("the header was not complete");
//! ```

pub mod client_hello;
pub mod proxy_header;
