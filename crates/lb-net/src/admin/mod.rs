//! The admin endpoint: a dashboard, Prometheus metrics, JSON stats and remote commands over
//! HTTP/1.1.
//!
//! - `GET /`: the dashboard, a page compiled into the binary that polls `/stats` and can send
//!   commands with the token typed into it (see the `dashboard` module: `dashboard.html`,
//!   `dashboard.js` and `dashboard.css` beside this file).
//! - `GET /metrics`: Prometheus text exposition (format 0.0.4), encoded by `prometheus-client`
//!   from the same counters the `stats` command shows, read at scrape time. Series are keyed by
//!   address alone, so a removed backend still draining and the backend added again at its
//!   address are one series ([`PoolStats::per_address`](lb_core::PoolStats::per_address)).
//! - `GET /stats`: the `stats` table as JSON, with the same field names ([`StatsJson`]).
//! - `POST /command`: a command in the REPL's grammar as the body; the answer is the text the
//!   REPL would print (`what-if` and `explain` in JSON with `Accept: application/json`),
//!   with status 200, or 400 and `error: ...` for a command that does not parse
//!   or fails. With a token configured, POST requires `Authorization: Bearer <token>`.
//!
//! Before any of that, every request passes a guard: a `Host` that is not an IP address,
//! `localhost` or an allowed name, an `Origin` that is not the endpoint itself, or a command
//! without the [`CLIENT_HEADER`] is refused with 403, so a web page open in the operator's
//! browser can neither drive lb (cross-site requests) nor read it (DNS rebinding).
//!
//! HTTP is handled by `hyper`; nothing here parses HTTP by hand.
//!
//! The endpoint shares the process (and its file descriptors) with the proxy, so what a client
//! can hold is bounded: a request head must arrive within [`HEADER_READ_TIMEOUT`] (which also
//! closes a kept-alive connection idle for that long), no connection lives longer than
//! [`MAX_CONNECTION_AGE`] (plus [`CLOSE_GRACE`] to finish a request in progress), and at most
//! [`MAX_ADMIN_CONNECTIONS`] are open at once: beyond that a new one is closed at once and
//! counted in `lb_admin_connections_rejected_total`. Accept errors are waited out with the same
//! doubling pause as the proxy's accept loop. One descriptor is kept in reserve (`Spare`), so
//! that while the process is out of descriptors (clients took them all) an operator can still
//! reach the endpoint, one connection at a time.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

mod dashboard;
mod guard;
mod json;
mod prometheus;

pub use guard::{AllowedHost, CLIENT_HEADER};
pub use json::{
    BackendJson, ClientsJson, CounterValues, DiscoveryJson, DrainJson, EventJson, ListenerJson,
    PoolJson, RetiredJson, StatsJson, TotalsJson,
};

use crate::accept::accept_loop;
use crate::control::{parse_logged, Handle, Reply};
use prometheus::StatsCollector;

/// Largest `POST /command` body accepted: a command is one short line.
const MAX_BODY: usize = 64 * 1024;

/// Longest wait for a complete request head (request line and headers), counted from the
/// connection's start or from the previous response: a client that sends part of a request and
/// stops (slowloris), or a kept-alive connection with no next request, is closed after this.
/// A scrape or a command is one small request sent at once, so 10 s is generous.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest life of one admin connection, however busy: once reached, the connection is closed
/// as soon as its request in progress is answered (at once if it has none). Bounds clients that
/// trickle a request body or never read their answer. A scraper keeping its connection alive
/// simply reconnects.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(60);

