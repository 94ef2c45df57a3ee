//! The admin endpoint over real HTTP on 127.0.0.1: metrics, JSON stats, commands and the token.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use lb_core::Pool;
use lb_net::admin::{self, AdminConfig, StatsJson};
use lb_net::{Balancer, Behavior, Handle, HealthCheckConfig, MemoryConnector, ProxyConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A balancer with two in-memory backends (b1 accepts, b2 refuses) and its admin endpoint.
async fn setup(token: Option<&str>) -> (Balancer<MemoryConnector>, Handle, SocketAddr) {
    let pool = Pool::default();
    let connector = MemoryConnector::new();
    for i in 1..=2 {
        pool.add(mem_addr(i), None).unwrap();
        named_memory_backend(&connector, mem_addr(i), &format!("b{i}"));
    }
    connector.set_behavior(mem_addr(2), Behavior::Refuse);
    // Checks configured, so connect failures count against health, but never started (only
    // `supervise` runs them): health changes come from traffic alone.
    let health = HealthCheckConfig::default();
    let balancer = Balancer::new(pool, connector, ProxyConfig::default(), health);
    let handle = balancer.handle();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = AdminConfig { token: token.map(str::to_owned), allowed_hosts: Vec::new() };
    tokio::spawn(admin::run(listener, handle.clone(), config, std::future::pending()));
    (balancer, handle, addr)
}

/// Sends one HTTP/1.1 request as `lb ctl` does (`Host` the endpoint's address, and the
/// `X-LB-Admin` header) plus `headers`; returns status, headers (lower-case names) and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HashMap<String, String>, String) {
    let host = addr.to_string();
    let mut all = vec![("Host", host.as_str()), ("X-LB-Admin", "1")];
    all.extend_from_slice(headers);
    http_exactly(addr, method, path, &all, body).await
}

/// Sends one HTTP/1.1 request with exactly `headers` (and `Connection: close`,
/// `Content-Length`), as a browser or an attacker might.
async fn http_exactly(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HashMap<String, String>, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

/// Runs `n` in-memory clients through the balancer, each sending `ping` and reading the echo.
async fn traffic(balancer: &Balancer<MemoryConnector>, n: u32) {
    for i in 0..n {
        let (mut client, theirs) = memory_client();
        balancer
            .serve_connection(theirs, Some(SocketAddr::from(([192, 0, 2, 1], 1000 + i as u16))));
        read_line(&mut client).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"ping");
        // The client sees the end of stream a moment before the proxy's task has finished its
        // accounting (duration, bytes, open count); wait for that too, so counts are exact.
        let handle = balancer.handle();
        eventually(Duration::from_secs(10), "connection accounted", || async {
            handle.stats().proxy.open == 0
        })
        .await;
    }
}

