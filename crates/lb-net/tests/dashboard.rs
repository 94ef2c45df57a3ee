//! The dashboard (`GET /` of the admin endpoint) in a real browser: headless Chromium, driven
//! through the DevTools protocol, against a balancer with real TCP backends.
//!
//! Skipped, saying so, when no Chromium is installed (`.ci/run` installs Debian's `chromium`
//! and sets `LB_REQUIRE_CHROMIUM`, which turns the skip into a failure;
//! `LB_CHROMIUM=/path/to/chrome` picks another browser). The screenshots go to the test's temporary
//! directory; with `LB_DASHBOARD_SCREENSHOT=docs/dashboard.png` the laptop-width one is also
//! written there (that is how the one in docs/ is made).

#[path = "support/browser.rs"]
mod browser;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use browser::Browser;
use lb_core::Pool;
use lb_net::admin::{self, AdminConfig};
use lb_net::{Handle, HealthCheckConfig, ProxyConfig};
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "s3cret-token";

/// Longest wait for the page to show something the balancer already knows: a poll every 2 s,
/// a browser on a busy machine.
const PAGE_DEADLINE: Duration = Duration::from_secs(20);

/// Starts an admin endpoint for `handle` on 127.0.0.1:0, stopped with the balancer.
async fn admin_endpoint(handle: &Handle, token: Option<&str>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = AdminConfig { token: token.map(str::to_owned), allowed_hosts: Vec::new() };
    let stopping = handle.clone();
    tokio::spawn(admin::run(listener, handle.clone(), config, async move {
        stopping.shutdown_requested().await
    }));
    addr
}

