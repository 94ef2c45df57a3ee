//! HTTP health checks: what to ask (`GET path`, the `Host` header) and what counts as a pass
//! (a status in a set, optionally a text in the body), as HAProxy's `option httpchk` and
//! `http-check expect` let operators say.
//!
//! Written as `http:/path` or `http://HOST/path` (HOST, with its port if given, is sent as the
//! `Host` header; the check still connects to each backend's own address), followed by options
//! separated by commas: `host=NAME`, `status=200|204|300-399` (also `2xx`), `body=TEXT`.

use std::fmt;
use std::ops::RangeInclusive;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Most response bytes a check reads looking for the status line, the end of the headers and
/// the expected body text: a health endpoint answers in a few hundred bytes.
const MAX_RESPONSE: usize = 64 * 1024;

/// An HTTP check: `GET path` and the conditions its answer must meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    /// The path requested, starting with `/` (with a query string if given).
    pub path: String,
    /// The `Host` header sent; `None` sends the backend's address, as a client connecting to
    /// it by address would.
    pub host: Option<String>,
    /// The statuses that pass. Default 200-399: success and redirects, as HAProxy's default.
    pub status: StatusSet,
    /// Text the body must contain (within the first 64 KiB of the response), if any.
    pub body: Option<String>,
}

impl HttpCheck {
    /// `GET path`, any 2xx or 3xx status passing.
    pub fn get(path: &str) -> HttpCheck {
        HttpCheck { path: path.to_owned(), host: None, status: StatusSet::default(), body: None }
    }

    /// Parses what follows `http` in a `--health-check` value: `:/path`, `://HOST/path`, or
    /// nothing (`/`), then `,option=value` options. `whole` is the full value, for messages.
    pub(crate) fn parse(rest: &str, whole: &str) -> Result<HttpCheck, String> {
        let mut parts = rest.split(',');
        let target = parts.next().unwrap_or_default();
        let (host, path) = if target.is_empty() {
            (None, "/")
        } else if let Some(url) = target.strip_prefix("://") {
            let (host, path) = match url.find('/') {
                Some(i) => (&url[..i], &url[i..]),
                None => (url, "/"),
            };
            if host.is_empty() {
                return Err(format!(
                    "{whole:?}: no host after http:// (write http://HOST/path, or http:/path \
                     to send the backend's address as the Host)"
                ));
            }
            (Some(host), path)
        } else if let Some(path) = target.strip_prefix(':') {
            if path.starts_with("//") {
                return Err(format!("{whole:?}: write http://HOST/path or http:/path"));
            }
            (None, path)
        } else {
            return Err(format!(
                "{whole:?}: expected http:/path or http://HOST/path (for example http:/healthz)"
            ));
        };
        if !path.starts_with('/') {
            return Err(format!("{whole:?}: the HTTP path must start with '/'"));
        }
        let mut check = HttpCheck::get(path);
        check.host = host.map(str::to_owned);
        let mut seen = Vec::new();
        for option in parts {
            let (key, value) = option.split_once('=').ok_or_else(|| {
                format!("{whole:?}: unexpected {option:?}: options are host=, status= and body=")
            })?;
            let key = key.trim().to_ascii_lowercase();
            if seen.contains(&key) {
                return Err(format!("{whole:?}: {key}= given twice"));
            }
            match key.as_str() {
                "host" if check.host.is_some() => {
                    return Err(format!(
                        "{whole:?}: the host is given twice (in the URL and host=)"
                    ))
                }
                "host" if value.is_empty() => return Err(format!("{whole:?}: host= is empty")),
                "host" => check.host = Some(value.to_owned()),
                "status" => check.status = value.parse().map_err(|e| format!("{whole:?}: {e}"))?,
                "body" if value.is_empty() => return Err(format!("{whole:?}: body= is empty")),
                "body" => check.body = Some(value.to_owned()),
                _ => {
                    return Err(format!(
                        "{whole:?}: unknown option {key:?}: options are host=, status= and body="
                    ))
                }
            }
            seen.push(key);
        }
        for (what, text) in [("path", Some(check.path.as_str())), ("host", check.host.as_deref())] {
            if text
                .is_some_and(|t| t.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()))
            {
                return Err(format!(
                    "{whole:?}: the HTTP {what} must not contain spaces or control characters"
                ));
            }
            if text.is_some_and(|t| !t.is_ascii()) {
                return Err(format!(
                    "{whole:?}: the HTTP {what} must be ASCII (percent-encode the rest, e.g. %C3%A9)"
                ));
            }
        }
        if check.path.contains('#') {
            return Err(format!(
                "{whole:?}: a fragment (#...) is never sent to a server: leave it out"
            ));
        }
        if let Some(host) = &check.host {
            if host.contains('@') {
                return Err(format!(
                    "{whole:?}: user information (user@) is not sent in a Host header: leave it out"
                ));
            }
            if host.contains('?') {
                return Err(format!("{whole:?}: {host:?} is not a host name"));
            }
        }
        if check.body.as_deref().is_some_and(|b| b.chars().any(char::is_control)) {
            return Err(format!("{whole:?}: the body text must not contain control characters"));
        }
        Ok(check)
    }

    /// What was asked, for failure reasons: `GET /healthz (Host: api.internal)`.
    fn request_line(&self, addr: &str) -> String {
        format!("GET {} (Host: {})", self.path, self.host.as_deref().unwrap_or(addr))
    }

    /// Sends the request on `stream` and judges the answer; `Err` says what failed, naming
    /// the request.
    pub(crate) async fn run<S>(&self, stream: S, addr: &str) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        self.exchange(stream, addr)
            .await
            .map_err(|why| format!("{}: {why}", self.request_line(addr)))
    }

    /// The request and its answer, through hyper's HTTP/1.1 client: the status line, headers
    /// and body (chunked or not) are read by a maintained parser, interim `1xx` answers are
    /// skipped, and only the first [`MAX_RESPONSE`] bytes of the body are read.
    async fn exchange<S>(&self, stream: S, addr: &str) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(describe)?;
        let request = hyper::Request::get(self.path.as_str())
            .header(HOST, self.host.as_deref().unwrap_or(addr))
            .header(USER_AGENT, "lb-health-check")
            .header(ACCEPT, "*/*")
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let exchange = async {
            let response = sender.send_request(request).await.map_err(describe)?;
            let code = response.status().as_u16();
            if !self.status.contains(code) {
                return Err(format!("HTTP status {code}, expected {}", self.status));
            }
            let Some(text) = &self.body else { return Ok(()) };
            let found = |read: &[u8]| read.windows(text.len()).any(|w| w == text.as_bytes());
            let mut body = response.into_body();
            let mut read = Vec::new();
            while read.len() < MAX_RESPONSE && !found(&read) {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let room = MAX_RESPONSE - read.len();
                            read.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    Some(Err(e)) => return Err(describe(e)),
                    None => break,
                }
            }
            if found(&read) {
                return Ok(());
            }
            Err(format!(
                "HTTP status {code}, but the body does not contain {text:?} (first {} bytes read)",
                read.len()
            ))
        };
        // The connection is driven alongside; its end before the answer is the answer's error.
        tokio::pin!(exchange, connection);
        tokio::select! {
            biased;
            result = &mut exchange => result,
            ended = &mut connection => match ended {
                Err(e) => Err(describe(e)),
                Ok(()) => exchange.await,
            },
        }
    }
}

