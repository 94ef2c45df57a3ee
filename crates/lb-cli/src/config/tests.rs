use super::*;
use crate::args::{HealthCheck, Limit, OptionalDuration};
use crate::settings::{Settings, SETTINGS};
use clap::FromArgMatches;
use lb_core::{AdminState, Algorithm};
use lb_net::CheckKind;
use std::time::Duration;

/// Parses flags as `main` does; returns their settings and which were typed.
fn flags(flags: &[&str]) -> (Settings, Given) {
    let matches = Args::command().try_get_matches_from(flags).unwrap();
    (Args::from_arg_matches(&matches).unwrap().settings, Given::from_matches(&matches))
}

/// Parses flags as `main` does and lays `file` under them.
fn effective(args: &[&str], file: &str) -> Settings {
    let (cli, given) = flags(args);
    cli.merge(&given, &parse("lb.toml", file).unwrap().settings)
}

fn err(text: &str) -> String {
    parse("lb.toml", text).unwrap_err()
}

#[test]
fn every_key_parses_to_the_flags_types() {
    let file = parse(
        "lb.toml",
        r#"
host = "0.0.0.0"
port = 9000
algorithm = "least_connections"
health-interval = "500ms"
health-timeout = "1m30s"
rise = 4
fall = "5"
health-check = "http:/healthz"
connect-timeout = "3s"
idle-timeout = "off"
max-connections = 100
max-connections-per-backend = "unlimited"
retries = 0
shutdown-grace = "0"
log-file = "lb.log"
log-level = "info,lb::access=off"
quiet = true
demo = false

[[backend]]
address = "127.0.0.1:8001"
weight = 2
state = "drain"

[[backend]]
address = "[::1]:8002"
"#,
    )
    .unwrap()
    .settings;
    assert_eq!(file.host.as_deref(), Some("0.0.0.0"));
    assert_eq!(file.port, Some(9000));
    assert_eq!(file.algorithm, Some(Algorithm::LeastConnections));
    assert_eq!(file.health_interval, Some(Duration::from_millis(500)));
    assert_eq!(file.health_timeout, Some(Duration::from_secs(90)));
    assert_eq!((file.rise, file.fall, file.retries), (Some(4), Some(5), Some(0)));
    assert_eq!(
        file.health_check,
        Some(HealthCheck(Some(CheckKind::Http(lb_net::HttpCheck::get("/healthz")))))
    );
    assert_eq!(file.idle_timeout, Some(OptionalDuration(None)));
    assert_eq!(file.max_connections, Some(Limit(Some(100))));
    assert_eq!(file.max_connections_per_backend, Some(Limit(None)));
    assert_eq!(file.shutdown_grace, Some(Duration::ZERO));
    assert_eq!(file.log_level.as_deref(), Some("info,lb::access=off"));
    assert_eq!((file.quiet, file.demo), (Some(true), Some(false)));
    let backends = file.backends.unwrap();
    assert_eq!(backends.len(), 2);
    assert_eq!(
        (backends[0].target.to_string(), backends[0].weight, backends[0].state),
        ("127.0.0.1:8001".into(), Some(2), AdminState::Drain)
    );
    assert_eq!(
        (backends[1].target.to_string(), backends[1].weight, backends[1].state),
        ("[::1]:8002".into(), None, AdminState::Ready)
    );
}

#[test]
fn an_empty_file_sets_nothing() {
    assert_eq!(parse("lb.toml", "# nothing\n").unwrap().settings, FileConfig::default());
    let args = effective(&["lb"], "");
    assert_eq!((args.port, args.backends.len()), (8080, 3));
}

#[test]
fn a_flag_beats_the_file_and_the_file_beats_a_default() {
    let file = r#"
port = 9000
algorithm = "p2c"
health-interval = "5s"
quiet = true
[[backend]]
address = "127.0.0.1:9001"
weight = 3
"#;
    let args = effective(&["lb", "--port", "7000", "--health-interval", "2s"], file);
    // Typed flags win, even one equal to its default (--health-interval 2s).
    assert_eq!(args.port, 7000);
    assert_eq!(args.health_interval, Duration::from_secs(2));
    // The file beats defaults.
    assert_eq!(args.algorithm, Algorithm::P2c);
    assert!(args.quiet);
    assert_eq!(args.backends.len(), 1);
    assert_eq!(args.backends[0].weight, Some(3));
    // Neither: the default.
    assert_eq!(args.retries, 2);

    // --backend flags replace the file's whole list.
    let args = effective(&["lb", "--backend", "127.0.0.1:7001"], file);
    assert_eq!(args.backends.len(), 1);
    assert_eq!(args.backends[0].target.to_string(), "127.0.0.1:7001");
}

