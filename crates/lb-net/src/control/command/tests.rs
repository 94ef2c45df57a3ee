use super::*;

fn t(host: &str, port: u16) -> Target {
    Target { host: host.into(), port }
}

/// A backend named without its pool.
fn b(host: &str, port: u16) -> BackendRef {
    BackendRef { pool: None, target: t(host, port) }
}

fn add(target: Target, weight: Option<u32>, state: Option<AdminState>) -> Command {
    Command::Add { pool: None, target, weight, state, backup: false }
}

#[test]
fn parses_the_seed_forms_and_the_new_ones() {
    assert_eq!(
        Command::parse("add 127.0.0.1 8004").unwrap(),
        add(t("127.0.0.1", 8004), None, None)
    );
    assert_eq!(
        Command::parse("add 127.0.0.1:8004 weight=3").unwrap(),
        add(t("127.0.0.1", 8004), Some(3), None)
    );
    assert_eq!(
        Command::parse("  ADD [::1]:9000 w=2 drain ").unwrap(),
        add(t("::1", 9000), Some(2), Some(AdminState::Drain))
    );
    assert_eq!(Command::parse("add ::1 9000").unwrap(), add(t("::1", 9000), None, None));
    assert_eq!(
        Command::parse("remove localhost 8001").unwrap(),
        Command::Remove(b("localhost", 8001))
    );
    assert_eq!(
        Command::parse("remove localhost:8001").unwrap(),
        Command::Remove(b("localhost", 8001))
    );
    assert_eq!(
        Command::parse("weight 10.0.0.1:80 7").unwrap(),
        Command::Weight(b("10.0.0.1", 80), 7)
    );
    assert_eq!(
        Command::parse("weight 10.0.0.1 80 7").unwrap(),
        Command::Weight(b("10.0.0.1", 80), 7)
    );
    assert_eq!(
        Command::parse("algorithm").unwrap(),
        Command::Algorithm { pool: None, algorithm: None }
    );
    assert_eq!(
        Command::parse("algorithm least_connections").unwrap(),
        Command::Algorithm { pool: None, algorithm: Some(Algorithm::LeastConnections) }
    );
    for (line, cmd) in [
        ("stats", Command::Stats(None)),
        ("health", Command::Health(None)),
        ("help", Command::Help),
        ("reload", Command::Reload),
        ("upgrade", Command::Upgrade),
        ("quit", Command::Quit),
        ("exit", Command::Quit),
    ] {
        assert_eq!(Command::parse(line).unwrap(), cmd);
    }
}

#[test]
fn pools_are_named_before_a_slash_or_as_the_first_word_of_add() {
    let in_pool = |pool: &str, host: &str, port| BackendRef {
        pool: Some(pool.into()),
        target: t(host, port),
    };
    assert_eq!(
        Command::parse("drain web/10.0.0.5:443").unwrap(),
        Command::Drain { backend: in_pool("web", "10.0.0.5", 443), deadline: None, remove: false }
    );
    assert_eq!(
        Command::parse("weight web/localhost 8001 3").unwrap(),
        Command::Weight(in_pool("web", "localhost", 8001), 3)
    );
    assert_eq!(
        Command::parse("remove db/[::1]:5432").unwrap(),
        Command::Remove(in_pool("db", "::1", 5432))
    );
    let added = |pool: &str, host: &str, port, weight| Command::Add {
        pool: Some(pool.into()),
        target: t(host, port),
        weight,
        state: None,
        backup: false,
    };
    assert_eq!(
        Command::parse("add db 10.0.0.9:5432").unwrap(),
        added("db", "10.0.0.9", 5432, None)
    );
    assert_eq!(
        Command::parse("add db/10.0.0.9:5432 w=2").unwrap(),
        added("db", "10.0.0.9", 5432, Some(2))
    );
    assert_eq!(
        Command::parse("add db localhost 5432").unwrap(),
        added("db", "localhost", 5432, None)
    );
    // The seed's `add HOST PORT` is still a host and a port, not a pool.
    assert_eq!(
        Command::parse("add localhost 8004").unwrap(),
        add(t("localhost", 8004), None, None)
    );
    assert_eq!(
        Command::parse("algorithm web p2c").unwrap(),
        Command::Algorithm { pool: Some("web".into()), algorithm: Some(Algorithm::P2c) }
    );
    assert_eq!(
        Command::parse("algorithm web").unwrap(),
        Command::Algorithm { pool: Some("web".into()), algorithm: None }
    );
    assert_eq!(
        Command::parse("algorithm random").unwrap(),
        Command::Algorithm { pool: None, algorithm: Some(Algorithm::Random) }
    );
    assert_eq!(Command::parse("stats web").unwrap(), Command::Stats(Some("web".into())));
    assert_eq!(Command::parse("health db").unwrap(), Command::Health(Some("db".into())));
    let err = |line: &str| Command::parse(line).unwrap_err().to_string();
    assert!(err("drain 9web/10.0.0.5:443").contains("invalid pool name \"9web\""));
    assert!(err("drain web/").contains("missing backend after \"web\"/"));
    assert!(err("stats web db").contains("unexpected \"db\""));
    assert!(err("stats 10.0.0.1").contains("invalid pool name"));
    assert!(err("algorithm web fastest").contains("unknown algorithm \"fastest\""));
}

