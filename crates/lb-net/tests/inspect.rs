//! The inspect stage over real sockets on loopback: TLS passthrough routed by SNI to real TLS
//! backends (each client verifying the certificate of the backend for the name it asked), the
//! PROXY protocol sent to backends (v1 and v2, IPv4 and IPv6) and accepted from clients.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lb_core::{Algorithm, Pool, PoolConfig};
use lb_net::inspect::proxy_header::{self, Version};
use lb_net::{
    bind_shared, Balancer, Handle, ListenerConfig, PoolSettings, ProxyConfig, Routing, ServerName,
    SniRoute, TcpConnector,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A self-signed certificate for `name`, as DER, with its key.
fn certificate(name: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    (certified.cert.der().clone(), key.into())
}

/// A TLS backend presenting a certificate for `name` that answers every handshake with
/// `name\n`. Returns its address and the certificate a client should trust.
async fn tls_backend(name: &'static str) -> (SocketAddr, CertificateDer<'static>, JoinHandle<()>) {
    let (cert, key) = certificate(name);
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (addr, task) = tcp_backend(move |stream| {
        let acceptor = acceptor.clone();
        async move {
            if let Ok(mut tls) = acceptor.accept(stream).await {
                let _ = tls.write_all(format!("{name}\n").as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        }
    })
    .await;
    (addr, cert, task)
}

/// Connects through the balancer with TLS, trusting only `trusted`, asking for `name` (and
/// sending it as SNI unless `sni` is false); returns the backend's greeting.
async fn tls_client(
    lb: SocketAddr,
    name: &str,
    trusted: &CertificateDer<'static>,
    sni: bool,
) -> std::io::Result<String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted.clone()).unwrap();
    let mut config =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.enable_sni = sni;
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(lb).await?;
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut tls = connector.connect(server_name, tcp).await?;
    let mut greeting = String::new();
    tls.read_to_string(&mut greeting).await?;
    Ok(greeting.trim_end().to_owned())
}

/// Adds a listener on 127.0.0.1:0 with `config`'s routing; returns its address.
fn listen(handle: &Handle, config: ListenerConfig) -> SocketAddr {
    let sockets = bind_shared("127.0.0.1:0".parse().unwrap(), 1).unwrap();
    let addr = sockets[0].local_addr().unwrap();
    handle.add_listener(config, sockets).unwrap();
    addr
}

fn names(list: &[&str]) -> Vec<ServerName> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_reach_the_backend_for_the_name_they_ask_without_decryption() {
    let (api, api_cert, t1) = tls_backend("api.example.com").await;
    let (org, org_cert, t2) = tls_backend("www.example.org").await;
    let (web, web_cert, t3) = tls_backend("default.example.net").await;
    let balancer = Balancer::empty(TcpConnector, ProxyConfig::default());
    let handle = balancer.handle();
    for (name, addr) in [("api", api), ("org", org), ("web", web)] {
        handle.add_pool(name, one_backend_pool(addr), PoolSettings::default()).unwrap();
    }
    let routing = Routing::Sni {
        routes: vec![
            SniRoute { names: names(&["api.example.com"]), pool: "api".into() },
            SniRoute { names: names(&["*.example.org"]), pool: "org".into() },
        ],
        default_pool: Some("web".into()),
    };
    let lb = listen(&handle, ListenerConfig { routing, ..ListenerConfig::to_pool("https", "web") });
    let task = tokio::spawn(balancer.supervise(std::future::pending()));

    // Each handshake completes only if the balancer reached the backend whose certificate the
    // client trusts for the name it asked: TLS is end to end.
    assert_eq!(
        tls_client(lb, "api.example.com", &api_cert, true).await.unwrap(),
        "api.example.com"
    );
    assert_eq!(
        tls_client(lb, "API.Example.COM", &api_cert, true).await.unwrap(),
        "api.example.com"
    );
    assert_eq!(
        tls_client(lb, "www.example.org", &org_cert, true).await.unwrap(),
        "www.example.org"
    );
    // No SNI: the default pool.
    assert_eq!(
        tls_client(lb, "default.example.net", &web_cert, false).await.unwrap(),
        "default.example.net"
    );
    // A name no route has: the default pool too (whose certificate then does not match).
    assert!(tls_client(lb, "other.example.com", &api_cert, true).await.is_err());
    // Garbage that starts like TLS: closed, counted, nothing reaches a backend.
    let mut garbage = TcpStream::connect(lb).await.unwrap();
    garbage.write_all(&[0x16, 0x03, 0x01, 0x00, 0x05, 0xff, 0xff, 0xff, 0xff, 0xff]).await.unwrap();
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest).await;
    assert!(rest.is_empty());
    eventually(Duration::from_secs(5), "the bad hello counted", || async {
        handle.stats().proxy.bad_hello == 1
    })
    .await;
    let listener = handle.stats().listeners.into_iter().find(|l| l.name == "https").unwrap();
    assert_eq!((listener.accepted, listener.bad_hello), (6, 1));
    assert_eq!(handle.stats().pool_named("api").unwrap().totals.connections, 2);
    handle.shutdown();
    task.await.unwrap();
    [t1, t2, t3].iter().for_each(JoinHandle::abort);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_routing_without_a_default_closes_what_it_cannot_route() {
    let (api, api_cert, t1) = tls_backend("api.example.com").await;
    let balancer = Balancer::empty(TcpConnector, ProxyConfig::default());
    let handle = balancer.handle();
    handle.add_pool("api", one_backend_pool(api), PoolSettings::default()).unwrap();
    let routing = Routing::Sni {
        routes: vec![SniRoute { names: names(&["api.example.com"]), pool: "api".into() }],
        default_pool: None,
    };
    let config = ListenerConfig {
        routing,
        inspect_timeout: Duration::from_millis(300),
        ..ListenerConfig::to_pool("https", "api")
    };
    let lb = listen(&handle, config);
    let task = tokio::spawn(balancer.supervise(std::future::pending()));
    assert!(tls_client(lb, "api.example.com", &api_cert, true).await.is_ok());
    // Another name: no route. Plain text, or silence past the inspect timeout: no usable hello.
    assert!(tls_client(lb, "www.example.com", &api_cert, true).await.is_err());
    let mut plain = TcpStream::connect(lb).await.unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(plain.read(&mut [0u8; 16]).await.unwrap_or(0), 0);
    let mut silent = TcpStream::connect(lb).await.unwrap();
    assert_eq!(silent.read(&mut [0u8; 16]).await.unwrap_or(0), 0, "closed after the timeout");
    eventually(Duration::from_secs(5), "refusals counted", || async {
        let p = handle.stats().proxy;
        p.no_route == 1 && p.bad_hello == 2
    })
    .await;
    handle.shutdown();
    task.await.unwrap();
    t1.abort();
}

/// A backend that reads a PROXY header and answers with the source address it carries (or
/// `none`), then `|`, then whatever the client sent after it until the client's end.
async fn proxy_aware_backend(bind: &str) -> (SocketAddr, JoinHandle<()>) {
    tcp_backend_at(bind, |mut s| async move {
        let mut buf = Vec::new();
        let (source, consumed) = loop {
            let mut chunk = [0u8; 512];
            let n = s.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&chunk[..n]);
            match proxy_header::parse(&buf) {
                proxy_header::Parse::Incomplete => continue,
                proxy_header::Parse::Done { header, consumed } => {
                    break (header.source(), consumed)
                }
                proxy_header::Parse::Invalid(e) => {
                    let _ = s.write_all(format!("invalid: {e}").as_bytes()).await;
                    return;
                }
            }
        };
        let mut rest = buf[consumed..].to_vec();
        let _ = s.read_to_end(&mut rest).await;
        let source = source.map_or("none".to_owned(), |a| a.to_string());
        let answer = format!("{source}|{}", String::from_utf8_lossy(&rest));
        let _ = s.write_all(answer.as_bytes()).await;
    })
    .await
}

