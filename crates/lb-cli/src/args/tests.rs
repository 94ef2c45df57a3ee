use super::*;

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
    assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
    assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
    assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
    assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    for bad in ["", "2", "2x", "s", "-1s", "1.5s", "2 s"] {
        assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(parse_optional_duration("off").unwrap().0, None);
    assert_eq!(parse_optional_duration("0").unwrap().0, None);
    assert!(parse_positive_duration("0s").unwrap_err().contains("must be positive"));
    assert!(parse_duration("99999999999999999999999h").unwrap_err().contains("too large"));
    assert!(parse_limit("99999999999999999999").unwrap_err().contains("too large"));
    assert!(parse_limit("ten").unwrap_err().contains("expected a whole number"));
}

#[test]
fn backends() {
    let b = parse_backend("127.0.0.1:8004,weight=3").unwrap();
    assert_eq!(
        (b.target.to_string(), b.weight, b.state),
        ("127.0.0.1:8004".into(), Some(3), AdminState::Ready)
    );
    let b = parse_backend("[::1]:9000,drain").unwrap();
    assert_eq!((b.target.to_string(), b.state), ("[::1]:9000".into(), AdminState::Drain));
    assert!(parse_backend("127.0.0.1").unwrap_err().contains("missing port"));
    assert!(parse_backend("127.0.0.1:80,weight=0").unwrap_err().contains("out of range"));
    assert!(parse_backend("127.0.0.1:80,fast").unwrap_err().contains("unexpected \"fast\""));
    // The options of `add`, read by the same parser.
    let b = parse_backend("127.0.0.1:80, weight=2 ,MAINT").unwrap();
    assert_eq!((b.weight, b.state), (Some(2), AdminState::Maint));
    assert_eq!(
        parse_backend("127.0.0.1:80,weight=2,weight=3").unwrap_err(),
        "weight given twice (\"weight=2\" and \"weight=3\"): give at most one"
    );
    assert_eq!(
        parse_backend("127.0.0.1:80,weight=2,drain,maint").unwrap_err(),
        "admin state given twice (\"drain\" and \"maint\"): give at most one"
    );
}

#[test]
fn hosts_take_ipv6_with_or_without_brackets() {
    assert_eq!(parse_host("[::1]").unwrap(), "::1");
    assert_eq!(parse_host("::1").unwrap(), "::1");
    assert_eq!(parse_host("[::]").unwrap(), "::");
    assert_eq!(parse_host("localhost").unwrap(), "localhost");
    assert_eq!(parse_host("0.0.0.0").unwrap(), "0.0.0.0");
    for bad in ["[::1", "[1.2.3.4]", "[localhost]", "[::1]:80", "", "a b", "a\nb"] {
        assert!(parse_host(bad).unwrap_err().starts_with("invalid host"), "{bad:?}");
    }
    for (with_port, host) in [("127.0.0.1:80", "127.0.0.1"), ("localhost:8080", "localhost")] {
        let e = parse_host(with_port).unwrap_err();
        assert!(e.contains(&format!("the host alone, e.g. {host} (the port is --port")), "{e}");
    }
}

#[test]
fn admin_tokens_must_be_sendable() {
    assert_eq!(parse_admin_token("s3cret-_.~+/=!").unwrap(), "s3cret-_.~+/=!");
    assert!(parse_admin_token("").unwrap_err().contains("empty"));
    assert!(parse_admin_token("a b").unwrap_err().contains("a space"));
    assert!(parse_admin_token(" a").unwrap_err().contains("a space"));
    assert!(parse_admin_token("a\tb").unwrap_err().contains("a control character"));
    assert!(parse_admin_token("a\nb").unwrap_err().contains("a control character ('\\n'"));
    assert!(parse_admin_token("pässword").unwrap_err().contains("a non-ASCII character"));
    // The message never repeats the token.
    let e = Args::try_parse_from(["lb", "--admin-token", "my secret"]).unwrap_err();
    let text = e.render().to_string();
    assert!(!text.contains("my secret") && text.contains("a space"), "{text}");
}