#[test]
fn pool_names_cannot_pass_for_addresses_or_algorithms() {
    for good in ["web", "db-1", "api.v2", "A_b"] {
        assert!(validate_pool_name(good).is_ok(), "{good}");
    }
    for (bad, why) in [
        ("", "1 to 64"),
        ("1web", "starts with a letter"),
        ("web/x", "letters, digits"),
        ("we b", "letters, digits"),
        ("p2c", "algorithm"),
        ("Round-Robin", "algorithm"),
    ] {
        let e = validate_pool_name(bad).unwrap_err().to_string();
        assert!(e.contains(why), "{bad:?}: {e}");
    }
    assert!(validate_pool_name(&"a".repeat(65)).is_err());
}

#[test]
fn display_round_trips() {
    for line in [
        "add 127.0.0.1:8004 weight=3 drain",
        "add [::1]:8004",
        "remove 10.0.0.1:80",
        "drain a.example:80",
        "enable 10.0.0.1:80",
        "maint 10.0.0.1:80",
        "weight 10.0.0.1:80 9",
        "algorithm p2c",
        "algorithm web p2c",
        "algorithm web",
        "stats",
        "stats web",
        "health db",
        "add web/10.0.0.9:5432 weight=2",
        "add 10.0.0.9:80 maint backup",
        "drain web/10.0.0.5:443",
        "drain 10.0.0.5:443 deadline=60s",
        "drain web/10.0.0.5:443 deadline=1500ms remove",
        "drain 10.0.0.5:443 remove",
        "what-if drain 10.0.0.5:443 deadline=5s",
        "what-if remove 10.0.0.1:80",
        "what-if add web/10.0.0.9:80 weight=2",
        "what-if algorithm web ip_hash",
        "explain 192.0.2.7",
        "explain web 2001:db8::7",
    ] {
        let cmd = Command::parse(line).unwrap();
        assert_eq!(cmd.to_string(), line);
        assert_eq!(Command::parse(&cmd.to_string()).unwrap(), cmd);
    }
}

#[test]
fn bad_commands_say_what_is_wrong() {
    let err = |line: &str| Command::parse(line).unwrap_err().to_string();
    assert_eq!(err(""), "empty command");
    assert!(err("frobnicate").starts_with("unknown command \"frobnicate\": expected one of add,"));
    assert!(err("add").contains("add: missing backend"));
    assert!(err("add 127.0.0.1").contains("missing port after \"127.0.0.1\""));
    assert!(err("add 127.0.0.1 99999").contains("invalid port \"99999\""));
    assert!(err("add 127.0.0.1:0").contains("invalid port \"0\""));
    assert!(err("add 127.0.0.1:80 weight=0").contains("weight 0 is out of range"));
    assert!(err("add 127.0.0.1:80 weight=abc").contains("invalid weight \"abc\""));
    assert!(err("add 127.0.0.1:80 bogus").contains("unexpected \"bogus\""));
    assert!(err("add bad_host!:80").contains("invalid host"));
    assert!(err("remove 127.0.0.1:80 extra").contains("unexpected \"extra\""));
    assert!(err("weight 127.0.0.1:80").contains("missing the new weight"));
    assert!(err("algorithm web fastest").contains("expected one of round_robin"));
    assert!(err("add ::1:80").contains("missing port after \"::1:80\""), "a bare IPv6 address");
    assert!(err("add fe80::1::2:80").contains("IPv6 addresses in brackets"));
    assert!(err("add [fe80::1%lo]:80").contains("zone IDs (%...) are not supported"));
}

#[test]
fn a_repeated_or_conflicting_option_is_named() {
    let err = |line: &str| Command::parse(line).unwrap_err().to_string();
    assert_eq!(
        err("add 127.0.0.1:3 weight=5 weight=6"),
        "add: weight given twice (\"weight=5\" and \"weight=6\"): give at most one"
    );
    assert_eq!(
        err("add 127.0.0.1:4 drain maint"),
        "add: admin state given twice (\"drain\" and \"maint\"): give at most one"
    );
    assert!(err("add 127.0.0.1:4 w=2 7").contains("weight given twice (\"w=2\" and \"7\")"));
    assert!(err("add 127.0.0.1:4 drain state=drain").contains("admin state given twice"));
    assert!(err("add 127.0.0.1 4 ready READY").contains("admin state given twice"));
    // One of each is fine, in either order.
    assert_eq!(
        Command::parse("add 127.0.0.1:4 maint weight=2").unwrap(),
        add(t("127.0.0.1", 4), Some(2), Some(AdminState::Maint))
    );
}

