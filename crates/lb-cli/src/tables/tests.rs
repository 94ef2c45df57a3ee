use super::*;
use crate::config::parse;
use lb_core::Algorithm;
use std::time::Duration;

fn err(text: &str) -> String {
    let e = parse("lb.toml", text).unwrap_err();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

/// Two pools (lines 1-8) and what follows.
fn two_pools(rest: &str) -> String {
    format!(
        "[[pool]]\nname = \"web\"\nalgorithm = \"least_connections\"\nbackend = [{{ address = \
             \"10.0.0.5:443\" }}]\n\n[[pool]]\nname = \"db\"\nbackend = [{{ address = \
             \"10.0.0.9:5432\" }}]\n{rest}"
    )
}

#[test]
fn pools_and_listeners_parse_to_what_is_written() {
    let file = parse(
            "lb.toml",
            &two_pools(
                r#"health-check = "http:/healthz"

[[pool]]
name = "mq"
[[pool.backend]]
address = "10.0.0.10:5672"
[[pool.backend]]
address = "10.0.0.11:5672"
weight = 2
state = "drain"

[[listen]]
address = "0.0.0.0:443"
name = "https"
routes = [{ sni = ["API.example.com", "*.example.org"], pool = "db" }, { sni = "x.example", pool = "web" }]
default-pool = "web"
accept-proxy = true
inspect-timeout = "2s"

[[listen]]
address = "[::1]:5432"
pool = "db"
"#,
            ),
        )
        .unwrap();
    assert_eq!(file.pool_names(), ["web", "db", "mq"]);
    let settings = |i: usize| &file.pools[i].value.settings;
    assert_eq!(settings(0).algorithm, Some(Algorithm::LeastConnections));
    assert_eq!(settings(0).health_check, None);
    assert!(settings(1).health_check.is_some());
    let backends = settings(2).backends.as_ref().unwrap();
    assert_eq!(backends.len(), 2);
    assert_eq!((backends[1].weight, backends[1].state), (Some(2), lb_core::AdminState::Drain));
    let https = &file.listeners[0].value;
    assert_eq!(https.address.value.to_string(), "0.0.0.0:443");
    assert_eq!(https.config.name, "https");
    assert!(https.config.accept_proxy);
    assert_eq!(https.config.inspect_timeout, Duration::from_secs(2));
    let Routing::Sni { routes, default_pool } = &https.config.routing else {
        panic!("{:?}", https.config.routing)
    };
    let route = |i: usize| {
        let names: Vec<String> = routes[i].names.iter().map(ToString::to_string).collect();
        (names, routes[i].pool.as_str())
    };
    assert_eq!(route(0), (vec!["api.example.com".into(), "*.example.org".into()], "db"));
    assert_eq!(route(1), (vec!["x.example".into()], "web"));
    assert_eq!(default_pool.as_deref(), Some("web"));
    // The default name is the address as written; the defaults are lb-net's.
    let db_in = &file.listeners[1].value;
    assert_eq!(db_in.config, ListenerConfig::to_pool("[::1]:5432", "db"));
    assert_eq!(db_in.address.value, Target { host: "::1".into(), port: 5432 });
}

#[test]
fn each_rule_is_one_line_naming_file_line_and_key() {
    let listen =
        |body: &str| two_pools(&format!("\n[[listen]]\naddress = \"0.0.0.0:443\"\n{body}"));
    for (text, expected) in [
            (
                listen("pool = \"wbe\"\n"),
                "lb.toml line 12: listen.pool: no pool named \"wbe\" (pools: web, db)".to_owned(),
            ),
            (
                listen("routes = [{ sni = [\"a.example\"], pool = \"nope\" }]\n"),
                "lb.toml line 12: listen.routes.pool: no pool named \"nope\" (pools: web, db)".into(),
            ),
            (
                listen("routes = [{ sni = [\"a.example\"], pool = \"web\" }]\ndefault-pool = \"x\"\n"),
                "lb.toml line 13: listen.default-pool: no pool named \"x\" (pools: web, db)".into(),
            ),
            (
                listen("pool = \"web\"\nroutes = [{ sni = [\"a.example\"], pool = \"db\" }]\n"),
                "lb.toml line 13: listen.routes: give pool = \"NAME\" or routes, not both (routes choose a pool by TLS server name, and default-pool takes the rest)".into(),
            ),
            (
                listen("accept-proxy = false\n"),
                "lb.toml line 10: listen: neither pool nor routes: give pool = \"NAME\" (every connection to that pool) or routes = [{ sni = [\"NAME\"], pool = \"POOL\" }]".into(),
            ),
            (
                listen("pool = \"web\"\ndefault-pool = \"db\"\n"),
                "lb.toml line 13: listen.default-pool: default-pool goes with routes; with pool = \"NAME\" every connection goes to that pool".into(),
            ),
            (
                listen("routes = []\n"),
                "lb.toml line 12: listen.routes: the list is empty: give at least one route, or pool = \"NAME\"".into(),
            ),
            (
                listen("routes = [{ sni = [\"a..b\"], pool = \"web\" }]\n"),
                "lb.toml line 12: listen.routes.sni: invalid server name \"a..b\": a name is letters, digits, '-' and '_' in dot-separated labels; expected a DNS name such as api.example.com or *.example.org".into(),
            ),
            (
                listen("routes = [{ sni = [], pool = \"web\" }]\n"),
                "lb.toml line 12: listen.routes.sni: the list is empty: give at least one server name".into(),
            ),
            (
                listen("routes = [{ sni = [\"a.example\"] }]\n"),
                "lb.toml line 12: listen.routes: missing key `pool`: each route needs sni = [\"NAME\", ...] and pool = \"POOL\"".into(),
            ),
            (
                listen("pool = \"web\"\nadress = \"x\"\n"),
                "lb.toml line 13: listen: unknown key `adress`, expected one of `address`, `name`, `pool`, `routes`, `default-pool`, `accept-proxy`, `inspect-timeout`, `allow`, `deny`, `max-connections-per-client`, `max-connection-rate-per-client`, `congestion-control`".into(),
            ),
            (
                listen("routes = [{ sni = [\"a.example\"], pol = \"web\" }]\n"),
                "lb.toml line 12: listen.routes: unknown key `pol`, expected one of `sni`, `pool`".into(),
            ),
            (
                listen("pool = \"web\"\nalgorithm = \"p2c\"\n"),
                "lb.toml line 13: listen: `algorithm` is a pool's key: set it in a [[pool]] table, or at the top level (before any table) for every pool".into(),
            ),
            (
                listen("pool = \"web\"\ninspect-timeout = \"0s\"\n"),
                "lb.toml line 13: listen.inspect-timeout: \"0s\" is zero: this duration must be positive".into(),
            ),
            (
                two_pools("log-file = \"x.log\"\n"),
                "lb.toml line 9: pool: `log-file` is a top-level key, not a pool's: it sets the whole process; write it before the first table".into(),
            ),
            (
                two_pools("port = 80\n"),
                "lb.toml line 9: pool: `port` is a top-level key, for the one listener of a file without [[listen]] tables; a [[listen]] table takes address = \"HOST:PORT\"".into(),
            ),
            (
                two_pools("retires = 1\n"),
                "lb.toml line 9: pool: unknown key `retires`, expected one of `name`, `algorithm`, `backend`, `health-interval`, `health-timeout`, `rise`, `fall`, `health-check`, `panic-threshold`, `slow-start`, `hash-balance-factor`, `connect-timeout`, `idle-timeout`, `max-connections-per-backend`, `retries`, `client-fin-timeout`, `server-fin-timeout`, `server-timeout`, `retry-on-empty`, `observe-empty`, `send-proxy`, `check-send-proxy`, `discover`, `resolver`, `dns-min-refresh`, `dns-max-refresh`".into(),
            ),
            (
                two_pools("discover = \"dns:app\"\n"),
                "lb.toml line 9: pool.discover: invalid discover \"dns:app\": expected dns:HOST:PORT, e.g. dns:app.internal:8080".into(),
            ),
            (
                two_pools("discover = \"consul:web\"\n"),
                "lb.toml line 9: pool.discover: invalid discover \"consul:web\": expected dns:HOST:PORT (every A/AAAA address of HOST, on PORT) or srv:NAME (SRV records, e.g. srv:_http._tcp.web.service.consul)".into(),
            ),
            (
                two_pools("discover = \"dns:app.internal:99999\"\n"),
                "lb.toml line 9: pool.discover: invalid discover \"dns:app.internal:99999\": port \"99999\" is not a number from 1 to 65535".into(),
            ),
            (
                two_pools("resolver = \"consul.internal:8600\"\n"),
                "lb.toml line 9: pool.resolver: invalid resolver \"consul.internal:8600\": expected the DNS server's IP address, with a port if not 53: 127.0.0.1:8600, 10.0.0.2 or [::1]:53".into(),
            ),
            (
                two_pools("dns-min-refresh = \"0s\"\n"),
                "lb.toml line 9: pool.dns-min-refresh: \"0s\" is zero: this duration must be positive".into(),
            ),
            (
                format!("discover = \"srv:web\"\n{}", two_pools("")),
                "lb.toml line 1: discover: a top-level discover does not go with [[pool]] tables: give each pool that takes backends from DNS its own discover in its table".into(),
            ),
            (
                two_pools("retries = 101\n"),
                "lb.toml line 9: pool.retries: invalid number \"101\": expected a whole number from 0 to 100".into(),
            ),
            (
                two_pools("[[pool]]\nname = \"mq\"\n[[pool.backend]]\naddress = \"10.0.0.1:1\"\nweight = 0\n"),
                "lb.toml line 13: pool.backend.weight: weight 0 is out of range: a weight is a whole number from 1 to 1000".into(),
            ),
            (
                two_pools("[[pool]]\nname = \"web\"\nbackend = [{ address = \"10.0.0.1:1\" }]\n"),
                "lb.toml line 10: pool.name: two pools named \"web\" (the first on line 2)".into(),
            ),
            (
                two_pools("[[pool]]\nname = \"9\"\nbackend = [{ address = \"10.0.0.1:1\" }]\n"),
                "lb.toml line 10: pool.name: invalid pool name \"9\": a pool name starts with a letter".into(),
            ),
            (
                two_pools("[[pool]]\nbackend = [{ address = \"10.0.0.1:1\" }]\n"),
                "lb.toml line 9: pool: missing key `name`: each [[pool]] table needs name = \"NAME\"".into(),
            ),
            (
                two_pools("[[pool]]\nname = \"mq\"\n"),
                "lb.toml line 9: pool: pool \"mq\" has no backends: give it backend = [{ address = \"HOST:PORT\" }] or [[pool.backend]] tables, or discover = \"dns:HOST:PORT\"".into(),
            ),
            (
                two_pools("[[pool]]\nname = \"mq\"\nbackend = \"10.0.0.1:1\"\n"),
                "lb.toml line 11: pool.backend: expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight, state and backup), found the string \"10.0.0.1:1\"".into(),
            ),
            (
                format!("backend = [{{ address = \"10.0.0.1:1\" }}]\n{}", two_pools("")),
                "lb.toml line 1: backend: a top-level backend list does not go with [[pool]] tables: give each pool its own backends in its table".into(),
            ),
            (
                format!("port = 80\n{}", listen("pool = \"web\"\n")),
                "lb.toml line 1: port: host and port are the one listener of a file without [[listen]] tables; with them, each table's address says where to listen".into(),
            ),
            (
                listen("pool = \"web\"\n[[listen]]\naddress = \"0.0.0.0:443\"\npool = \"db\"\n"),
                "lb.toml line 14: listen.address: 0.0.0.0:443 is also where listener 0.0.0.0:443 listens (line 11)".into(),
            ),
            (
                listen("pool = \"web\"\nname = \"in\"\n[[listen]]\naddress = \"0.0.0.0:80\"\nname = \"in\"\npool = \"db\"\n"),
                "lb.toml line 16: listen.name: two listeners named \"in\" (the first on line 13)".into(),
            ),
            (
                listen("pool = \"web\"\nname = \"a b\"\n"),
                "lb.toml line 13: listen.name: invalid listener name \"a b\": a listener name is 1 to 128 letters, digits and . _ - : [ ]".into(),
            ),
            (
                two_pools("\n[[listen]]\npool = \"web\"\n"),
                "lb.toml line 10: listen: missing key `address`: each [[listen]] table needs address = \"HOST:PORT\"".into(),
            ),
            (
                two_pools("\n[[listen]]\naddress = \"::1:80\"\npool = \"web\"\n"),
                "lb.toml line 11: listen.address: invalid listen address \"::1:80\": write an IPv6 address in brackets, e.g. [::1]:8443".into(),
            ),
            (
                two_pools("\n[listen]\naddress = \"0.0.0.0:80\"\npool = \"web\"\n"),
                "lb.toml line 10: listen: expected [[listen]] tables with address = \"HOST:PORT\" and pool = \"NAME\" or routes, found a single [listen] table (write [[listen]])".into(),
            ),
            (
                two_pools(""),
                "lb.toml line 1: pool: 2 pools (web, db) and no [[listen]] tables: add [[listen]] tables that say where each pool is served (or name one pool \"default\": host and port serve it)".into(),
            ),
            (
                "\nbackend = []\n".into(),
                "lb.toml line 2: backend: the list is empty: give at least one [[backend]] table with address = \"HOST:PORT\" (or leave it out for the defaults at start-up)".into(),
            ),
            (
                "[[listen]]\naddress = \"0.0.0.0:80\"\npool = \"web\"\n".into(),
                "lb.toml line 3: listen.pool: no pool named \"web\" (pools: default)".into(),
            ),
        ] {
            assert_eq!(err(&text), expected, "{text}");
        }
}

#[test]
fn a_key_in_a_table_is_named_by_its_table() {
    let e = err(&two_pools("pool = \"x\"\n"));
    assert!(
        e.starts_with("lb.toml line 9: pool: unknown key `pool`, expected one of `name`"),
        "{e}"
    );
    let routes =
        "[[listen]]\naddress = \"0.0.0.0:1\"\n[[listen.routes]]\nsni = \"a.b\"\npol = \"web\"\n";
    let e = err(&two_pools(routes));
    assert!(e.starts_with("lb.toml line 13: listen.routes: unknown key `pol`"), "{e}");
    let e = err(&two_pools("[listen]\n"));
    assert!(e.starts_with("lb.toml line 9: listen: expected [[listen]] tables"), "{e}");
}

#[test]
fn the_shorthand_serves_default_or_the_only_pool() {
    let file = parse("lb.toml", "").unwrap();
    assert_eq!((file.pool_names(), file.shorthand_pool()), (vec!["default"], Some("default")));
    let one = "[[pool]]\nname = \"web\"\nbackend = [{ address = \"10.0.0.1:1\" }]\n";
    assert_eq!(parse("lb.toml", one).unwrap().shorthand_pool(), Some("web"));
    let with_default = two_pools("").replace("\"db\"", "\"default\"");
    assert_eq!(parse("lb.toml", &with_default).unwrap().shorthand_pool(), Some("default"));
}

/// Generated files: pools and listeners as data, written out as TOML, parsed back.
mod generated {
    use super::*;
    use lb_core::AdminState;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct GenBackend {
        weight: Option<u32>,
        state: Option<AdminState>,
    }

    #[derive(Debug, Clone)]
    struct GenPool {
        name: String,
        algorithm: Option<Algorithm>,
        retries: Option<u32>,
        connect_timeout: Option<u64>,
        backends: Vec<GenBackend>,
        /// `[[pool.backend]]` tables rather than an inline list.
        backend_tables: bool,
    }

    #[derive(Debug, Clone)]
    enum GenRouting {
        /// The index of a pool.
        Pool(usize),
        /// Names and a pool index per route; the default pool's index.
        Sni(Vec<(Vec<String>, usize)>, Option<usize>),
    }

    #[derive(Debug, Clone)]
    struct GenListen {
        name: Option<String>,
        routing: GenRouting,
        accept_proxy: Option<bool>,
        inspect_timeout: Option<u64>,
    }

    fn backend() -> impl Strategy<Value = GenBackend> {
        let state = prop::option::of(prop::sample::select(vec![
            AdminState::Ready,
            AdminState::Drain,
            AdminState::Maint,
        ]));
        (prop::option::of(1u32..=1000), state)
            .prop_map(|(weight, state)| GenBackend { weight, state })
    }

    /// A pool; its name ends in `index`, so names are unique and never an algorithm's.
    fn pool(index: usize) -> impl Strategy<Value = GenPool> {
        (
            "[a-z][a-z0-9_.-]{0,8}",
            prop::option::of(prop::sample::select(Algorithm::ALL.to_vec())),
            prop::option::of(0u32..=100),
            prop::option::of(1u64..=120),
            prop::collection::vec(backend(), 1..4),
            any::<bool>(),
        )
            .prop_map(
                move |(prefix, algorithm, retries, connect_timeout, backends, tables)| GenPool {
                    name: format!("{prefix}{index}"),
                    algorithm,
                    retries,
                    connect_timeout,
                    backends,
                    backend_tables: tables,
                },
            )
    }

    fn server_name() -> impl Strategy<Value = String> {
        ("(\\*\\.)?", "[a-z][a-z0-9-]{0,6}", "[a-z]{1,6}")
            .prop_map(|(wild, label, top)| format!("{wild}{label}.{top}"))
    }

    fn listen(index: usize, pools: usize) -> impl Strategy<Value = GenListen> {
        let route = (prop::collection::vec(server_name(), 1..3), 0..pools);
        let routing = prop_oneof![
            (0..pools).prop_map(GenRouting::Pool),
            (prop::collection::vec(route, 1..3), prop::option::of(0..pools))
                .prop_map(|(routes, default)| GenRouting::Sni(routes, default)),
        ];
        (
            prop::option::of("[a-z][a-z0-9_.:-]{0,8}"),
            routing,
            prop::option::of(any::<bool>()),
            prop::option::of(1u64..=60),
        )
            .prop_map(move |(name, routing, accept_proxy, inspect_timeout)| GenListen {
                name: name.map(|n| format!("{n}{index}")),
                routing,
                accept_proxy,
                inspect_timeout,
            })
    }

    fn services() -> impl Strategy<Value = (Vec<GenPool>, Vec<GenListen>)> {
        (1usize..4, 1usize..4).prop_flat_map(|(pools, listeners)| {
            let pools_s: Vec<_> = (0..pools).map(pool).collect();
            let listens: Vec<_> = (0..listeners).map(|i| listen(i, pools)).collect();
            (pools_s, listens)
        })
    }

    /// Backend `j` of pool `i`.
    fn backend_port(i: usize, j: usize) -> u16 {
        (1000 + 10 * i + j) as u16
    }

    /// Listener `k`'s port.
    fn listen_port(k: usize) -> u16 {
        (2000 + k) as u16
    }

    fn render(pools: &[GenPool], listens: &[GenListen]) -> String {
        let mut text = String::from("# generated\n");
        for (i, p) in pools.iter().enumerate() {
            text += &format!("[[pool]]\nname = \"{}\"\n", p.name);
            if let Some(a) = p.algorithm {
                text += &format!("algorithm = \"{a}\"\n");
            }
            if let Some(r) = p.retries {
                text += &format!("retries = {r}\n");
            }
            if let Some(c) = p.connect_timeout {
                text += &format!("connect-timeout = \"{c}s\"\n");
            }
            let backend = |j: usize, b: &GenBackend, sep: &str| {
                let mut parts = vec![format!("address = \"127.0.0.1:{}\"", backend_port(i, j))];
                parts.extend(b.weight.map(|w| format!("weight = {w}")));
                parts.extend(b.state.map(|s| format!("state = \"{s}\"")));
                parts.join(sep)
            };
            if p.backend_tables {
                for (j, b) in p.backends.iter().enumerate() {
                    text += &format!("[[pool.backend]]\n{}\n", backend(j, b, "\n"));
                }
            } else {
                let list: Vec<String> = p
                    .backends
                    .iter()
                    .enumerate()
                    .map(|(j, b)| format!("{{ {} }}", backend(j, b, ", ")))
                    .collect();
                text += &format!("backend = [{}]\n", list.join(", "));
            }
            text += "\n";
        }
        for (k, l) in listens.iter().enumerate() {
            text += &format!("[[listen]]\naddress = \"127.0.0.1:{}\"\n", listen_port(k));
            if let Some(name) = &l.name {
                text += &format!("name = \"{name}\"\n");
            }
            match &l.routing {
                GenRouting::Pool(i) => text += &format!("pool = \"{}\"\n", pools[*i].name),
                GenRouting::Sni(routes, default) => {
                    let routes: Vec<String> = routes
                        .iter()
                        .map(|(names, i)| {
                            format!("{{ sni = {names:?}, pool = \"{}\" }}", pools[*i].name)
                        })
                        .collect();
                    text += &format!("routes = [{}]\n", routes.join(", "));
                    if let Some(i) = default {
                        text += &format!("default-pool = \"{}\"\n", pools[*i].name);
                    }
                }
            }
            if let Some(a) = l.accept_proxy {
                text += &format!("accept-proxy = {a}\n");
            }
            if let Some(t) = l.inspect_timeout {
                text += &format!("inspect-timeout = \"{t}s\"\n");
            }
            text += "\n";
        }
        text
    }

    /// What a generated listener is, as lb-net takes it.
    fn expected_config(k: usize, l: &GenListen, pools: &[GenPool]) -> ListenerConfig {
        let name = l.name.clone().unwrap_or_else(|| format!("127.0.0.1:{}", listen_port(k)));
        let mut config = ListenerConfig::to_pool(name, "");
        config.routing = match &l.routing {
            GenRouting::Pool(i) => Routing::Pool(pools[*i].name.clone()),
            GenRouting::Sni(routes, default) => Routing::Sni {
                routes: routes
                    .iter()
                    .map(|(names, i)| SniRoute {
                        names: names.iter().map(|n| n.parse().unwrap()).collect(),
                        pool: pools[*i].name.clone(),
                    })
                    .collect(),
                default_pool: default.map(|i| pools[i].name.clone()),
            },
        };
        config.accept_proxy = l.accept_proxy.unwrap_or(false);
        config.inspect_timeout =
            l.inspect_timeout.map_or(DEFAULT_INSPECT_TIMEOUT, Duration::from_secs);
        config
    }

    /// An error is one line, naming the file (and a line within it, when it names one).
    fn one_line(e: &str, text: &str) -> Result<(), TestCaseError> {
        prop_assert!(!e.contains('\n') && !e.contains('\r'), "{e:?}");
        prop_assert!(e.starts_with("lb.toml"), "{e:?}");
        if let Some(rest) = e.strip_prefix("lb.toml line ") {
            let line: usize = rest.split(':').next().unwrap().parse().unwrap();
            prop_assert!(line >= 1 && line <= text.lines().count() + 1, "{e:?}");
        }
        Ok(())
    }

    /// A change to a file's text.
    #[derive(Debug, Clone)]
    enum Mutation {
        Delete(usize, usize),
        Insert(usize, String),
        DuplicateLine(usize),
        SwapLines(usize, usize),
        Replace(&'static str, &'static str),
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        let words = prop::sample::select(vec![
            "pool",
            "listen",
            "name",
            "address",
            "routes",
            "sni",
            "backend",
            "default-pool",
            "[[",
            "]]",
            "\"",
            "=",
            "127.0.0.1",
            "true",
            "{",
            "}",
            "\n",
        ]);
        prop_oneof![
            (any::<usize>(), 1usize..12).prop_map(|(at, n)| Mutation::Delete(at, n)),
            (any::<usize>(), "[\\[\\]{}=\",.#a-z0-9 *:/_\n\t\\\\é-]{1,8}")
                .prop_map(|(at, s)| Mutation::Insert(at, s)),
            any::<usize>().prop_map(Mutation::DuplicateLine),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
            (words.clone(), words).prop_map(|(a, b)| Mutation::Replace(a, b)),
        ]
    }

    fn mutate(text: &str, m: &Mutation) -> String {
        let chars: Vec<char> = text.chars().collect();
        let mut lines: Vec<&str> = text.lines().collect();
        match m {
            Mutation::Delete(at, n) => {
                let at = at % chars.len().max(1);
                let end = (at + n).min(chars.len());
                chars[..at].iter().chain(&chars[end..]).collect()
            }
            Mutation::Insert(at, s) => {
                let at = at % (chars.len() + 1);
                chars[..at]
                    .iter()
                    .chain(&s.chars().collect::<Vec<_>>())
                    .chain(&chars[at..])
                    .collect()
            }
            Mutation::DuplicateLine(i) if !lines.is_empty() => {
                let i = i % lines.len();
                lines.insert(i, lines[i]);
                lines.join("\n")
            }
            Mutation::SwapLines(a, b) if !lines.is_empty() => {
                let n = lines.len();
                lines.swap(a % n, b % n);
                lines.join("\n")
            }
            Mutation::Replace(a, b) => text.replacen(a, b, 1),
            _ => text.to_owned(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn generated_files_parse_to_what_was_generated((pools, listens) in services()) {
            let text = render(&pools, &listens);
            let file = parse("lb.toml", &text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(file.pools.len(), pools.len());
            for (i, (got, want)) in file.pools.iter().zip(&pools).enumerate() {
                let s = &got.value.settings;
                prop_assert_eq!(&got.value.name.value, &want.name);
                prop_assert_eq!(s.algorithm, want.algorithm);
                prop_assert_eq!(s.retries, want.retries);
                prop_assert_eq!(s.connect_timeout, want.connect_timeout.map(Duration::from_secs));
                let backends: Vec<_> = s.backends.iter().flatten()
                    .map(|b| (b.target.to_string(), b.weight, b.state))
                    .collect();
                let expected: Vec<_> = want.backends.iter().enumerate()
                    .map(|(j, b)| (format!("127.0.0.1:{}", backend_port(i, j)), b.weight, b.state.unwrap_or_default()))
                    .collect();
                prop_assert_eq!(backends, expected);
            }
            prop_assert_eq!(file.listeners.len(), listens.len());
            for (k, (got, want)) in file.listeners.iter().zip(&listens).enumerate() {
                prop_assert_eq!(&got.value.config, &expected_config(k, want, &pools));
                prop_assert_eq!(got.value.address.value.port, listen_port(k));
            }
        }

        #[test]
        fn mutated_files_never_panic_and_fail_with_one_line(
            (pools, listens) in services(),
            mutations in prop::collection::vec(mutation(), 1..4),
        ) {
            let mut text = render(&pools, &listens);
            for m in &mutations {
                text = mutate(&text, m);
            }
            if let Err(e) = parse("lb.toml", &text) {
                one_line(&e, &text)?;
            }
        }

        #[test]
        fn any_text_never_panics_and_fails_with_one_line(text in "(?s).{0,200}") {
            if let Err(e) = parse("lb.toml", &text) {
                one_line(&e, &text)?;
            }
        }
    }
}

#[test]
fn mistakes_people_make_are_named_in_the_files_words() {
    // A pool's backend table written before its [[pool]] header.
    let e = err("[[pool.backend]]\naddress = \"127.0.0.1:1\"\n[[pool]]\nname = \"web\"\n");
    assert!(e.starts_with("lb.toml line 1: pool.backend: a [[pool.backend]] table belongs"), "{e}");
    // A value TOML cannot read is handed to the key's own parser.
    let e = err("port = 80a\n");
    assert!(e.starts_with("lb.toml line 1: port: invalid port \"80a\""), "{e}");
    // One backend twice in a pool.
    let e = err(&two_pools("")
        .replace("\"10.0.0.5:443\" }]", "\"10.0.0.5:443\" }, { address = \"10.0.0.5:443\" }]"));
    assert!(e.contains("10.0.0.5:443 is listed twice (entries 1 and 2)"), "{e}");
}

#[test]
fn listeners_take_who_may_connect_and_warn_about_idle_keys() {
    let file = parse(
        "lb.toml",
        &format!(
            "deny = [\"10.9.0.0/16\"]\n{}",
            two_pools(
                "[[listen]]\naddress = \"127.0.0.1:0\"\npool = \"web\"\n\
             allow = \"10.0.0.0/8, 192.0.2.7\"\nmax-connections-per-client = 5\n\
                 inspect-timeout = \"2s\"\n",
            )
        ),
    )
    .unwrap();
    let listen = &file.listeners[0].value;
    let allow: Vec<String> =
        listen.settings.allow.iter().flatten().map(|r| r.to_string()).collect();
    assert_eq!(allow, ["10.0.0.0/8", "192.0.2.7/32"]);
    // The top level's `deny` is every listener's default.
    assert_eq!(file.settings.deny.as_ref().map(Vec::len), Some(1));
    let warnings = file.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("lb.toml line 15: listen.inspect-timeout: applies only"));
    // A pool's key in a [[listen]] table, and a listener's in a [[pool]] table.
    let e = err(&two_pools("[[listen]]\naddress = \"127.0.0.1:0\"\npool = \"web\"\nretries = 1\n"));
    assert!(e.contains("`retries` is a pool's key"), "{e}");
    // (What follows two_pools' second [[pool]] header is in that table.)
    let e = err(&two_pools("allow = [\"10.0.0.0/8\"]\n"));
    assert!(e.contains("`allow` is a listener's key"), "{e}");
}

#[test]
fn unnamed_listeners_on_one_port_0_address_get_names_of_their_own() {
    let listen = "[[listen]]\naddress = \"127.0.0.1:0\"\npool = \"web\"\n";
    let file = parse("lb.toml", &two_pools(&format!("{listen}{listen}{listen}"))).unwrap();
    let names: Vec<&str> = file.listeners.iter().map(|l| l.value.config.name.as_str()).collect();
    assert_eq!(names, ["127.0.0.1:0", "127.0.0.1:0-2", "127.0.0.1:0-3"]);
}