#[test]
fn flag_errors_escape_control_characters_in_the_value() {
    for (flag, value) in [
        ("--health-check", "http:/a\r\nX: y"),
        ("--port", "1\n\n2"),
        ("--backend", "127.0.0.1:1\n2"),
        ("--host", "a\rb"),
    ] {
        let e = Args::try_parse_from(["lb", flag, value]).unwrap_err();
        let text = e.render().to_string();
        let first = text.lines().next().unwrap();
        assert!(!first.contains('\r'), "{text:?}");
        assert!(first.contains(&value.escape_debug().to_string()), "{text:?}");
        // The reason is on the first line too, not cut off by a line break in the value.
        assert!(first.contains(&format!("for '{flag} ")) && first.contains("\": "), "{text:?}");
    }
    let e = Args::try_parse_from(["lb", "--health-check", "http:/a\r\nX: y"]).unwrap_err();
    assert!(e.render().to_string().contains("must not contain spaces or control characters"));
    // Errors raised by clap itself (an unknown flag) quote the word too; `one_line_error`
    // escapes them the same way, for main to apply before rendering (not done yet there).
    let e = Args::try_parse_from(["lb", "--bogus\n\nx"]).unwrap_err();
    let text = one_line_error(e).render().to_string();
    assert!(text.lines().next().unwrap().contains("'--bogus\\n\\nx'"), "{text:?}");
}

#[test]
fn log_levels() {
    for ok in ["info", "DEBUG", "info,lb::access=off", "warn,lb_net=debug"] {
        assert!(parse_log_level(ok).is_ok(), "{ok}");
    }
    for bad in ["verbose", "info,lb::access=loud", "=info"] {
        assert!(parse_log_level(bad).is_err(), "{bad}");
    }
}

#[test]
fn flags_are_consistent_and_defaults_parse() {
    use clap::CommandFactory;
    Args::command().debug_assert();
    let args = Args::try_parse_from(["lb"]).unwrap().settings;
    assert_eq!(
        (args.host.as_str(), args.port, args.algorithm),
        ("localhost", 8080, Algorithm::RoundRobin)
    );
    assert_eq!(args.backends.len(), 3);
    assert_eq!(args.idle_timeout.0, Some(Duration::from_secs(300)));
    assert_eq!(args.health_check.0, Some(CheckKind::Tcp));
    assert_eq!((args.max_connections.0, args.log_file.as_str()), (None, "load_balancer.log"));
    let args = Args::try_parse_from([
        "lb",
        "--idle-timeout",
        "off",
        "--health-check",
        "off",
        "--max-connections",
        "10",
    ])
    .unwrap()
    .settings;
    assert_eq!(
        (args.idle_timeout.0, args.health_check.0, args.max_connections.0),
        (None, None, Some(10))
    );
}

#[test]
fn the_help_names_every_command() {
    // `help` and `exit` go without saying (`quit` is named).
    let named = AFTER_HELP.split("commands (").nth(1).and_then(|s| s.split(')').next()).unwrap();
    let named: Vec<&str> = named.split(',').map(str::trim).collect();
    for command in lb_net::COMMAND_NAMES.iter().filter(|c| !["help", "exit"].contains(c)) {
        assert!(named.contains(command), "--help does not name {command}: {named:?}");
    }
}

#[test]
fn an_empty_log_file_name_is_refused() {
    for empty in ["", "  "] {
        let e = parse_log_file(empty).unwrap_err();
        assert!(e.contains("expected a path"), "{e}");
    }
    assert_eq!(parse_log_file("lb.log").unwrap(), "lb.log");
}

#[test]
fn a_negative_number_is_a_bad_value_not_an_unknown_flag() {
    use clap::Parser;
    for (flag, says) in [("--port", "invalid port \"-1\""), ("--max-connections", "invalid limit")]
    {
        let e = Args::try_parse_from(["lb", flag, "-1"]).unwrap_err().to_string();
        assert!(e.contains(says), "{flag}: {e}");
    }
}