/// A strict reading of the Prometheus text format (0.0.4): every line is a HELP, a TYPE or a
/// sample of a declared family with a valid name, well-formed labels and a numeric value.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    assert!(text.ends_with('\n'), "exposition ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and text");
            assert!(valid_name(name) && !help.is_empty(), "{line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(valid_name(name), "{line}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counters end in _total: {line}");
            }
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "declared twice: {line}"
            );
        } else {
            let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("numeric value: {line}"));
            let name = series.split('{').next().unwrap();
            assert!(valid_name(name), "{line}");
            if let Some(labels) = series.strip_prefix(name) {
                if !labels.is_empty() {
                    let inner = labels
                        .strip_prefix('{')
                        .and_then(|l| l.strip_suffix('}'))
                        .expect("labels in braces");
                    for pair in inner.split("\",") {
                        let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                        assert!(valid_name(k) && !v.contains('\n'), "{line}");
                    }
                }
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample of an undeclared family: {line}");
            assert!(samples.insert(series.to_owned(), value).is_none(), "duplicate series: {line}");
        }
    }
    samples
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_exactly() {
    let (balancer, _handle, admin) = setup(None).await;
    traffic(&balancer, 6).await;
    let (status, headers, body) = http(admin, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].starts_with("text/plain; version=0.0.4"), "{headers:?}");
    let m = parse_metrics(&body);
    let b1 = "pool=\"default\",backend=\"10.99.0.1:7000\"";
    let b2 = "pool=\"default\",backend=\"10.99.0.2:7000\"";
    // Round robin offers b2 to every other client; it refuses (a retry each time) until `fall`
    // (3) failures take it down, after which b1 takes everything.
    assert_eq!(m[&format!("lb_backend_connections_total{{{b1}}}")], 6.0);
    assert_eq!(m[&format!("lb_backend_connections_total{{{b2}}}")], 0.0);
    assert_eq!(m[&format!("lb_backend_connect_failures_total{{{b2}}}")], 3.0);
    assert_eq!(
        m[&format!("lb_backend_retries_total{{{b2}}}")],
        3.0,
        "each refusal was retried on b1"
    );
    assert_eq!(m[&format!("lb_backend_retries_total{{{b1}}}")], 0.0);
    assert_eq!(m[&format!("lb_backend_up{{{b2}}}")], 0.0);
    assert_eq!(m[&format!("lb_backend_up{{{b1}}}")], 1.0);
    // Each client sent 4 bytes and received the greeting (3) and the echo (4).
    assert_eq!(m[&format!("lb_backend_in_bytes_total{{{b1}}}")], 24.0);
    assert_eq!(m[&format!("lb_backend_out_bytes_total{{{b1}}}")], 42.0);
    assert_eq!(m[&format!("lb_backend_active_connections{{{b1}}}")], 0.0);
    assert_eq!(m[&format!("lb_backend_weight{{{b1}}}")], 1.0);
    assert_eq!(m[&format!("lb_backend_admin_state{{{b1},state=\"ready\"}}")], 1.0);
    assert_eq!(m[&format!("lb_backend_admin_state{{{b1},state=\"drain\"}}")], 0.0);
    assert_eq!(m["lb_connections_accepted_total"], 6.0);
    assert_eq!(m["lb_retries_total"], 3.0);
    assert_eq!(m["lb_connections_rejected_total"], 0.0);
    assert_eq!(m["lb_connections_no_backend_total"], 0.0);
    assert_eq!(m["lb_connections_open"], 0.0);
    assert_eq!(m["lb_backends{pool=\"default\"}"], 2.0);
    assert_eq!(m["lb_backends_available{pool=\"default\"}"], 1.0);
    assert_eq!(m["lb_pool_backup_active{pool=\"default\"}"], 0.0);
    assert_eq!(m["lb_pool_panic{pool=\"default\"}"], 0.0);
    assert_eq!(m[&format!("lb_backend_backup{{{b1}}}")], 0.0);
    assert_eq!(m["lb_algorithm{pool=\"default\",algorithm=\"round_robin\"}"], 1.0);
    assert_eq!(m["lb_connection_duration_seconds_count"], 6.0);
    assert_eq!(m["lb_connection_duration_seconds_bucket{le=\"+Inf\"}"], 6.0);
    assert_eq!(m["lb_backend_connect_duration_seconds_count"], 9.0, "6 connects and 3 refusals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_json_round_trips() {
    let (balancer, handle, admin) = setup(None).await;
    traffic(&balancer, 3).await;
    let (status, headers, body) = http(admin, "GET", "/stats", &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let mut got: StatsJson = serde_json::from_str(&body).unwrap();
    let mut expected = StatsJson::from(&handle.stats());
    got.uptime_seconds = 0.0;
    expected.uptime_seconds = 0.0;
    assert_eq!(got, expected);
    assert_eq!(got.backends[0].backend, "10.99.0.1:7000");
    // Round robin: b1, then b2 (refused, retried on b1), then b1 again (a retry takes no turn).
    assert_eq!(
        (
            got.backends[0].counters["total"],
            got.backends[1].counters["failures"],
            got.backends[1].state.as_str()
        ),
        (3, 1, "up")
    );
    // And back again: the JSON text is what serde writes for the parsed value.
    let again: StatsJson = serde_json::from_str(&serde_json::to_string(&got).unwrap()).unwrap();
    assert_eq!(again, got);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_answer_like_the_repl_and_bad_ones_change_nothing() {
    let (_balancer, handle, admin) = setup(None).await;
    let (status, _, body) = http(admin, "POST", "/command", &[], "drain 10.99.0.1:7000").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "draining 10.99.0.1:7000: no new connections, open ones continue\n")
    );
    let before = handle.stats().pool().clone();
    for bad in [
        "frobnicate",
        "add 10.99.0.9",
        "weight 10.99.0.1:7000 0",
        "remove 10.99.0.9:1",
        "add 10.99.0.1:7000",
    ] {
        let (status, _, body) = http(admin, "POST", "/command", &[], bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.starts_with("error: "), "{body}");
        assert_eq!(*handle.stats().pool(), before, "{bad} changed nothing");
    }
    let (status, _, body) = http(admin, "POST", "/command", &[], "stats").await;
    assert_eq!(status, 200);
    assert_eq!(body.trim_end().lines().count(), handle.stats().to_string().lines().count());
    assert_eq!(http(admin, "GET", "/command", &[], "").await.0, 405);
    assert_eq!(http(admin, "POST", "/metrics", &[], "").await.0, 405);
    assert_eq!(http(admin, "GET", "/nope", &[], "").await.0, 404);
    // HEAD is GET without the body, for probes that only want the status.
    for path in ["/metrics", "/stats"] {
        let (status, headers, body) = http(admin, "HEAD", path, &[], "").await;
        assert_eq!((status, body.as_str()), (200, ""), "{path}");
        assert!(headers.contains_key("content-type"), "{path}");
    }
    let (status, headers, _) = http(admin, "DELETE", "/stats", &[], "").await;
    assert_eq!((status, headers.get("allow").map(String::as_str)), (405, Some("GET, HEAD")));
    let (status, _, _) = http(admin, "POST", "/command", &[], "stats\nquit").await;
    assert_eq!(status, 400, "one command per request");
    assert!(!handle.is_shutting_down());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_enforced_on_commands_only() {
    let (_balancer, handle, admin) = setup(Some("s3cret")).await;
    let post = |headers: &'static [(&'static str, &'static str)], command: &'static str| {
        http(admin, "POST", "/command", headers, command)
    };
    let drain = "drain 10.99.0.1:7000";
    let (status, headers, _) = post(&[], drain).await;
    assert_eq!(status, 401);
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(post(&[("Authorization", "Bearer wrong")], drain).await.0, 401);
    assert_eq!(handle.stats().pool().backends[0].state(), "up", "refused commands change nothing");
    assert_eq!(post(&[("Authorization", "Bearer s3cret")], drain).await.0, 200);
    assert_eq!(handle.stats().pool().backends[0].state(), "drain");
    // The scheme name is case-insensitive; a wrong scheme is refused.
    let enable = "enable 10.99.0.1:7000";
    assert_eq!(post(&[("Authorization", "bearer s3cret")], enable).await.0, 200);
    assert_eq!(post(&[("Authorization", "Basic s3cret")], enable).await.0, 401);
    assert_eq!(http(admin, "GET", "/metrics", &[], "").await.0, 200, "scrapes need no token");
    // Commands that only read need no token either, like GET /stats; the answer says it is lb.
    for read in ["stats", "health", "help", "algorithm"] {
        let (status, headers, _) = http(admin, "POST", "/command", &[], read).await;
        assert_eq!(status, 200, "{read}");
        assert!(headers["server"].starts_with("lb/"), "{headers:?}");
    }
    assert_eq!(http(admin, "GET", "/stats", &[], "").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_post_from_a_web_page_is_refused() {
    let (_balancer, handle, admin) = setup(None).await;
    let host = admin.to_string();
    // What a page on another site can send without a preflight: a "simple" POST.
    let simple = [
        ("Host", host.as_str()),
        ("Origin", "http://evil.example"),
        ("Content-Type", "text/plain;charset=UTF-8"),
    ];
    let (status, _, body) =
        http_exactly(admin, "POST", "/command", &simple, "drain 10.99.0.1:7000").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.starts_with("error: cross-site request refused"), "{body}");
    // Without an Origin (older browsers, forms in some modes) the missing X-LB-Admin header
    // gives it away.
    let (status, _, body) =
        http_exactly(admin, "POST", "/command", &simple[..1], "drain 10.99.0.1:7000").await;
    assert_eq!(status, 403);
    assert!(body.contains("X-LB-Admin"), "{body}");
    // A browser's own label for a request from another site.
    let fetched = [("Host", host.as_str()), ("Sec-Fetch-Site", "cross-site"), ("X-LB-Admin", "1")];
    assert_eq!(
        http_exactly(admin, "POST", "/command", &fetched, "drain 10.99.0.1:7000").await.0,
        403
    );
    assert_eq!(handle.stats().pool().backends[0].state(), "up", "nothing was drained");
    // A program sending the header (lb ctl, curl -H) works; so does the endpoint's own page.
    let own_page = [("Origin", &*format!("http://{host}")), ("Sec-Fetch-Site", "same-origin")];
    let (status, _, body) =
        http(admin, "POST", "/command", &own_page, "drain 10.99.0.1:7000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(handle.stats().pool().backends[0].state(), "drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_rebinding_page_cannot_read_or_command() {
    let (_balancer, handle, admin) = setup(None).await;
    let rebound = format!("rebind.evil.example:{}", admin.port());
    for (method, path) in [("GET", "/stats"), ("GET", "/metrics"), ("POST", "/command")] {
        let headers = [("Host", rebound.as_str()), ("X-LB-Admin", "1")];
        let (status, _, body) =
            http_exactly(admin, method, path, &headers, "drain 10.99.0.1:7000").await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        assert!(body.contains("admin-allowed-hosts") && !body.contains("backends"), "{body}");
    }
    assert_eq!(handle.stats().pool().backends[0].state(), "up");
    for host in [admin.to_string(), format!("localhost:{}", admin.port())] {
        let (status, _, _) = http_exactly(admin, "GET", "/stats", &[("Host", &host)], "").await;
        assert_eq!(status, 200, "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_the_operator_allowed_are_answered() {
    let pool = Pool::default();
    let balancer = Balancer::new(
        pool,
        MemoryConnector::new(),
        ProxyConfig::default(),
        HealthCheckConfig::default(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let config = AdminConfig {
        token: None,
        allowed_hosts: vec!["lb1.internal".parse().unwrap(), "*.corp.example".parse().unwrap()],
    };
    tokio::spawn(admin::run(listener, balancer.handle(), config, std::future::pending()));
    for (host, status) in [
        ("lb1.internal:9090", 200),
        ("LB1.INTERNAL", 200),
        ("ops.corp.example", 200),
        ("corp.example", 403),
        ("lb2.internal", 403),
    ] {
        assert_eq!(
            http_exactly(admin, "GET", "/stats", &[("Host", host)], "").await.0,
            status,
            "{host}"
        );
    }
}

/// Sends `GET path` on a kept-alive connection and reads one answer: status and body.
async fn get_kept_alive(s: &mut TcpStream, path: &str) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before a whole answer");
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8(raw[..head_end].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(str::to_owned))
        .expect("a content-length")
        .trim()
        .parse()
        .unwrap();
    let mut body = raw[head_end..].to_vec();
    while body.len() < length {
        let mut buf = vec![0u8; length - body.len()];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed in the body");
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(body.len(), length, "nothing beyond the answer");
    (status, String::from_utf8(body).unwrap())
}

/// Reads until the server closes the connection; returns what it sent. A reset counts as closed.
/// Fails the test if the server keeps the connection open for 100 s (virtual time in the paused
/// tests, where that is longer than any of the admin endpoint's limits).
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read_all = async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(100), read_all)
        .await
        .expect("the server closes the connection");
    got
}

/// Reads until the server closes the connection, and fails the test unless that was `limit`
/// after `since`, within a second; returns what the server sent.
async fn closed_at(s: &mut TcpStream, since: tokio::time::Instant, limit: Duration) -> Vec<u8> {
    let got = read_until_closed(s).await;
    let waited = since.elapsed();
    assert!(waited >= limit && waited < limit + Duration::from_secs(1), "closed after {waited:?}");
    got
}

// Paused time: the runtime jumps to the next timer whenever every task waits, so these wait
// for the server's timeouts without taking that long, and measure them exactly.

#[tokio::test(start_paused = true)]
async fn a_partial_request_is_closed_after_the_header_timeout() {
    let (_balancer, _handle, admin) = setup(None).await;
    let start = tokio::time::Instant::now();
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /stats HTTP/1.1\r\n").await.unwrap();
    closed_at(&mut s, start, admin::HEADER_READ_TIMEOUT).await;
}

#[tokio::test(start_paused = true)]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let (_balancer, _handle, admin) = setup(None).await;
    let mut s = TcpStream::connect(admin).await.unwrap();
    assert_eq!(get_kept_alive(&mut s, "/stats").await.0, 200);
    let answered = tokio::time::Instant::now();
    assert_eq!(closed_at(&mut s, answered, admin::HEADER_READ_TIMEOUT).await, b"");
}

#[tokio::test(start_paused = true)]
async fn a_connection_trickling_a_body_is_closed_at_the_age_limit() {
    let (_balancer, handle, admin) = setup(None).await;
    let start = tokio::time::Instant::now();
    let mut s = TcpStream::connect(admin).await.unwrap();
    // A whole head, then 5 of the 100 body bytes announced, then nothing: only the age limit
    // (and the grace for the unfinished request) ends this.
    s.write_all(b"POST /command HTTP/1.1\r\nHost: 127.0.0.1\r\nX-LB-Admin: 1\r\nContent-Length: 100\r\n\r\ndrain")
        .await
        .unwrap();
    closed_at(&mut s, start, admin::MAX_CONNECTION_AGE + admin::CLOSE_GRACE).await;
    assert!(handle.stats().pool().backends.iter().all(|b| b.state() == "up"), "nothing ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once_and_the_others_keep_working() {
    let (_balancer, _handle, admin) = setup(None).await;
    // Fill every slot with a kept-alive connection that has been answered once, so each is
    // known to be accepted and open.
    let mut open = Vec::new();
    for _ in 0..admin::MAX_ADMIN_CONNECTIONS {
        let mut s = TcpStream::connect(admin).await.unwrap();
        assert_eq!(get_kept_alive(&mut s, "/stats").await.0, 200);
        open.push(s);
    }
    // One more: closed without an answer (a request sent on it may meet a reset).
    let mut extra = TcpStream::connect(admin).await.unwrap();
    let _ = extra.write_all(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await;
    assert_eq!(read_until_closed(&mut extra).await, b"", "refused without an answer");
    // The earlier ones still work, and the refusal is counted.
    let (status, body) = get_kept_alive(&mut open[0], "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(parse_metrics(&body)["lb_admin_connections_rejected_total"], 1.0);
    let last = open.last_mut().unwrap();
    assert_eq!(get_kept_alive(last, "/stats").await.0, 200);
    // Closing one frees its slot for a new connection (once the server has seen the close).
    drop(open.pop());
    eventually(Duration::from_secs(5), "a freed slot is reused", || async {
        let mut s = TcpStream::connect(admin).await.unwrap();
        let _ = s
            .write_all(b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await;
        read_until_closed(&mut s).await.starts_with(b"HTTP/1.1 200")
    })
    .await;
}

/// A backend removed while connections are open and added again at once: the metrics keep one
/// series per address (the two merged), `/stats` lists both (the old one as removed), and once
/// the old connections end no total goes backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_and_add_with_open_connections_keeps_series_unique_and_totals_whole() {
    let (balancer, handle, admin) = setup(None).await;
    let b1 = "pool=\"default\",backend=\"10.99.0.1:7000\"";
    let post = |command: &'static str| async move {
        let (status, _, body) = http(admin, "POST", "/command", &[], command).await;
        assert_eq!(status, 200, "{command}: {body}");
    };
    post("remove 10.99.0.2:7000").await;
    traffic(&balancer, 2).await;
    // Four connections held open to b1.
    let mut held = Vec::new();
    for i in 0..4u16 {
        let (mut client, theirs) = memory_client();
        balancer.serve_connection(theirs, Some(SocketAddr::from(([192, 0, 2, 2], 2000 + i))));
        assert_eq!(read_line(&mut client).await.unwrap(), "b1");
        held.push(client);
    }
    post("remove 10.99.0.1:7000").await;
    post("add 10.99.0.1:7000").await;

    let (status, _, body) = http(admin, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    let m = parse_metrics(&body); // rejects a repeated series
    assert_eq!(m[&format!("lb_backend_connections_total{{{b1}}}")], 6.0, "old and new summed");
    assert_eq!(m[&format!("lb_backend_picks_total{{{b1}}}")], 6.0);
    assert_eq!(m[&format!("lb_backend_active_connections{{{b1}}}")], 4.0);
    assert_eq!(m[&format!("lb_backend_up{{{b1}}}")], 1.0, "from the backend in the pool");
    assert_eq!(m[&format!("lb_backend_admin_state{{{b1},state=\"ready\"}}")], 1.0);
    assert_eq!(m["lb_backends{pool=\"default\"}"], 1.0);
    assert!(!body.contains("10.99.0.2:7000"), "a removed backend with nothing open is not listed");

    let (_, _, body) = http(admin, "GET", "/stats", &[], "").await;
    let json: StatsJson = serde_json::from_str(&body).unwrap();
    let rows: Vec<(&str, &str, u64, u64)> = json
        .backends
        .iter()
        .map(|b| (b.backend.as_str(), b.state.as_str(), b.counters["active"], b.counters["total"]))
        .collect();
    // The backend added again has had no health result yet: `init`.
    assert_eq!(rows, [("10.99.0.1:7000", "init", 0, 0), ("10.99.0.1:7000", "removed", 4, 6)]);
    assert_eq!((json.totals.counters["total"], json.totals.counters["active"]), (6, 4));
    let table = handle.stats().to_string();
    assert_eq!(table.lines().filter(|l| l.starts_with("10.99.0.1:7000")).count(), 2, "{table}");

    // The old connections end: the old backend's record goes, its counts stay in the totals.
    drop(held);
    eventually(Duration::from_secs(10), "old connections accounted", || async {
        let s = handle.stats();
        s.proxy.open == 0 && s.pool().backends.len() == 1
    })
    .await;
    let (_, _, body) = http(admin, "GET", "/stats", &[], "").await;
    let json: StatsJson = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            json.totals.counters["total"],
            json.totals.counters["picks"],
            json.totals.counters["active"]
        ),
        (6, 6, 0)
    );
    assert_eq!(
        json.totals.counters["total"], json.clients.accepted,
        "every accepted client is counted"
    );
    assert_eq!((json.retired.backends, json.retired.counters["total"]), (2, 6));
    let table = handle.stats().to_string();
    let total_row = table.lines().find(|l| l.starts_with("TOTAL")).unwrap();
    assert_eq!(total_row.split_whitespace().nth(2), Some("6"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("RETIRED")), "{table}");
    let (_, _, body) = http(admin, "GET", "/metrics", &[], "").await;
    let m = parse_metrics(&body);
    // The per-backend series now shows the new backend alone: a counter reset to Prometheus.
    assert_eq!(m[&format!("lb_backend_connections_total{{{b1}}}")], 0.0);
    assert_eq!(m[&format!("lb_backend_active_connections{{{b1}}}")], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_is_served_with_a_strict_policy_and_guarded_like_stats() {
    let (_balancer, _handle, admin) = setup(None).await;
    for (path, kind) in [
        ("/", "text/html; charset=utf-8"),
        ("/dashboard.js", "text/javascript; charset=utf-8"),
        ("/dashboard.css", "text/css; charset=utf-8"),
    ] {
        let (status, headers, body) = http(admin, "GET", path, &[], "").await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(headers["content-type"], kind);
        let csp = &headers["content-security-policy"];
        assert!(csp.starts_with("default-src 'none'; script-src 'self';"), "{csp}");
        assert!(csp.contains("connect-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["cache-control"], "no-cache");
        assert!(!body.is_empty());
    }
    // A browser typing the address sends no Origin; the page's own requests are same-origin.
    let host = admin.to_string();
    let own = format!("http://{admin}");
    let page =
        [("Host", host.as_str()), ("Origin", own.as_str()), ("Sec-Fetch-Site", "same-origin")];
    assert_eq!(http_exactly(admin, "GET", "/stats", &page, "").await.0, 200);
    // The guard applies to the page as to /stats: another site, or a rebound name, is refused.
    let foreign = [("Host", host.as_str()), ("Origin", "http://evil.example")];
    assert_eq!(http_exactly(admin, "GET", "/", &foreign, "").await.0, 403);
    let rebound = format!("rebind.evil.example:{}", admin.port());
    assert_eq!(http_exactly(admin, "GET", "/", &[("Host", rebound.as_str())], "").await.0, 403);
    let (status, headers, _) = http(admin, "POST", "/", &[], "drain 10.99.0.1:7000").await;
    assert_eq!((status, headers.get("allow").map(String::as_str)), (405, Some("GET, HEAD")));
    let (_, _, body) = http(admin, "GET", "/nope", &[], "").await;
    assert!(body.contains("GET / (the dashboard)"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_json_keeps_recent_events_and_says_whether_commands_need_a_token() {
    let (balancer, _handle, admin) = setup(Some("s3cret")).await;
    let stats = |admin| async move {
        let (status, _, body) = http(admin, "GET", "/stats", &[], "").await;
        assert_eq!(status, 200);
        serde_json::from_str::<StatsJson>(&body).unwrap()
    };
    let got = stats(admin).await;
    assert!(got.token_required);
    assert!(got.events.is_empty());
    // b2 refuses: three failed connects take it down (from traffic, no checker running).
    traffic(&balancer, 6).await;
    let auth = [("Authorization", "Bearer s3cret")];
    assert_eq!(http(admin, "POST", "/command", &auth, "drain 10.99.0.1:7000").await.0, 200);
    // The drain's end (nothing was open) is an event of its own, soon after.
    eventually(Duration::from_secs(10), "the drain's event", || async {
        stats(admin).await.events.iter().any(|e| e.kind == "drain")
    })
    .await;
    assert_eq!(http(admin, "POST", "/command", &auth, "remove 10.99.0.9:1").await.0, 400);
    // Reads are not events.
    assert_eq!(http(admin, "POST", "/command", &[], "stats").await.0, 200);
    let got = stats(admin).await;
    let events: Vec<(&str, &str)> =
        got.events.iter().map(|e| (e.kind.as_str(), e.text.as_str())).collect();
    assert_eq!(
        events,
        [
            (
                "health-down",
                "backend 10.99.0.2:7000 is down (was up): 3 consecutive failures, last: \
                 connection refused"
            ),
            (
                "command",
                "drain 10.99.0.1:7000: draining 10.99.0.1:7000: no new connections, open ones \
                 continue"
            ),
            ("drain", "drain of 10.99.0.1:7000: emptied"),
            ("command-failed", "remove 10.99.0.9:1: no backend 10.99.0.9:1 in the pool"),
        ]
    );
    assert_eq!(got.events.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(got.events[0].pool.as_deref(), Some("default"));
    assert!(got.events.windows(2).all(|w| w[0].uptime_seconds <= w[1].uptime_seconds));
    assert!(got.events[0].time.ends_with('Z'), "RFC 3339, UTC: {}", got.events[0].time);
    // The down backend says why; nothing was checked (no checker runs here).
    let b2 = &got.backends[1];
    assert_eq!(b2.state, "down");
    assert!(b2.reason.as_deref().is_some_and(|r| r.contains("connection refused")), "{b2:?}");
    assert_eq!((b2.check_us, b2.check_error.as_deref()), (None, None));
    let (_, _, admin_open) = setup(None).await;
    assert!(!stats(admin_open).await.token_required);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_json_has_each_backends_last_check_time_and_error() {
    let (up, _up) = tcp_named_backend("up").await;
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let pool = Pool::default();
    pool.add(up, None).unwrap();
    pool.add(dead, None).unwrap();
    let health = HealthCheckConfig { interval: Duration::from_millis(20), ..Default::default() };
    let (_lb, handle, task) = start(pool, ProxyConfig::default(), health).await;
    eventually(Duration::from_secs(10), "both backends checked", || async {
        let json = StatsJson::from(&handle.stats());
        json.backends.iter().all(|b| b.check_us.is_some())
    })
    .await;
    let json = StatsJson::from(&handle.stats());
    let (b_up, b_dead) = (&json.backends[0], &json.backends[1]);
    assert!(b_up.check_us.is_some_and(|us| us < 1_000_000), "{b_up:?}");
    assert_eq!(b_up.check_error, None);
    assert!(b_dead.check_error.as_deref().is_some_and(|e| e.contains("refused")), "{b_dead:?}");
    stop(handle, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_if_and_explain_answer_in_json_when_asked_and_need_no_token() {
    let (_balancer, _handle, admin) = setup(Some("s3cret")).await;
    let json = [("Accept", "application/json")];
    let (status, headers, body) =
        http(admin, "POST", "/command", &json, "what-if remove 10.99.0.2:7000").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers.get("content-type").map(String::as_str), Some("application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["pool"], "default");
    let moved = v["moved_share"].as_f64().unwrap();
    assert!((0.4..0.6).contains(&moved), "one of two backends removed: about half moves: {v}");
    assert_eq!(v["backends"].as_array().unwrap().len(), 2);
    assert_eq!(v["backends"][1]["share_after"], 0.0);
    let (status, _, body) = http(admin, "POST", "/command", &json, "explain 192.0.2.7").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["algorithm"], "round_robin");
    assert!(v["chosen"].as_str().is_some_and(|c| c.starts_with("10.99.0.")), "{v}");
    // Without the header: the text the prompt prints.
    let (_, _, body) = http(admin, "POST", "/command", &[], "explain 192.0.2.7").await;
    assert!(body.starts_with("explain 192.0.2.7 (pool default): next connection -> "), "{body}");
}