#[test]
fn what_if_and_explain_say_what_is_wrong_in_one_line() {
    let err = |line: &str| Command::parse(line).unwrap_err().to_string();
    assert_eq!(err("what-if"), "what-if: missing the command, e.g. `what-if remove 10.0.0.5:80`");
    assert_eq!(
        err("what-if stats"),
        "what-if: `stats` changes no backend choice: ask about add, remove, weight, drain, maint, enable or algorithm NAME"
    );
    assert!(err("what-if frobnicate").starts_with("what-if: unknown command \"frobnicate\""));
    assert_eq!(
        err("explain 10.0.0.300"),
        "explain: invalid client address \"10.0.0.300\": expected an IP address such as 192.0.2.7 or 2001:db8::7"
    );
    assert_eq!(err("explain"), "explain: missing the client address, e.g. `explain 192.0.2.7`");
    assert!(!Command::parse("what-if remove 10.0.0.1:80").unwrap().changes_state());
    assert!(!Command::parse("explain 192.0.2.7").unwrap().changes_state());
}

#[test]
fn backend_options_are_read_by_one_parser() {
    let parse = |words: &[&str]| BackendOptions::parse(words.iter().copied());
    assert_eq!(parse(&[]).unwrap(), BackendOptions::default());
    assert_eq!(
        parse(&["weight=3", "drain"]).unwrap(),
        BackendOptions { weight: Some(3), state: Some(AdminState::Drain), backup: false }
    );
    assert!(parse(&["BACKUP", "weight=2"]).unwrap().backup);
    let twice = parse(&["backup", "backup"]).unwrap_err().to_string();
    assert!(twice.contains("backup given twice"), "{twice}");
    assert_eq!(parse(&["W=4"]).unwrap().weight, Some(4));
    assert_eq!(parse(&["state=maint"]).unwrap().state, Some(AdminState::Maint));
    assert!(parse(&[""]).unwrap_err().to_string().contains("unexpected \"\""));
    assert!(parse(&["weight=0"]).unwrap_err().to_string().contains("out of range"));
    assert!(parse(&["fast"]).unwrap_err().to_string().contains("unexpected \"fast\""));
}

#[test]
fn an_unbracketed_ipv6_address_gets_a_bracketed_example() {
    let err = |line: &str| Command::parse(line).unwrap_err().to_string();
    assert_eq!(
        err("add ::1:8001"),
        "add: missing port after \"::1:8001\": write an IPv6 address in brackets before its port, e.g. `add [::1]:8001`"
    );
    assert!(err("drain ::1").contains("e.g. `drain [::1]:8001`"));
    assert!(err("add 2001:db8::1:80").contains("e.g. `add [2001:db8::1]:80`"));
    assert!(err("add ::1:8001 weight=2").contains("e.g. `add [::1]:8001`"));
    // IPv4 and names keep the `host port` example.
    assert!(err("add 127.0.0.1").contains("e.g. `add 127.0.0.1 8001`"));
    assert!(err("remove localhost").contains("e.g. `remove localhost 8001`"));
}

#[test]
fn errors_never_carry_control_characters() {
    for line in ["drain \u{1b}[2J\u{1b}[31mRED", "add h\u{7}st", "weight a:1 \u{7f}"] {
        let e = Command::parse(line).unwrap_err().to_string();
        assert!(!e.contains(char::is_control), "{e:?}");
    }
    let e = Command::parse("drain \u{1b}[2J").unwrap_err().to_string();
    assert!(e.contains("\\u{1b}[2J 8001`"), "{e}");
}

#[test]
fn drain_takes_a_deadline_and_remove_in_either_order() {
    let drain = |deadline, remove| Command::Drain { backend: b("10.0.0.5", 80), deadline, remove };
    let secs = |s| Some(Duration::from_secs(s));
    for (line, cmd) in [
        ("drain 10.0.0.5:80", drain(None, false)),
        ("drain 10.0.0.5 80 deadline=60s", drain(secs(60), false)),
        ("drain 10.0.0.5:80 remove deadline=1m30s", drain(secs(90), true)),
        ("drain 10.0.0.5:80 deadline=2s REMOVE", drain(secs(2), true)),
        ("drain 10.0.0.5:80 Deadline=2s", drain(secs(2), false)),
    ] {
        assert_eq!(Command::parse(line).unwrap(), cmd, "{line}");
    }
    let err = |line: &str| Command::parse(line).unwrap_err().to_string();
    assert!(err("drain 10.0.0.5:80 deadline=soon").contains("invalid duration \"soon\""));
    assert!(err("drain 10.0.0.5:80 deadline=0").contains("positive duration"));
    assert!(err("drain 10.0.0.5:80 deadline=1s deadline=2s").contains("twice"));
    assert!(err("drain 10.0.0.5:80 remove remove").contains("twice"));
    assert!(err("drain 10.0.0.5:80 now").contains("expected deadline=DURATION"));
    assert!(err("drain deadline=5s 10.0.0.5:80").contains("name the backend first"));
    assert!(err("drain remove 10.0.0.5:80").contains("name the backend first"));
}