/// How long a connection past [`MAX_CONNECTION_AGE`] may take to finish its request in
/// progress before it is closed anyway.
pub const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Most admin connections open at once. Beyond it a new connection is closed at once (and
/// counted), so the endpoint never holds more than this many descriptors that the proxy might
/// need. Scrapers and `lb ctl` use one each, briefly.
pub const MAX_ADMIN_CONNECTIONS: usize = 64;

/// At most one warning per this interval about connections refused at
/// [`MAX_ADMIN_CONNECTIONS`]; the warning says how many were refused since the last one.
const REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Admin endpoint settings.
#[derive(Clone, Default)]
pub struct AdminConfig {
    /// If set, `POST /command` requires `Authorization: Bearer <token>`. Reads (`/metrics`,
    /// `/stats`) never do, so a scraper needs no secret.
    pub token: Option<String>,
    /// Host names the endpoint answers to besides IP addresses and `localhost` (empty by
    /// default: a request naming any other `Host` is refused, which defeats DNS rebinding).
    pub allowed_hosts: Vec<AllowedHost>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("allowed_hosts", &self.allowed_hosts)
            .finish()
    }
}

/// Serves the admin endpoint on `listener` until `shutdown` resolves.
///
/// Stops accepting when `shutdown` resolves; connections already open finish on their own
/// (each within [`MAX_CONNECTION_AGE`] and [`CLOSE_GRACE`]).
pub async fn run(
    listener: TcpListener,
    handle: Handle,
    config: AdminConfig,
    shutdown: impl Future<Output = ()>,
) {
    let rejected = Arc::new(AtomicU64::new(0));
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector {
        handle: handle.clone(),
        rejected: Arc::clone(&rejected),
    }));
    let state = Arc::new(Server { handle, config, registry });
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(target: "lb::admin", address = %addr, "admin endpoint listening");
    }
    let slots = Arc::new(Semaphore::new(MAX_ADMIN_CONNECTIONS));
    let mut refused = RefusedLog::default();
    let mut shutdown = std::pin::pin!(shutdown);
    let listener = Arc::new(Spare::new(listener));
    let accepted = |stream, peer| {
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Dropping the stream closes it.
            rejected.fetch_add(1, Relaxed);
            refused.refused(peer);
            return;
        };
        let stream = Returned { stream: Some(stream), spare: Arc::downgrade(&listener) };
        tokio::spawn(serve_connection(Arc::clone(&state), stream, peer, slot));
    };
    let failed = |e: &std::io::Error, pause: Option<Duration>| match pause {
        None => {
            tracing::debug!(target: "lb::admin", error = %e, "admin accept: client gave up before being accepted")
        }
        Some(pause) => tracing::warn!(
            target: "lb::admin",
            error = %e,
            pause_ms = pause.as_millis() as u64,
            "admin accept failed (out of file descriptors or memory?); pausing before accepting again"
        ),
    };
    accept_loop(&*listener, &mut shutdown, accepted, failed).await;
}

/// The admin endpoint's listening socket, with one descriptor in reserve: a duplicate of the
/// listening socket, closed when `accept` finds the process out of descriptors so that the
/// connection waiting (most likely an operator's `lb ctl stats`) can be accepted in its place,
/// and taken back when that connection ends (its own descriptor, in one step: see
/// [`Spare::take_back`]) or, failing that, at the next accept. Without it the endpoint would be unreachable for as long as clients hold every
/// descriptor, which is when an operator most wants to look.
struct Spare {
    listener: TcpListener,
    held: std::sync::Mutex<Option<std::os::fd::OwnedFd>>,
}

impl Spare {
    fn new(listener: TcpListener) -> Self {
        let spare = Spare { listener, held: std::sync::Mutex::new(None) };
        spare.refill();
        spare
    }

    /// Takes a descriptor into reserve if none is held (one system call, only then).
    fn refill(&self) {
        use std::os::fd::AsFd;
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_none() {
            *held = self.listener.as_fd().try_clone_to_owned().ok();
        }
    }

    /// Frees the reserved descriptor, if one is held.
    fn release(&self) -> bool {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).take().is_some()
    }

    /// Takes `stream`'s descriptor into reserve if none is held, closing the connection by
    /// making that descriptor a duplicate of the listening socket (`dup2`, one step): it is
    /// never free in between, where a worker out of descriptors would take it. Otherwise the
    /// connection is just closed.
    fn take_back(&self, stream: TcpStream) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.is_some() {
            return;
        }
        let Ok(stream) = stream.into_std() else { return };
        let mut fd = std::os::fd::OwnedFd::from(stream);
        if rustix::io::dup2(&self.listener, &mut fd).is_ok() {
            *held = Some(fd);
        }
    }
}