/// hyper's error in the words of a check's failure reason.
fn describe(e: hyper::Error) -> String {
    if e.is_incomplete_message() {
        "connection closed before a complete answer".into()
    } else if e.is_parse() || e.is_parse_status() {
        format!("not an HTTP/1.x response ({e})")
    } else {
        e.to_string()
    }
}

impl fmt::Display for HttpCheck {
    /// The form it is written in: `http:/path` or `http://HOST/path`, then the options that
    /// are not the defaults.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(host) => write!(f, "http://{host}{}", self.path)?,
            None => write!(f, "http:{}", self.path)?,
        }
        if self.status != StatusSet::default() {
            write!(f, ",status={}", self.status)?;
        }
        if let Some(body) = &self.body {
            write!(f, ",body={body}")?;
        }
        Ok(())
    }
}

/// The HTTP statuses a check accepts: a union of single codes and ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<RangeInclusive<u16>>);

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet(vec![200..=399])
    }
}

impl StatusSet {
    /// Whether `code` passes.
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|r| r.contains(&code))
    }
}

impl std::str::FromStr for StatusSet {
    type Err = String;

    /// `200`, `200-299`, `2xx`, or several joined by `|`: `200|204|300-399`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |part: &str| {
            format!(
                "invalid status {part:?} in status={s}: expected codes from 100 to 599 such as \
                 200, 200-299, 2xx or 200|204"
            )
        };
        let code = |t: &str| t.trim().parse::<u16>().ok().filter(|c| (100..=599).contains(c));
        let mut ranges = Vec::new();
        for part in s.split('|') {
            let part = part.trim();
            let range =
                if let Some(class) = part.strip_suffix("xx").or_else(|| part.strip_suffix("XX")) {
                    match class.parse::<u16>() {
                        Ok(c @ 1..=5) if class.len() == 1 => c * 100..=c * 100 + 99,
                        _ => return Err(bad(part)),
                    }
                } else if let Some((low, high)) = part.split_once('-') {
                    match (code(low), code(high)) {
                        (Some(l), Some(h)) if l <= h => l..=h,
                        _ => return Err(bad(part)),
                    }
                } else {
                    let c = code(part).ok_or_else(|| bad(part))?;
                    c..=c
                };
            ranges.push(range);
        }
        Ok(StatusSet(ranges))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("|")?;
            }
            if r.start() == r.end() {
                write!(f, "{}", r.start())?;
            } else {
                write!(f, "{}-{}", r.start(), r.end())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn parse(s: &str) -> Result<HttpCheck, String> {
        HttpCheck::parse(s.strip_prefix("http").unwrap(), s)
    }

    #[test]
    fn the_url_form_names_the_host_and_the_path() {
        let c = parse("http://api.internal/healthz").unwrap();
        assert_eq!((c.host.as_deref(), c.path.as_str()), (Some("api.internal"), "/healthz"));
        let c = parse("http://api.internal:8080").unwrap();
        assert_eq!((c.host.as_deref(), c.path.as_str()), (Some("api.internal:8080"), "/"));
        let c = parse("http:/healthz?full=1").unwrap();
        assert_eq!((c.host, c.path.as_str()), (None, "/healthz?full=1"));
        assert_eq!(parse("http").unwrap(), HttpCheck::get("/"));
        // What used to be read as the path //x/.
        let c = parse("http://x/").unwrap();
        assert_eq!((c.host.as_deref(), c.path.as_str()), (Some("x"), "/"));
    }

    #[test]
    fn options_set_host_status_and_body() {
        let c = parse("http:/h,host=a.example,status=200|204|300-302,body=ok").unwrap();
        assert_eq!(c.host.as_deref(), Some("a.example"));
        assert!(c.status.contains(204) && c.status.contains(301) && !c.status.contains(201));
        assert_eq!(c.body.as_deref(), Some("ok"));
        assert_eq!(c.to_string(), "http://a.example/h,status=200|204|300-302,body=ok");
        assert_eq!(parse(&c.to_string()).unwrap(), c, "Display round-trips");
        let c = parse("http:/h,status=2xx").unwrap();
        assert!(c.status.contains(250) && !c.status.contains(300));
        assert_eq!(parse("http:/h").unwrap().to_string(), "http:/h");
    }

    #[test]
    fn bad_forms_say_what_to_write() {
        for (bad, says) in [
            ("http:healthz", "must start with '/'"),
            ("http:///x", "no host"),
            ("http:h", "must start with '/'"),
            ("http://a b/", "spaces"),
            ("http:/h,status=99", "invalid status \"99\""),
            ("http:/h,status=300-200", "invalid status"),
            ("http:/h,status=6xx", "invalid status"),
            ("http:/h,colour=red", "unknown option \"colour\""),
            ("http:/h,fast", "unexpected \"fast\""),
            ("http:/h,body=", "body= is empty"),
            ("http://a/h,host=b", "given twice"),
            ("http:/h,status=200,status=201", "given twice"),
            ("httpx", "expected http:/path"),
            ("http://user@host/x", "user information"),
            ("http:/x#frag", "fragment"),
            ("http:/h\u{e9}llo", "must be ASCII"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    async fn judge(check: &HttpCheck, response: &'static [u8]) -> Result<(), String> {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let server = tokio::spawn(async move {
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if theirs.read(&mut byte).await.unwrap() == 0 {
                    break;
                }
                request.push(byte[0]);
            }
            theirs.write_all(response).await.unwrap();
            theirs.shutdown().await.unwrap();
            String::from_utf8(request).unwrap()
        });
        let result = check.run(ours, "10.0.0.1:80").await;
        let request = server.await.unwrap();
        let host = check.host.as_deref().unwrap_or("10.0.0.1:80");
        assert!(request.starts_with(&format!("GET {} HTTP/1.1\r\n", check.path)), "{request}");
        assert!(
            request.to_ascii_lowercase().contains(&format!("\r\nhost: {host}\r\n")),
            "{request}"
        );
        result
    }

    #[tokio::test]
    async fn answers_are_judged_by_status_and_body() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nstatus ok";
        assert_eq!(judge(&HttpCheck::get("/"), ok).await, Ok(()));
        let e = judge(
            &parse("http://api.internal/healthz").unwrap(),
            b"HTTP/1.1 404 Not Found\r\n\r\n",
        )
        .await
        .unwrap_err();
        assert_eq!(e, "GET /healthz (Host: api.internal): HTTP status 404, expected 200-399");
        let with_body = parse("http:/,body=status ok").unwrap();
        assert_eq!(judge(&with_body, ok).await, Ok(()));
        let e = judge(&with_body, b"HTTP/1.1 200 OK\r\n\r\nstatus degraded").await.unwrap_err();
        assert!(e.starts_with("GET / (Host: 10.0.0.1:80): HTTP status 200, but the body does not contain \"status ok\""), "{e}");
        let only_204 = parse("http:/,status=204").unwrap();
        assert!(judge(&only_204, ok).await.unwrap_err().contains("expected 204"));
        assert!(judge(&HttpCheck::get("/"), b"SSH-2.0-OpenSSH\r\n")
            .await
            .unwrap_err()
            .contains("not an HTTP/1.x"));
        assert!(judge(&HttpCheck::get("/"), b"")
            .await
            .unwrap_err()
            .contains("closed before a complete answer"));
        // Chunked bodies are decoded, interim 1xx answers skipped, bare LF line ends read.
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nrea\r\n2\r\ndy\r\n0\r\n\r\n";
        assert_eq!(judge(&parse("http:/,body=ready").unwrap(), chunked).await, Ok(()));
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(judge(&HttpCheck::get("/"), interim).await, Ok(()));
        let bare_lf = b"HTTP/1.1 200 OK\nContent-Length: 5\n\nready";
        assert_eq!(judge(&parse("http:/,body=ready").unwrap(), bare_lf).await, Ok(()));
    }
}