#[test]
fn the_file_and_the_flags_accept_the_same_values() {
    // The same text through a flag and through the file: both accept or both reject.
    for (flag, key, value) in [
        ("--health-interval", "health-interval", "1m30s"),
        ("--health-interval", "health-interval", "0s"),
        ("--health-interval", "health-interval", "5"),
        ("--idle-timeout", "idle-timeout", "off"),
        ("--max-connections", "max-connections", "unlimited"),
        ("--max-connections", "max-connections", "-3"),
        ("--rise", "rise", "0"),
        ("--retries", "retries", "101"),
        ("--port", "port", "70000"),
        ("--algorithm", "algorithm", "least-connections"),
        ("--algorithm", "algorithm", "fastest"),
        ("--health-check", "health-check", "udp"),
        ("--log-level", "log-level", "verbose"),
    ] {
        let by_flag = Args::command().try_get_matches_from(["lb", flag, value]).is_ok();
        let by_file = parse("lb.toml", &format!("{key} = {value:?}")).is_ok();
        assert_eq!(by_flag, by_file, "{key} = {value:?}");
    }
    assert!(parse("lb.toml", "[[backend]]\naddress = \"127.0.0.1:0\"").is_ok(), "for --demo");
}

#[test]
fn unknown_keys_are_named() {
    let e = err("port = 9000\nhots = \"x\"\n");
    assert!(e.starts_with("lb.toml line 2: unknown key `hots`, expected one of `host`,"), "{e}");
    let e = err("[[backend]]\naddress = \"127.0.0.1:8001\"\nwieght = 2\n");
    assert!(e.starts_with("lb.toml line 3: unknown key `wieght`"), "{e}");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn bad_values_name_the_key_and_the_problem() {
    assert_eq!(
            err("port = 9000\nhealth-interval = \"5\"\n"),
            "lb.toml line 2: health-interval: invalid duration \"5\": expected a number with a unit, e.g. 500ms, 2s, 5m or 1h"
        );
    assert_eq!(
            err("health-interval = 5"),
            "lb.toml line 1: health-interval: invalid duration \"5\": expected a number with a unit, e.g. 500ms, 2s, 5m or 1h"
        );
    assert_eq!(
        err("connect-timeout = \"0s\""),
        "lb.toml line 1: connect-timeout: \"0s\" is zero: this duration must be positive"
    );
    assert!(err("algorithm = \"fastest\"").starts_with(
        "lb.toml line 1: algorithm: unknown algorithm \"fastest\": expected one of round_robin,"
    ));
    assert!(err("rise = 0").contains("line 1: rise: invalid number \"0\""));
    assert!(err("port = 1.5").contains("port: invalid port \"1.5\""));
    assert!(err("port = [80]").contains("port: expected a string or a number, found an array"));
    assert!(err("host = { a = 1 }").contains("host: expected a string or a number, found a table"));
    assert!(err("quiet = \"yes\"").contains("quiet: expected true or false, found \"yes\""));
    let e = err("retry-on-empty = \"true\"");
    assert!(e.contains("found the string \"true\": write true without quotes"), "{e}");
    assert!(err("log-file = 1979-05-27")
        .contains("log-file: expected a string or a number, found a date"));
    let e = err("\n[[backend]]\naddress = \"127.0.0.1:8001\"\nweight = 5000\n");
    assert!(e.starts_with("lb.toml line 4: backend.weight: weight 5000 is out of range"), "{e}");
    let e = err("[[backend]]\naddress = \"127.0.0.1\"\n");
    assert!(e.starts_with("lb.toml line 2: backend.address: missing port in \"127.0.0.1\""), "{e}");
    let e = err("[[backend]]\naddress = \"127.0.0.1:80\"\nstate = \"asleep\"\n");
    assert!(e.contains("line 3: backend.state: unknown admin state \"asleep\""), "{e}");
    let e = err("[[backend]]\nweight = 2\n");
    assert_eq!(
            e,
            "lb.toml line 1: backend: missing key `address`: each [[backend]] table needs address = \"HOST:PORT\""
        );
    let e = err("backend = \"127.0.0.1:8001\"\n");
    assert_eq!(
            e,
            "lb.toml line 1: backend: expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight, state and backup), found the string \"127.0.0.1:8001\""
        );
    let e = err("[backend]\naddress = \"127.0.0.1:8001\"\n");
    assert!(e.contains("backend: expected [[backend]] tables with address = \"HOST:PORT\""));
    assert!(e.ends_with("found a single [backend] table (write [[backend]])"), "{e}");
}

#[test]
fn of_several_bad_values_the_first_setting_in_the_table_is_named() {
    assert!(err("port = 99999\nhost = \"a b\"\n").starts_with("lb.toml line 2: host: "));
    let e = err("retries = 101\n[[backend]]\naddress = \"127.0.0.1:1\"\nweight = 0\n");
    assert!(e.starts_with("lb.toml line 4: backend.weight: "), "{e}");
    // A key that is no setting at all comes before any bad value.
    assert!(err("port = 99999\nhots = 1\n").starts_with("lb.toml line 2: unknown key `hots`"));
}

#[test]
fn no_message_names_a_rust_type() {
    // Each is one line naming the line and the key, in the file's words.
    for (text, expected) in [
            (
                "port = 99999999999999999999999",
                "lb.toml line 1: port: invalid port \"99999999999999999999999\": expected a whole number from 0 to 65535",
            ),
            (
                "\nretries = -99999999999999999999999",
                "lb.toml line 2: retries: invalid number \"-99999999999999999999999\": expected a whole number from 0 to 100",
            ),
            (
                "backend = [\"127.0.0.1:1\"]",
                "lb.toml line 1: backend: expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight, state and backup), found the string \"127.0.0.1:1\"",
            ),
            (
                "backend = [\n  {address = \"127.0.0.1:1\"},\n  7,\n]",
                "lb.toml line 3: backend: expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight, state and backup), found the number 7",
            ),
            (
                "backend = [[\"127.0.0.1:1\"]]",
                "lb.toml line 1: backend: expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight, state and backup), found an array",
            ),
            (
                "backend = true",
                "lb.toml line 1: backend: expected [[backend]] tables with address = \"HOST:PORT\" (and optionally weight, state and backup), found true",
            ),
            (
                "[[backend]]\naddress = \"127.0.0.1:1\"\nweight = 99999999999999999999999",
                "lb.toml line 3: backend.weight: invalid weight \"99999999999999999999999\": expected a whole number from 1 to 1000",
            ),
            // A value TOML cannot read is handed to the key's parser, which names the value
            // it expects, rather than TOML's grammar.
            (
                "port = 1e400",
                "lb.toml line 1: port: invalid port \"1e400\": expected a whole number from 0 to 65535",
            ),
            (
                "[[backend]]\naddress = \"127.0.0.1:1\"\nweight = 1e400",
                "lb.toml line 3: backend.weight: floating-point number overflowed",
            ),
        ] {
            let e = err(text);
            assert_eq!(e, expected, "{text:?}");
        }
    // Syntax errors in a value name the key, whatever the parser's wording.
    assert!(err("port = 9000\nalgorithm = \n").starts_with("lb.toml line 2: algorithm: "));
    assert!(err("port = 08080").starts_with("lb.toml line 1: port: "));
    for text in ["port = 99999999999999999999999", "backend = [1]", "backend = [[1]]"] {
        let e = err(text);
        for leak in ["i128", "u128", "struct", "RawBackend", "Scalar", "invalid type", "map"] {
            assert!(!e.contains(leak), "{text:?}: {e}");
        }
    }
}

#[test]
fn the_host_and_admin_token_are_checked_as_their_flags() {
    assert_eq!(parse("lb.toml", "host = \"[::1]\"").unwrap().settings.host.as_deref(), Some("::1"));
    assert_eq!(parse("lb.toml", "host = \"::1\"").unwrap().settings.host.as_deref(), Some("::1"));
    assert!(err("host = \"[::1\"").starts_with("lb.toml line 1: host: invalid host \"[::1\""));
    assert_eq!(
            err("\nadmin-token = \"\""),
            "lb.toml line 2: admin-token: the admin token is empty: give a non-empty token, or no token at all"
        );
    for token in ["\"a b\"", "\"a\\nb\"", "\" t\"", "\"\\u0007\""] {
        let e = err(&format!("admin-token = {token}"));
        assert!(e.starts_with("lb.toml line 1: admin-token: the admin token contains "), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let e = err("port = 9000\nalgorithm = \n");
    assert!(e.starts_with("lb.toml line 2: "), "{e}");
    let e = err("port = 9000\n\n[[backend]\n");
    assert!(e.starts_with("lb.toml line 3: "), "{e}");
    assert_eq!(err("port = 1\nport = 2\n"), "lb.toml line 2: duplicate key `port`");
    assert!(!e.contains('\n'), "one line: {e}");
}

#[test]
fn the_admin_endpoint_can_be_set_in_the_file_and_a_flag_wins() {
    let args = effective(&["lb"], "admin = \"9090\"\nadmin-token = \"t\"\n");
    assert_eq!(args.admin.unwrap().to_string(), "127.0.0.1:9090");
    assert_eq!(args.admin_token.as_deref(), Some("t"));
    let args = effective(&["lb", "--admin", "0.0.0.0:7000"], "admin = \"9090\"\n");
    assert_eq!(args.admin.unwrap().to_string(), "0.0.0.0:7000");
    assert!(effective(&["lb"], "").admin.is_none(), "off by default");
    let e = parse("lb.toml", "admin = \"nine\"\n").unwrap_err();
    assert!(e.starts_with("lb.toml line 1: admin: invalid admin address"), "{e}");
}

#[test]
fn a_missing_file_is_named() {
    let e = load(Path::new("/nonexistent-dir/lb.toml")).unwrap_err();
    assert!(e.starts_with("cannot read config file /nonexistent-dir/lb.toml: "), "{e}");
}

#[test]
fn the_example_files_services_parse_uncommented() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/lb.example.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let marker = "a plain TCP port for web:\n";
    let block = &text[text.find(marker).expect("the services example") + marker.len()..];
    let toml: String = block
        .lines()
        .map(|l| l.strip_prefix("# ").or_else(|| l.strip_prefix('#')).unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    let file = parse("lb.example.toml", &toml).unwrap();
    assert_eq!(file.pool_names(), ["web", "api"]);
    let names: Vec<&str> = file.listeners.iter().map(|l| l.value.config.name.as_str()).collect();
    assert_eq!(names, ["https", "0.0.0.0:8443"]);
}

#[test]
fn every_configuration_example_in_operations_md_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
    let text = std::fs::read_to_string(path).unwrap();
    let blocks: Vec<&str> =
        text.split("```toml\n").skip(1).map(|b| b.split("```").next().unwrap()).collect();
    assert!(blocks.len() >= 5, "the examples were found");
    let (cli, given) = flags(&["lb"]);
    for block in blocks {
        // Read, then made into pools and listeners as at start-up (a route to a pool that is
        // not there, a key in the wrong place).
        let loaded = parse("operations.md", block).and_then(|file| {
            let settings = cli.merge(&given, &file.settings);
            crate::services::Services::new(&settings, &given, Some(&file)).map(drop)
        });
        if let Err(e) = loaded {
            panic!("an example in operations.md does not load: {e}\n{block}");
        }
    }
}

#[test]
fn the_readme_services_example_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let text = std::fs::read_to_string(path).unwrap();
    let marker = "### Several services in one lb";
    let section = &text[text.find(marker).expect("the README section")..];
    let block = section.split("```toml\n").nth(1).unwrap().split("```").next().unwrap();
    let file = parse("README.md", block).unwrap();
    assert_eq!(file.pool_names(), ["web", "api", "db", "broker"]);
    let names: Vec<&str> = file.listeners.iter().map(|l| l.value.config.name.as_str()).collect();
    assert_eq!(names, ["https", "postgres", "amqp"]);
}

#[test]
fn the_example_file_parses_and_states_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/lb.example.toml");
    let file = load(Path::new(path)).unwrap().settings;
    let text = std::fs::read_to_string(path).unwrap();
    // Every key is in the example...
    let set = file.keys();
    let command = Args::command();
    for setting in SETTINGS {
        if set.contains(&setting.key) {
            continue;
        }
        // ... except those --help shows no default for (the admin endpoint, off by default;
        // the worker count, which depends on the machine): shown commented out.
        let arg = command.get_arguments().find(|a| a.get_long() == Some(setting.key)).unwrap();
        let no_default = arg.get_default_values().is_empty() || arg.is_hide_default_value_set();
        assert!(no_default, "{} is not in the example: {file:?}", setting.key);
        assert!(text.contains(&format!("\n# {} = ", setting.key)), "{} is shown", setting.key);
    }
    // ... with its default value, so running on the example changes nothing. (The example
    // spells out weight 1 where the default leaves it unset.)
    let (defaults, given) = flags(&["lb"]);
    let mut with_file = defaults.merge(&given, &file);
    for b in &mut with_file.backends {
        b.weight = b.weight.filter(|&w| w != lb_core::DEFAULT_WEIGHT);
    }
    assert_eq!(with_file, defaults);
}