/// `POST /command` as `lb ctl` sends it; returns the status and the answer.
async fn command(admin: SocketAddr, token: &str, line: &str) -> (u16, String) {
    let mut s = TcpStream::connect(admin).await.unwrap();
    let request = format!(
        "POST /command HTTP/1.1\r\nHost: {admin}\r\nX-LB-Admin: 1\r\n\
         Authorization: Bearer {token}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{line}",
        line.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let status = raw.split(' ').nth(1).unwrap().parse().unwrap();
    (status, raw.split_once("\r\n\r\n").unwrap().1.to_owned())
}

/// Evaluates `expression` in the page until `done` accepts its value, failing after
/// [`PAGE_DEADLINE`] with the last value seen. An expression that throws (the page is still
/// loading after a navigation) counts as not yet.
async fn page_until(
    browser: &mut Browser,
    what: &str,
    expression: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + PAGE_DEADLINE;
    loop {
        let value = match browser.eval(expression).await {
            Ok(value) if done(&value) => return value,
            Ok(value) => value,
            Err(e) => Value::String(e),
        };
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for the page to show {what}; last: {value}\npage log: {:?}",
            browser.log
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The backend rows as the page shows them: backend, state (the row's and the badge's text),
/// weight, and the badge's colour.
const ROWS: &str = r##"[...document.querySelectorAll("#pools tbody tr")].map(tr => {
    const badge = tr.querySelector(".badge");
    return {
        backend: tr.dataset.backend,
        state: tr.dataset.state,
        badge: badge ? badge.textContent : null,
        color: badge ? getComputedStyle(badge).color : null,
        weight: tr.children[2].textContent,
        reason: (tr.querySelector(".reason") || {}).textContent || null,
        points: (p => p ? p.points.length : 0)(tr.querySelector(".spark polyline")),
    };
})"##;

fn row(rows: &Value, backend: SocketAddr) -> Option<&Value> {
    let backend = backend.to_string();
    rows.as_array()?.iter().find(|r| r["backend"] == backend.as_str())
}

fn shows(rows: &Value, backend: SocketAddr, state: &str) -> bool {
    row(rows, backend).is_some_and(|r| r["state"] == state && r["badge"] == state)
}

/// Runs a client through the balancer every few milliseconds until aborted, so the counters,
/// rates and sparklines have something to show.
fn traffic(lb: SocketAddr) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..u64::MAX {
            if let Ok((mut stream, _)) = tcp_greeting(lb).await {
                let payload = vec![b'x'; 200 + (i % 7) as usize * 900];
                let _ = stream.write_all(&payload).await;
                let _ = stream.shutdown().await;
                let _ = stream.read_to_end(&mut Vec::new()).await;
            }
            tokio::time::sleep(Duration::from_millis(15 + (i % 5) * 20)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_every_backend_and_follows_commands_in_chromium() {
    let Some(chromium) = browser::find() else {
        // .ci/run sets this once it has installed Chromium: there a skip would hide a failure.
        assert!(
            std::env::var_os("LB_REQUIRE_CHROMIUM").is_none(),
            "LB_REQUIRE_CHROMIUM is set but no Chromium was found (chromium, chromium-browser, \
             google-chrome on the PATH, or LB_CHROMIUM)"
        );
        eprintln!(
            "SKIPPED the_dashboard_shows_every_backend_and_follows_commands_in_chromium: no \
             Chromium found (install Debian's `chromium`, or set LB_CHROMIUM=/path/to/chrome)"
        );
        return;
    };

    // Two backends that answer, one address where nothing listens.
    let (b1, _b1) = tcp_named_backend("b1").await;
    let (b2, _b2) = tcp_named_backend("b2").await;
    let held = HeldPort::refusing();
    let dead = held.addr();
    let pool = Pool::default();
    pool.add(b1, Some(3)).unwrap();
    pool.add(b2, None).unwrap();
    pool.add(dead, None).unwrap();
    let health = HealthCheckConfig { interval: Duration::from_millis(100), ..Default::default() };
    let (lb, handle, task) = start(pool, ProxyConfig::default(), health).await;
    let admin = admin_endpoint(&handle, Some(TOKEN)).await;
    let readonly = admin_endpoint(&handle, None).await;
    let load = traffic(lb);
    // Two connections held open, so "active" is not always zero.
    let held = [tcp_greeting(lb).await.unwrap().0, tcp_greeting(lb).await.unwrap().0];

    let mut browser = Browser::launch(&chromium, 1280, 800).await.unwrap();
    let origin = format!("http://{admin}");
    browser.navigate(&format!("{origin}/")).await.unwrap();

    // Every backend, with its state in colour; the dead one down, with the reason.
    let rows = page_until(&mut browser, "b1 and b2 up, the dead one down", ROWS, |rows| {
        rows.as_array().is_some_and(|r| r.len() == 3)
            && shows(rows, b1, "up")
            && shows(rows, b2, "up")
            && shows(rows, dead, "down")
            && row(rows, dead).is_some_and(|r| r["reason"].is_string())
    })
    .await;
    assert_ne!(row(&rows, b1).unwrap()["color"], row(&rows, dead).unwrap()["color"]);
    assert_eq!(row(&rows, b1).unwrap()["weight"], "3");
    let reason = row(&rows, dead).unwrap()["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("refused"), "{reason}");

    // A drain issued through the admin endpoint shows within a few seconds.
    let (status, answer) = command(admin, TOKEN, &format!("drain {b2}")).await;
    assert_eq!(status, 200, "{answer}");
    page_until(&mut browser, "b2 draining", ROWS, |rows| shows(rows, b2, "drain")).await;
    // ... and among the recent events, with the health change of the dead backend.
    let events = r##"[...document.querySelectorAll("#events li")].map(li => [li.dataset.kind, li.textContent])"##;
    page_until(&mut browser, "the drain and the health change in the events", events, |e| {
        let e = e.as_array().cloned().unwrap_or_default();
        let has = |kind: &str, text: &str| {
            e.iter().any(|x| x[0] == kind && x[1].as_str().is_some_and(|t| t.contains(text)))
        };
        has("command", &format!("drain {b2}")) && has("health-down", &dead.to_string())
    })
    .await;

    // Actions from the page: a wrong token is refused and changes nothing...
    let act = |token: &str, backend: SocketAddr, weight: &str, button: &str| {
        format!(
            r##"(() => {{
                const t = document.getElementById("token");
                t.value = "{token}";
                t.dispatchEvent(new Event("input"));
                const row = [...document.querySelectorAll("#pools tbody tr")]
                    .find(r => r.dataset.backend === "{backend}");
                row.querySelector(".act input").value = "{weight}";
                row.querySelector('.act button[data-command="{button}"]').click();
                return true;
            }})()"##
        )
    };
    browser.eval(&act("wrong", b1, "", "maint")).await.unwrap();
    let answer = r##"[document.getElementById("answer").className, document.getElementById("answer").textContent]"##;
    page_until(&mut browser, "the wrong token refused", answer, |a| {
        a[0] == "answer error" && a[1].as_str().is_some_and(|t| t.contains("not accepted"))
    })
    .await;
    assert_eq!(handle.stats().pool().backends[0].admin, lb_core::AdminState::Ready);
    // ... the right one goes through the guard (same origin, X-LB-Admin, bearer token).
    browser.eval(&act(TOKEN, b1, "7", "weight")).await.unwrap();
    page_until(&mut browser, "b1 at weight 7", ROWS, |rows| {
        row(rows, b1).is_some_and(|r| r["weight"] == "7")
    })
    .await;
    assert_eq!(handle.stats().pool().backends[0].weight, 7);

    // Enough polls for the rate sparklines to have a shape, then the screenshot.
    page_until(&mut browser, "sparklines", ROWS, |rows| {
        row(rows, b1).is_some_and(|r| r["points"].as_u64() >= Some(4))
    })
    .await;
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{} bytes", png.len());
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&shot, &png).unwrap();
    eprintln!("dashboard screenshot: {}", shot.display());
    if let Some(path) = std::env::var_os("LB_DASHBOARD_SCREENSHOT") {
        // Relative to the workspace, not to this crate (where cargo runs the test).
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
        std::fs::write(&path, &png).unwrap();
        eprintln!("dashboard screenshot also written to {}", path.display());
    }

    // At phone width: no sideways scrolling, each backend a card of label/value lines.
    browser.viewport(390, 844, true).await.unwrap();
    let layout = r##"[document.documentElement.scrollWidth, innerWidth,
        getComputedStyle(document.querySelector("#pools thead")).display,
        getComputedStyle(document.querySelector("#pools tbody td.num")).display]"##;
    let layout = page_until(&mut browser, "the phone layout", layout, |l| l[2] == "none").await;
    assert!(layout[0].as_u64() <= layout[1].as_u64(), "wider than the screen: {layout}");
    assert_eq!(layout[3], "flex");
    let phone = browser.screenshot().await.unwrap();
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-phone.png"),
        phone,
    )
    .unwrap();
    browser.viewport(1280, 800, false).await.unwrap();

    // Without a token configured the page is read-only and says how to enable actions.
    let readonly_origin = format!("http://{readonly}");
    browser.navigate(&format!("{readonly_origin}/")).await.unwrap();
    let state = r##"[document.body.className,
        document.getElementById("actions-readonly").offsetParent !== null,
        document.getElementById("actions-readonly").textContent.includes("--admin-token"),
        document.querySelectorAll("#pools tbody tr").length,
        [...document.querySelectorAll("#pools td.act")].every(td => getComputedStyle(td).display === "none")]"##;
    page_until(&mut browser, "the read-only page", state, |s| {
        s[0] == "readonly" && s[1] == true && s[2] == true && s[3] == 3 && s[4] == true
    })
    .await;

    // One more round trip collects the last events; then what the page did, all of it.
    browser.eval("1").await.unwrap();
    let log = std::mem::take(&mut browser.log);
    browser.close().await;
    assert!(log.errors.is_empty(), "script errors: {:#?}", log.errors);
    // The one refused command is the only failed request.
    assert!(
        log.network_errors.iter().all(|e| e.contains("401") && e.contains("/command")),
        "{:#?}",
        log.network_errors
    );
    let outside: Vec<&String> = log
        .requests
        .iter()
        .filter(|url| {
            !url.starts_with(&format!("{origin}/"))
                && !url.starts_with(&format!("{readonly_origin}/"))
                // The empty favicon is inline, not a request to anywhere.
                && !url.starts_with("data:")
        })
        .collect();
    assert!(outside.is_empty(), "requests outside the admin endpoint: {outside:?}");
    for path in ["/", "/dashboard.js", "/dashboard.css", "/stats", "/command"] {
        let url = format!("{origin}{path}");
        assert!(log.requests.contains(&url), "never requested {url}: {:?}", log.requests);
    }

    load.abort();
    drop(held);
    stop(handle, task).await;
}