/// Sends `bytes` through `lb`, half-closes, and reads the answer.
async fn exchange(lb: SocketAddr, bytes: &[u8]) -> (SocketAddr, String) {
    let mut s = TcpStream::connect(lb).await.unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(bytes).await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    (me, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backends_receive_the_client_address_in_a_proxy_header() {
    for (bind, version) in [
        ("127.0.0.1:0", Version::V1),
        ("127.0.0.1:0", Version::V2),
        ("[::1]:0", Version::V1),
        ("[::1]:0", Version::V2),
    ] {
        let Ok(probe) = TcpListener::bind(bind).await else {
            eprintln!("no {bind} here; skipped");
            continue;
        };
        drop(probe);
        let (backend, task) = proxy_aware_backend(bind).await;
        let balancer = Balancer::empty(TcpConnector, ProxyConfig::default());
        let handle = balancer.handle();
        let settings = PoolSettings { send_proxy: Some(version), ..PoolSettings::default() };
        handle.add_pool("p", one_backend_pool(backend), settings).unwrap();
        let listen_on = if bind.starts_with('[') { "[::1]:0" } else { "127.0.0.1:0" };
        let sockets = bind_shared(listen_on.parse().unwrap(), 1).unwrap();
        let lb = sockets[0].local_addr().unwrap();
        handle.add_listener(ListenerConfig::to_pool("in", "p"), sockets).unwrap();
        let run = tokio::spawn(balancer.supervise(std::future::pending()));
        let (me, answer) = exchange(lb, b"hello").await;
        assert_eq!(answer, format!("{me}|hello"), "{version:?} over {bind}");
        handle.shutdown();
        run.await.unwrap();
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accept_proxy_listener_takes_the_claimed_client_address_everywhere() {
    let (b1, t1) = proxy_aware_backend("127.0.0.1:0").await;
    let (b2, t2) = proxy_aware_backend("127.0.0.1:0").await;
    let balancer = Balancer::empty(TcpConnector, ProxyConfig::default());
    let handle = balancer.handle();
    let pool =
        Pool::new(PoolConfig { algorithm: Algorithm::IpHash, ..Default::default() }).unwrap();
    pool.add(b1, None).unwrap();
    pool.add(b2, None).unwrap();
    let settings = PoolSettings { send_proxy: Some(Version::V2), ..PoolSettings::default() };
    handle.add_pool("p", pool, settings).unwrap();
    let config = ListenerConfig {
        accept_proxy: true,
        inspect_timeout: Duration::from_millis(300),
        ..ListenerConfig::to_pool("from-nlb", "p")
    };
    let lb = listen(&handle, config);
    let run = tokio::spawn(balancer.supervise(std::future::pending()));
    // Two claimed clients, each sticky to its own backend by ip_hash, and the address passed on.
    let mut picks = std::collections::HashMap::new();
    for i in 0..2u8 {
        for _ in 0..3 {
            let claimed: SocketAddr = format!("198.51.100.{}:4000", 10 + i).parse().unwrap();
            let header =
                proxy_header::encode(Version::V1, claimed, "203.0.113.1:443".parse().unwrap());
            let mut bytes = header.clone();
            bytes.extend_from_slice(b"ping");
            let (_, answer) = exchange(lb, &bytes).await;
            assert_eq!(answer, format!("{claimed}|ping"));
            picks.entry(i).or_insert_with(Vec::new).push(answer);
        }
    }
    let stats = handle.stats();
    let per_backend: Vec<u64> =
        stats.pool_named("p").unwrap().backends.iter().map(|b| b.connections).collect();
    assert!(per_backend.iter().all(|&n| n % 3 == 0), "each client sticky: {per_backend:?}");
    // No header, a malformed one, or one that never completes: closed, no byte to a backend.
    for bad in [&b"ping"[..], &b"PROXY TCP9 x\r\n"[..], &b"PROXY TCP4 1.2.3.4"[..]] {
        let mut s = TcpStream::connect(lb).await.unwrap();
        s.write_all(bad).await.unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(bad));
    }
    eventually(Duration::from_secs(5), "bad headers counted", || async {
        handle.stats().proxy.bad_proxy == 3
    })
    .await;
    let total: u64 = handle.stats().pool_named("p").unwrap().totals.connections;
    assert_eq!(total, 6, "refused clients never reached a backend");
    handle.shutdown();
    run.await.unwrap();
    t1.abort();
    t2.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_can_start_with_a_local_proxy_header() {
    // An HTTP backend that answers only connections starting with a PROXY header.
    let (backend, task) = tcp_backend(|mut s| async move {
        let mut buf = vec![0u8; 1024];
        let mut len = 0;
        loop {
            let n = s.read(&mut buf[len..]).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            len += n;
            match proxy_header::parse(&buf[..len]) {
                proxy_header::Parse::Incomplete => continue,
                proxy_header::Parse::Done { header, consumed } => {
                    assert_eq!(header, proxy_header::Header::Local);
                    // Read the whole request first: closing with unread bytes would send a
                    // reset, which can reach the checker before the answer does.
                    while !buf[consumed..len].windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf[len..]).await {
                            Ok(n) if n > 0 => len += n,
                            _ => return,
                        }
                    }
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
                    return;
                }
                proxy_header::Parse::Invalid(_) => return,
            }
        }
    })
    .await;
    let check = |proxy_header| lb_net::HealthCheckConfig {
        interval: Duration::from_millis(30),
        kind: "http:/health".parse().unwrap(),
        proxy_header,
        ..Default::default()
    };
    let balancer = Balancer::empty(TcpConnector, ProxyConfig::default());
    let handle = balancer.handle();
    for (name, header) in [("with", Some(Version::V2)), ("without", None)] {
        let settings = PoolSettings { health: check(header), ..PoolSettings::default() };
        handle.add_pool(name, one_backend_pool(backend), settings).unwrap();
    }
    let run = tokio::spawn(balancer.supervise(std::future::pending()));
    eventually(Duration::from_secs(10), "checks have run", || async {
        handle.health_by_pool().iter().all(|p| p.backends[0].check.is_some())
    })
    .await;
    let health = handle.health_by_pool();
    assert_eq!(health[0].backends[0].check.as_ref().unwrap().result, Ok(()));
    assert!(health[1].backends[0].check.as_ref().unwrap().result.is_err());
    handle.shutdown();
    run.await.unwrap();
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_sending_its_header_when_shutdown_begins_is_served() {
    // An upgrade or SIGTERM while a client's PROXY header is on its way: the client was
    // accepted, so it is served within the grace period like any other.
    let (backend, task) = proxy_aware_backend("127.0.0.1:0").await;
    let balancer = Balancer::empty(TcpConnector, ProxyConfig::default());
    let handle = balancer.handle();
    let settings = PoolSettings { send_proxy: Some(Version::V1), ..PoolSettings::default() };
    handle.add_pool("p", one_backend_pool(backend), settings).unwrap();
    let config = ListenerConfig { accept_proxy: true, ..ListenerConfig::to_pool("in", "p") };
    let lb = listen(&handle, config);
    let run = tokio::spawn(balancer.supervise(std::future::pending()));
    let mut s = TcpStream::connect(lb).await.unwrap();
    s.write_all(b"PROXY TCP4 198.51.100.7 ").await.unwrap();
    eventually(Duration::from_secs(5), "the client accepted", || async {
        handle.stats().proxy.accepted == 1
    })
    .await;
    handle.shutdown();
    eventually(Duration::from_secs(5), "shutdown begun", || async { handle.is_shutting_down() })
        .await;
    s.write_all(b"203.0.113.1 4000 443\r\nping").await.unwrap();
    s.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "198.51.100.7:4000|ping");
    let report = run.await.unwrap();
    assert_eq!(report.cut, 0);
    task.abort();
}