#[test]
fn traffic_keys_and_backup_backends_read_alike_from_flags_and_file() {
    let file = effective(
        &["lb"],
        r#"
panic-threshold = 50
slow-start = "30s"
hash-balance-factor = 125

[[backend]]
address = "127.0.0.1:8001"

[[backend]]
address = "127.0.0.1:8002"
weight = 2
backup = true
"#,
    );
    let (typed, _) = flags(&[
        "lb",
        "--panic-threshold",
        "50",
        "--slow-start",
        "30s",
        "--hash-balance-factor",
        "125",
        "--backend",
        "127.0.0.1:8001",
        "--backend",
        "127.0.0.1:8002,weight=2,backup",
    ]);
    assert_eq!(file, typed);
    assert_eq!(file.panic_threshold, 50);
    assert_eq!(file.slow_start, OptionalDuration(Some(Duration::from_secs(30))));
    assert_eq!(file.hash_balance_factor, 125);
    assert_eq!(file.backends.iter().map(|b| b.backup).collect::<Vec<_>>(), [false, true]);
    // The defaults are off.
    let (defaults, _) = flags(&["lb"]);
    assert_eq!(defaults.panic_threshold, 0);
    assert_eq!(defaults.slow_start, OptionalDuration(None));
    assert_eq!(defaults.hash_balance_factor, 0);
}

