//! What inspecting a new connection costs, before any backend is chosen: reading the TLS
//! ClientHello's server name (SNI routing, tls-parser) from real first flights, and reading a
//! PROXY protocol header (v1 text, v2 binary). `cargo bench -p lb-benches --bench inspect`.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{criterion_main, Criterion};
use lb_net::inspect::{client_hello, proxy_header};

/// Real first flights, captured as testdata/client_hello/README.md says.
const HELLOS: [(&str, &[u8]); 2] = [
    ("chromium-156", include_bytes!("../../crates/lb-net/testdata/client_hello/chromium-156.bin")),
    (
        "openssl-3.0-tls13",
        include_bytes!("../../crates/lb-net/testdata/client_hello/openssl-3.0-tls13.bin"),
    ),
];

pub(crate) fn inspect(c: &mut Criterion) {
    let mut group = c.benchmark_group("inspect");
    for (name, hello) in HELLOS {
        assert!(matches!(client_hello::parse(hello), client_hello::Parse::Done(_)), "{name}");
        group.bench_function(format!("client_hello/{name} ({} bytes)", hello.len()), |b| {
            b.iter(|| client_hello::parse(black_box(hello)))
        });
    }
    let source: SocketAddr = "198.51.100.7:40112".parse().unwrap();
    let destination: SocketAddr = "203.0.113.1:443".parse().unwrap();
    for version in [proxy_header::Version::V1, proxy_header::Version::V2] {
        let header = proxy_header::encode(version, source, destination);
        assert!(matches!(proxy_header::parse(&header), proxy_header::Parse::Done { .. }));
        group.bench_function(format!("proxy_header/{version:?}"), |b| {
            b.iter(|| proxy_header::parse(black_box(&header)))
        });
    }
    group.finish();
}

#[allow(missing_docs)] // the macro generates an undocumented public function
mod group {
    criterion::criterion_group!(benches, super::inspect);
}
criterion_main!(group::benches);
