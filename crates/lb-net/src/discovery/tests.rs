use super::*;

#[test]
fn parses_the_two_forms() {
    assert_eq!(
        "dns:app.internal:8080".parse::<DnsQuery>().unwrap(),
        DnsQuery::Host { name: "app.internal".into(), port: 8080 }
    );
    assert_eq!(
        "srv:_http._tcp.web.service.consul".parse::<DnsQuery>().unwrap(),
        DnsQuery::Srv { name: "_http._tcp.web.service.consul".into() }
    );
    assert_eq!("SRV:web.".parse::<DnsQuery>().unwrap().to_string(), "srv:web.");
    assert_eq!("dns:a:1".parse::<DnsQuery>().unwrap().to_string(), "dns:a:1");
}

#[test]
fn bad_forms_say_what_was_expected() {
    let e = |s: &str| s.parse::<DnsQuery>().unwrap_err().to_string();
    assert!(
        e("app.internal:8080")
            .starts_with("invalid discover \"app.internal:8080\": expected dns:HOST:PORT"),
        "{}",
        e("x")
    );
    assert!(e("http:app").contains("expected dns:HOST:PORT"));
    assert_eq!(
        e("dns:app"),
        "invalid discover \"dns:app\": expected dns:HOST:PORT, e.g. dns:app.internal:8080"
    );
    assert!(e("dns:app:0").contains("port \"0\" is not a number from 1 to 65535"));
    assert!(e("dns:app:http").contains("port \"http\""));
    assert!(e("dns:10.0.0.5:80").contains("is an address, not a name"));
    assert!(e("srv:").contains("the name is empty"));
    assert!(e("srv:a..b").contains("\"\" is not a DNS label"));
    assert!(e("dns:a b:80").contains("\"a b\" is not a DNS label"));
    assert!(e(&format!("srv:{}", "a".repeat(64))).contains("is not a DNS label"));
    // One line, whatever was written.
    assert_eq!(e("srv:a\nb").lines().count(), 1);
}