#[test]
fn bad_traffic_values_are_one_line_each() {
    assert_eq!(
        err("panic-threshold = 101"),
        "lb.toml line 1: panic-threshold: invalid percentage \"101\": expected a whole number from 0 (off) to 100"
    );
    assert_eq!(
        err("hash-balance-factor = 99"),
        "lb.toml line 1: hash-balance-factor: invalid hash balance factor \"99\": expected 0 (off) or a whole number from 100 to 10000"
    );
    let e = err("[[backend]]\naddress = \"127.0.0.1:1\"\nbackup = \"yes\"");
    assert!(e.contains("backend.backup: expected true or false"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn a_backend_listed_twice_is_found_among_thousands() {
    let mut text: String = (0..3000)
        .map(|i| format!("[[backend]]\naddress = \"127.0.0.1:{}\"\n", 10_000 + i))
        .collect();
    let file = parse("lb.toml", &text).unwrap();
    assert_eq!(file.settings.backends.as_ref().map(Vec::len), Some(3000));
    text.push_str("[[backend]]\naddress = \"127.0.0.1:10007\"\n");
    assert_eq!(
        err(&text),
        "lb.toml line 6002: backend: 127.0.0.1:10007 is listed twice (entries 8 and 3001)"
    );
}

#[test]
fn only_regular_files_of_sane_size_are_read() {
    // /dev/zero never ends and a FIFO's open waits for a writer: both refused before reading.
    let err = load(Path::new("/dev/zero")).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    let dir = std::env::temp_dir().join(format!("lb-config-kinds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(err.contains("a directory"), "{err}");
    let fifo = dir.join("fifo.toml");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let err = load(&fifo).unwrap_err();
    assert!(err.contains("not a regular file"), "{err}");
    // A symbolic link to a regular file is read as that file.
    let real = dir.join("real.toml");
    std::fs::write(&real, "[[backend]]\naddress = \"127.0.0.1:8001\"\n").unwrap();
    let link = dir.join("link.toml");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert!(load(&link).is_ok());
    // Past the size limit: refused, not read into memory.
    let big = dir.join("big.toml");
    std::fs::File::create(&big).unwrap().set_len(MAX_FILE_BYTES + 1).unwrap();
    let err = load(&big).unwrap_err();
    assert!(err.contains("larger than 64 MiB"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
