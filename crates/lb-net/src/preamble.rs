//! The inspect stage of a connection, before a pool is chosen: read the PROXY protocol header an
//! upstream balancer sends (`accept-proxy`) and the TLS ClientHello's server name (SNI
//! routing), bounded in bytes and in time, keeping every client byte read so it can be
//! forwarded untouched. The parsing is [`crate::inspect`]'s; this module owns the socket reads.
//!
//! A listener that does neither skips this stage entirely: no read, no allocation, no timer.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::inspect::{client_hello, proxy_header};

/// The most bytes a PROXY header may take here. The protocol allows 64 KiB of v2 extensions;
/// what real proxies send (addresses, a few TLVs such as a cloud endpoint id) fits in a few
/// hundred bytes, so a larger header is refused as oversized rather than buffered.
pub(crate) const MAX_PROXY_HEADER: usize = 4096;

/// What the first bytes of a connection said.
#[derive(Debug, Default)]
pub(crate) struct Preamble {
    /// The client's address as a PROXY header gave it (`None` without one, or for `LOCAL` and
    /// `UNKNOWN` headers: the real peer then stands).
    pub(crate) source: Option<SocketAddr>,
    /// The address the client connected to, as a PROXY header gave it.
    pub(crate) destination: Option<SocketAddr>,
    /// The server name of the ClientHello, when SNI routing looked for one and found it.
    pub(crate) server_name: Option<String>,
    /// Whether the client sent a TLS ClientHello at all (SNI routing only).
    pub(crate) tls: bool,
    /// Client bytes read after the PROXY header: forwarded to the backend first.
    pub(crate) pending: Vec<u8>,
    /// The client ended its side (half-close) while being inspected.
    pub(crate) client_eof: bool,
}

/// Why a connection was refused while being inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The PROXY header was missing, malformed, oversized or late (termination `bad-proxy`).
    BadProxy(String),
    /// The client's first bytes began as TLS but did not make a usable ClientHello, or
    /// (without a default pool) were not TLS at all (termination `bad-hello`).
    BadHello(String),
    /// The client closed or broke the connection before saying enough.
    ClientGone(String),
}

/// Reads from `client` what the listener needs: a PROXY header if `accept_proxy`, then a
/// ClientHello if `sni`, all within `timeout`.
///
/// For SNI, a client that is not speaking TLS, or says nothing within the timeout (a protocol
/// where the server speaks first), is not refused here: it comes back without a server name
/// and with `tls` false, for the caller's default pool if it has one.
pub(crate) async fn read<S>(
    client: &mut S,
    accept_proxy: bool,
    sni: bool,
    timeout: Duration,
) -> Result<Preamble, Refusal>
where
    S: AsyncRead + Unpin,
{
    let deadline = crate::time::deadline(Instant::now(), timeout);
    let mut preamble = Preamble::default();
    let mut buf: Vec<u8> = Vec::new();
    if accept_proxy {
        loop {
            match proxy_header::parse(&buf) {
                proxy_header::Parse::Incomplete => {}
                proxy_header::Parse::Done { header, consumed } => {
                    preamble.source = header.source();
                    preamble.destination = header.destination();
                    buf.drain(..consumed);
                    break;
                }
                proxy_header::Parse::Invalid(why) => {
                    return Err(Refusal::BadProxy(why.to_string()))
                }
            }
            if buf.len() >= MAX_PROXY_HEADER {
                return Err(Refusal::BadProxy(format!(
                    "PROXY header longer than {MAX_PROXY_HEADER} bytes"
                )));
            }
            match fill(client, &mut buf, MAX_PROXY_HEADER, deadline).await {
                Filled::More => {}
                Filled::Eof => {
                    return Err(Refusal::BadProxy("closed before a complete PROXY header".into()))
                }
                Filled::TimedOut => {
                    return Err(Refusal::BadProxy(format!(
                        "no complete PROXY header within {timeout:?}"
                    )))
                }
                Filled::Failed(e) => return Err(Refusal::ClientGone(e)),
            }
        }
    }
    if sni {
        loop {
            if !buf.is_empty() {
                match client_hello::parse(&buf) {
                    client_hello::Parse::Incomplete => {}
                    client_hello::Parse::Done(hello) => {
                        preamble.tls = true;
                        preamble.server_name = hello.server_name;
                        break;
                    }
                    // Plain TCP: the caller decides (default pool or `bad-hello`).
                    client_hello::Parse::NotTls => break,
                    client_hello::Parse::Invalid(why) => {
                        return Err(Refusal::BadHello(why.to_string()))
                    }
                }
            }
            if preamble.client_eof {
                if buf.is_empty() {
                    return Err(Refusal::ClientGone("closed without sending anything".into()));
                }
                return Err(Refusal::BadHello("closed in the middle of a TLS ClientHello".into()));
            }
            match fill(client, &mut buf, client_hello::MAX_LEN, deadline).await {
                Filled::More => {}
                Filled::Eof => preamble.client_eof = true,
                // Nothing at all: a client waiting for the server to speak first.
                Filled::TimedOut if buf.is_empty() => break,
                Filled::TimedOut => {
                    return Err(Refusal::BadHello(format!(
                        "no complete TLS ClientHello within {timeout:?}"
                    )))
                }
                Filled::Failed(e) => return Err(Refusal::ClientGone(e)),
            }
        }
    }
    preamble.pending = buf;
    Ok(preamble)
}