/// An admin connection's stream, whose descriptor goes back into the endpoint's reserve when
/// it closes, if the reserve was spent ([`Spare::take_back`]).
struct Returned {
    /// Always `Some` until dropped.
    stream: Option<TcpStream>,
    spare: std::sync::Weak<Spare>,
}

impl Returned {
    fn stream(&mut self) -> std::pin::Pin<&mut TcpStream> {
        std::pin::Pin::new(self.stream.as_mut().expect("taken only on drop"))
    }
}

impl Drop for Returned {
    fn drop(&mut self) {
        if let (Some(stream), Some(spare)) = (self.stream.take(), self.spare.upgrade()) {
            spare.take_back(stream);
        }
    }
}

impl tokio::io::AsyncRead for Returned {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Returned {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.stream().poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.stream().poll_shutdown(cx)
    }
}

impl crate::accept::Listen for Spare {
    type Stream = TcpStream;

    fn poll_accept(
        &self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<(TcpStream, SocketAddr)>> {
        use std::task::Poll;
        match self.listener.poll_accept(cx) {
            Poll::Ready(Err(e)) if out_of_descriptors(&e) && self.release() => {
                self.listener.poll_accept(cx)
            }
            Poll::Ready(Ok(accepted)) => {
                self.refill();
                Poll::Ready(Ok(accepted))
            }
            polled => polled,
        }
    }
}

/// Whether `e` says the process (`EMFILE`) or the system (`ENFILE`) has no descriptor to give
/// (the two of [`crate::is_local_exhaustion`]'s errors that a descriptor in reserve answers).
fn out_of_descriptors(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    matches!(Errno::from_io_error(e), Some(Errno::MFILE | Errno::NFILE))
}

/// Serves one admin connection, holding one of the [`MAX_ADMIN_CONNECTIONS`] slots until it
/// closes.
async fn serve_connection(
    state: Arc<Server>,
    stream: Returned,
    peer: SocketAddr,
    _slot: OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(state.respond(req, peer).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = tokio::time::sleep(MAX_CONNECTION_AGE) => {
            // Answer the request in progress, if any, then close; but not for ever.
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(CLOSE_GRACE, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::debug!(target: "lb::admin", %peer, "admin connection closed: too old and its request unfinished");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(target: "lb::admin", %peer, error = %e, "admin connection ended with an error");
    }
}

/// Warns about connections refused at [`MAX_ADMIN_CONNECTIONS`], at most once per
/// [`REFUSED_LOG_INTERVAL`].
#[derive(Debug, Default)]
struct RefusedLog {
    last: Option<Instant>,
    since_last: u64,
}

impl RefusedLog {
    fn refused(&mut self, peer: SocketAddr) {
        self.since_last += 1;
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < REFUSED_LOG_INTERVAL) {
            return;
        }
        tracing::warn!(
            target: "lb::admin",
            %peer,
            refused = self.since_last,
            limit = MAX_ADMIN_CONNECTIONS,
            "admin connection closed at once: too many admin connections open (at most one such warning per 10 s)"
        );
        self.last = Some(now);
        self.since_last = 0;
    }
}

/// What every admin request needs.
struct Server {
    handle: Handle,
    config: AdminConfig,
    registry: Registry,
}

/// What every answer says it comes from, so `lb ctl` can tell lb's endpoint from another
/// server on the port it was given.
pub const SERVER: &str = concat!("lb/", env!("CARGO_PKG_VERSION"));

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    headers.insert(hyper::header::SERVER, HeaderValue::from_static(SERVER));
    response
}

/// Compares without stopping at the first difference, so response time says nothing about how
/// much of a guessed token was right.
fn same_token(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

impl Server {
    async fn respond(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let changes_state = req.method() == Method::POST;
        if let Err(why) =
            guard::admit(req.uri(), req.headers(), &self.config.allowed_hosts, changes_state)
        {
            tracing::warn!(target: "lb::admin", %peer, method = %req.method(), path = req.uri().path(), reason = %why, "admin request refused");
            return text(StatusCode::FORBIDDEN, format!("error: {why}\n"));
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/metrics") => {
                let mut body = String::new();
                match prometheus_client::encoding::prometheus_text::encode(
                    &mut body,
                    &self.registry,
                ) {
                    Ok(()) => {
                        let mut r = text(StatusCode::OK, body);
                        r.headers_mut().insert(
                            CONTENT_TYPE,
                            HeaderValue::from_static(
                                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                            ),
                        );
                        r
                    }
                    Err(_) => {
                        text(StatusCode::INTERNAL_SERVER_ERROR, "error: encoding metrics failed\n")
                    }
                }
            }
            (&Method::GET | &Method::HEAD, "/stats") => {
                let mut json = StatsJson::from(&self.handle.stats());
                json.token_required = self.config.token.is_some();
                match serde_json::to_vec_pretty(&json) {
                    Ok(body) => {
                        let mut r = text(StatusCode::OK, body);
                        r.headers_mut()
                            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                        r
                    }
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e}\n")),
                }
            }
            (&Method::POST, "/command") => self.command(req, peer).await,
            (&Method::GET | &Method::HEAD, path) if dashboard::is_asset(path) => {
                dashboard::respond(path).unwrap_or_else(|| text(StatusCode::NOT_FOUND, ""))
            }
            (_, path) if dashboard::is_asset(path) => method_not_allowed("GET, HEAD"),
            (_, "/metrics" | "/stats") => method_not_allowed("GET, HEAD"),
            (_, "/command") => method_not_allowed("POST"),
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try GET / (the dashboard), GET /metrics, GET /stats or POST /command\n",
            ),
        }
    }

    async fn command(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        // `what-if` and `explain` also answer in JSON, for scripts; every other answer is text.
        let wants_json = req
            .headers()
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
        let authorized = self.config.token.as_ref().is_none_or(|token| {
            req.headers()
                .get(AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim_start().split_once(' '))
                // The scheme name is case-insensitive (RFC 9110, 11.1).
                .and_then(|(scheme, rest)| scheme.eq_ignore_ascii_case("bearer").then_some(rest))
                .is_some_and(|given| same_token(given.trim().as_bytes(), token.as_bytes()))
        });
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("error: a command body is at most {MAX_BODY} bytes\n"),
                )
            }
        };
        let Ok(line) = std::str::from_utf8(&body) else {
            return text(StatusCode::BAD_REQUEST, "error: the command is not UTF-8 text\n");
        };
        let line = line.trim();
        if line.lines().count() > 1 {
            return text(StatusCode::BAD_REQUEST, "error: send one command per request\n");
        }
        let command = match parse_logged(line) {
            Ok(command) => command,
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("error: {e}\n")),
        };
        // Reads are open, as GET /stats is; what changes something needs the token.
        if !authorized && command.changes_state() {
            tracing::warn!(target: "lb::admin", %peer, command = line, "command refused: missing or wrong bearer token");
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "error: this command needs Authorization: Bearer <token>\n",
            );
            r.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        tracing::debug!(target: "lb::admin", %peer, command = line, "remote command");
        match self.handle.execute_command(command).await {
            Ok(Reply::WhatIf(w)) if wants_json => json_response(&json::what_if(&w)),
            Ok(Reply::Explain(e)) if wants_json => json_response(&json::explain(&e)),
            Ok(reply) => text(StatusCode::OK, format!("{reply}\n")),
            Err(e) => text(StatusCode::BAD_REQUEST, format!("error: {e}\n")),
        }
    }
}

fn json_response(value: &serde_json::Value) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut r = text(StatusCode::OK, body);
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("error: {e}\n")),
    }
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, format!("error: use {allow}\n"));
    r.headers_mut().insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    r
}