/// The outcome of one read into the inspect buffer.
enum Filled {
    More,
    Eof,
    TimedOut,
    Failed(String),
}

/// Reads once more into `buf`, up to `limit` bytes in all, before `deadline`.
async fn fill<S>(client: &mut S, buf: &mut Vec<u8>, limit: usize, deadline: Instant) -> Filled
where
    S: AsyncRead + Unpin,
{
    let room = limit.saturating_sub(buf.len()).max(1);
    buf.reserve(room.min(4096));
    let mut chunk = [0u8; 4096];
    let want = room.min(chunk.len());
    match tokio::time::timeout_at(deadline, client.read(&mut chunk[..want])).await {
        Err(_) => Filled::TimedOut,
        Ok(Ok(0)) => Filled::Eof,
        Ok(Ok(n)) => {
            buf.extend_from_slice(&chunk[..n]);
            Filled::More
        }
        Ok(Err(e)) => Filled::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Runs [`read`] against a client that writes `parts` (each its own write) and then, if
    /// `close`, half-closes.
    async fn inspect(
        parts: &[&[u8]],
        close: bool,
        accept_proxy: bool,
        sni: bool,
    ) -> Result<Preamble, Refusal> {
        let (mut ours, mut theirs) = tokio::io::duplex(1 << 16);
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for part in parts {
                theirs.write_all(&part).await.unwrap();
                tokio::task::yield_now().await;
            }
            if close {
                theirs.shutdown().await.unwrap();
            }
            // Keep the pipe open until the reader is done.
            theirs
        });
        let result = read(&mut ours, accept_proxy, sni, Duration::from_secs(5)).await;
        drop(writer.await.unwrap());
        result
    }

    #[tokio::test(start_paused = true)]
    async fn a_proxy_header_is_consumed_and_what_follows_kept() {
        let p = inspect(
            &[b"PROXY TCP4 192.0.2.7 198.51.100.1 5", b"6324 443\r\nhello"],
            false,
            true,
            false,
        )
        .await
        .unwrap();
        assert_eq!(p.source, Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(p.destination, Some("198.51.100.1:443".parse().unwrap()));
        assert_eq!(p.pending, b"hello");
        let v2 = proxy_header::encode(
            proxy_header::Version::V2,
            "[2001:db8::1]:4000".parse().unwrap(),
            "[2001:db8::2]:443".parse().unwrap(),
        );
        let p = inspect(&[&v2], false, true, false).await.unwrap();
        assert_eq!(p.source, Some("[2001:db8::1]:4000".parse().unwrap()));
        assert!(p.pending.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_missing_or_late_proxy_header_is_refused() {
        let e = inspect(&[b"GET / HTTP/1.1\r\n"], false, true, false).await.unwrap_err();
        assert!(matches!(e, Refusal::BadProxy(_)), "{e:?}");
        let e = inspect(&[b"PROXY TCP4 1.2.3.4"], true, true, false).await.unwrap_err();
        assert_eq!(e, Refusal::BadProxy("closed before a complete PROXY header".into()));
        let e = inspect(&[b"PROXY TCP4 1.2.3.4"], false, true, false).await.unwrap_err();
        assert_eq!(e, Refusal::BadProxy("no complete PROXY header within 5s".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn plain_tcp_or_silence_is_left_to_the_default_pool() {
        let p = inspect(&[b"SSH-2.0-x\r\n"], false, false, true).await.unwrap();
        assert_eq!(
            (p.tls, p.server_name, p.pending.as_slice()),
            (false, None, &b"SSH-2.0-x\r\n"[..])
        );
        let p = inspect(&[], false, false, true).await.unwrap();
        assert!(!p.tls && p.pending.is_empty());
        let e = inspect(&[], true, false, true).await.unwrap_err();
        assert!(matches!(e, Refusal::ClientGone(_)), "{e:?}");
        // TLS that starts and then stops, or breaks the rules, is refused.
        let e = inspect(&[&[0x16, 0x03, 0x01, 0x00, 0x40, 0x01]], false, false, true)
            .await
            .unwrap_err();
        assert!(matches!(e, Refusal::BadHello(_)), "{e:?}");
        let e = inspect(&[&[0x16, 0x03, 0x01, 0x00, 0x00]], false, false, true).await.unwrap_err();
        assert!(matches!(e, Refusal::BadHello(_)), "{e:?}");
    }
}
