//! `lb ctl`: sends one command to a running balancer's admin endpoint and prints the answer,
//! so `lb ctl stats` or `lb ctl drain 127.0.0.1:8002` work from another shell.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, SERVER};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::args::CtlArgs;

/// How long `lb ctl` waits for an answer before giving up.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The largest answer `lb ctl` reads: `/stats` of a 10,000-backend balancer is about 12 MB;
/// something sending more is not lb's endpoint, and must not fill this process's memory.
const MAX_ANSWER: usize = 64 << 20;

/// Parses an admin address: `PORT` or `:PORT` mean 127.0.0.1 (the admin endpoint is on
/// loopback unless a host is given), `HOST:PORT` as given.
pub(crate) fn parse_admin_addr(s: &str) -> Result<lb_net::Target, String> {
    let s = s.trim();
    let with_host = match s.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => format!("127.0.0.1:{s}"),
        None => s.to_owned(),
    };
    // Port 0 (any free port, printed at start-up) is fine for an endpoint we bind.
    if let Ok(addr) = with_host.parse::<SocketAddr>() {
        return Ok(lb_net::Target { host: addr.ip().to_string(), port: addr.port() });
    }
    // A port out of range: say so with the admin endpoint's range, which has 0 in it.
    if let Some((host, port)) = with_host.rsplit_once(':') {
        if !host.is_empty() && !port.contains(']') && port.parse::<u16>().is_err() {
            return Err(format!(
                "invalid admin address {s:?}: invalid port {port:?}: expected a number from 0 to \
                 65535 (0 picks a free port, printed at start-up)"
            ));
        }
    }
    lb_net::Target::parse_one(&with_host).map_err(|e| format!("invalid admin address {s:?}: {e}"))
}

/// Whether the endpoint closed (or reset) the connection before any answer: hyper reports it
/// as an incomplete message, a cancelled request or an I/O error, depending on when the close
/// came. A request cancelled because of something the connection did is judged by that: bytes
/// that came before the request was sent (a server that speaks first) are not a close.
fn closed_unanswered(e: &hyper::Error) -> bool {
    let cause = std::error::Error::source(e).and_then(|c| c.downcast_ref::<hyper::Error>());
    if let (true, Some(cause)) = (e.is_canceled(), cause) {
        return closed_unanswered(cause);
    }
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = cause.source();
    }
    false
}

/// The admin address `lb ctl` uses when none is given and no config file names one.
const DEFAULT_ADMIN: &str = "127.0.0.1:9090";

/// Runs `lb ctl`: exit status 0 when the command succeeded, 1 when it failed or the endpoint
/// could not be reached, 2 for bad arguments (a config file that does not load).
pub(crate) fn main(args: &CtlArgs) -> ExitCode {
    // `lb ctl stats --help`: the words after the command are the command's, but no command
    // takes -h or --help, so that is a request for this help rather than a pool named so.
    if args.words.iter().any(|w| w == "--help" || w == "-h") {
        use clap::CommandFactory;
        let mut command = crate::args::Args::command();
        if let Some(ctl) = command.find_subcommand_mut("ctl") {
            let help = ctl.clone().bin_name("lb ctl").render_long_help();
            out!("{}", help.to_string().trim_end());
        }
        return ExitCode::SUCCESS;
    }
    let file = match &args.config {
        Some(path) => match crate::config::load(path) {
            Ok(file) => Some(file),
            Err(e) => {
                err!("lb: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let from_file = file.as_ref().and_then(|f| f.settings.admin.clone().flatten());
    if let (None, None, Some(path)) = (&args.admin, &from_file, &args.config) {
        // Guessing the default address would talk to whatever listens there.
        err!(
            "lb: {} sets no admin address (no `admin` key): pass --admin with the address lb \
             serves its admin endpoint on",
            path.display()
        );
        return ExitCode::from(2);
    }
    let admin =
        args.admin.clone().or(from_file).unwrap_or_else(|| {
            parse_admin_addr(DEFAULT_ADMIN).expect("the default address parses")
        });
    if admin.port == 0 {
        err!(
            "lb: admin port 0 means a free port picked when lb started; pass --admin with the \
             port it printed (\"admin endpoint on http://...\")"
        );
        return ExitCode::from(2);
    }
    // An empty LB_ADMIN_TOKEN is no token; anything else must be sendable in a header.
    let token = args.token.clone().filter(|t| !t.is_empty());
    let token = match token.or_else(|| file.and_then(|f| f.settings.admin_token.flatten())) {
        Some(t) => match crate::args::parse_admin_token(&t) {
            Ok(t) => Some(t),
            Err(e) => {
                err!("lb: --token: {e}");
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    // `--wait` after the command's words (`lb ctl drain X deadline=60s --wait`) is ctl's, not
    // the command's: the words take everything after the command name.
    let mut wait = args.wait;
    let words: Vec<&str> = args
        .words
        .iter()
        .map(String::as_str)
        .filter(|w| {
            let ours = *w == "--wait";
            wait |= ours;
            !ours
        })
        .collect();
    let command = words.join(" ");
    if wait && !words.first().is_some_and(|w| w.eq_ignore_ascii_case("drain")) {
        err!("lb: --wait goes with drain, e.g. `lb ctl drain 127.0.0.1:8001 deadline=60s --wait`");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            err!("lb: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(send(&admin, token.as_deref(), &command)) {
        Ok(answer) if wait => runtime.block_on(follow_drain(&admin, token.as_deref(), &answer)),
        Ok(answer) => {
            out!("{answer}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            err!("lb: {e}");
            ExitCode::from(1)
        }
    }
}

/// Sends `command` (`POST /command`) and returns the answer text, or what went wrong: the
/// endpoint's error (a bad command, a refused token) or why it could not be reached.
pub(crate) async fn send(
    admin: &lb_net::Target,
    token: Option<&str>,
    command: &str,
) -> Result<String, String> {
    exchange(admin, token, Method::POST, "/command", command).await
}

/// Sends one request to the admin endpoint and returns the answer's body, or what went wrong.
async fn exchange(
    admin: &lb_net::Target,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: &str,
) -> Result<String, String> {
    let addrs: Vec<SocketAddr> = admin.resolve().await.map_err(|e| e.to_string())?;
    let exchange = async {
        let mut last_error = None;
        let mut stream = None;
        for addr in &addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    stream = Some((s, *addr));
                    break;
                }
                Err(e) => last_error = Some(format!("{addr}: {e}")),
            }
        }
        let Some((stream, connected)) = stream else {
            return Err(format!(
                "cannot reach the admin endpoint at {admin} ({}); is lb running with --admin {}?",
                last_error.unwrap_or_default(),
                admin.port
            ));
        };
        // Anything that does not speak HTTP back (say, the proxy's own port) is not lb's
        // admin endpoint.
        let not_admin = |e: hyper::Error| match closed_unanswered(&e) {
            // lb's endpoint closes a connection at once, unanswered, when it already serves
            // its most (`lb_net::admin::MAX_ADMIN_CONNECTIONS`).
            true => format!(
                "{admin} closed the connection without answering: lb's admin endpoint does that \
                 when all its {} connections are in use (try again; its log then says 'too many \
                 admin connections open'), or that is not the --admin address",
                lb_net::admin::MAX_ADMIN_CONNECTIONS
            ),
            false => format!(
                "{admin} did not answer as lb's admin endpoint ({e}); is that the --admin address?"
            ),
        };
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(not_admin)?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            // The address connected to, not the name given: the endpoint answers only to
            // addresses and the names it was told (its DNS-rebinding guard), and a name that
            // resolved to it is as good as the address.
            .header(HOST, connected.to_string())
            .header(lb_net::admin::CLIENT_HEADER, "1")
            .header(CONTENT_TYPE, "text/plain; charset=utf-8");
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = sender.send_request(request).await.map_err(not_admin)?;
        // Another HTTP server on that port (a 200 from it would otherwise read as success):
        // lb's endpoint names itself in every answer (`lb_net::admin::SERVER`).
        let server = response.headers().get(SERVER).map(|v| String::from_utf8_lossy(v.as_bytes()));
        if !server.as_deref().is_some_and(|s| s.starts_with("lb/")) {
            let said =
                server.map_or_else(|| "no Server header".to_owned(), |s| format!("Server: {s}"));
            return Err(format!(
                "{admin} answered {} but is not lb's admin endpoint ({said}); is that the --admin address?",
                response.status()
            ));
        }
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| match e.is::<http_body_util::LengthLimitError>() {
                true => format!(
                    "admin endpoint at {admin}: the answer is larger than {} MiB, more than lb's \
                     endpoint sends; is that the --admin address?",
                    MAX_ANSWER >> 20
                ),
                false => format!("admin endpoint at {admin}: {e}"),
            })?
            .to_bytes();
        // Printed to a terminal: another server on that port must not be able to drive it
        // (lb's own answers hold no control characters but line ends and tabs).
        let text = String::from_utf8_lossy(&body);
        let text = crate::args::escape_controls_but(text.trim_end(), &['\n', '\t']);
        let reason = text.trim_start_matches("error: ");
        match status {
            StatusCode::OK => Ok(text),
            StatusCode::UNAUTHORIZED if token.is_some() => Err(format!(
                "the admin endpoint at {admin} refused the token: it is not the --admin-token lb \
                 was started with"
            )),
            StatusCode::UNAUTHORIZED => {
                Err(format!("{reason} (pass --token or set LB_ADMIN_TOKEN)"))
            }
            // A bad command: the endpoint says what was wrong.
            StatusCode::BAD_REQUEST if !reason.is_empty() => Err(reason.to_owned()),
            _ if reason.is_empty() => {
                Err(format!("the admin endpoint at {admin} answered {status}"))
            }
            _ => Err(format!("the admin endpoint at {admin} answered {status}: {reason}")),
        }
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer from the admin endpoint at {admin} within {TIMEOUT:?}")),
    }
}

/// How often `--wait` asks how a drain is going.
const WAIT_POLL: Duration = Duration::from_millis(500);

/// `lb ctl drain ... --wait`: after the drain's answer, follows the drain in `GET /stats`
/// until it ends, printing the open connections as they go down. Exit status 0 when the
/// backend emptied or the deadline closed what was left, 1 when the drain was cancelled (an
/// `enable`, say) or could not be followed.
async fn follow_drain(admin: &lb_net::Target, token: Option<&str>, answer: &str) -> ExitCode {
    out!("{answer}");
    // `draining web/10.0.0.5:80: no new connections, ...`
    let Some((name, _)) =
        answer.strip_prefix("draining ").and_then(|rest| rest.split_once(": no new connections"))
    else {
        err!("lb: cannot follow the drain: unexpected answer");
        return ExitCode::from(1);
    };
    let mut shown: Option<(u64, u64)> = None;
    // The drain followed: the newest of the backend when first asked (the one the command
    // just started), then that one by its number, whatever starts after it.
    let mut following: Option<u64> = None;
    loop {
        let stats = match exchange(admin, token, Method::GET, "/stats", "").await {
            Ok(body) => serde_json::from_str::<lb_net::admin::StatsJson>(&body)
                .map_err(|e| format!("unexpected answer from GET /stats: {e}")),
            Err(e) => Err(e),
        };
        let stats = match stats {
            Ok(stats) => stats,
            Err(e) => {
                err!("lb: following the drain of {name}: {e}");
                return ExitCode::from(1);
            }
        };
        let drain = stats
            .pools
            .iter()
            .flat_map(|p| p.drains.iter().map(move |d| (p, d)))
            .filter(|(p, d)| {
                let full = if p.name == lb_net::DEFAULT_POOL {
                    d.backend.clone()
                } else {
                    format!("{}/{}", p.name, d.backend)
                };
                full == name && following.is_none_or(|id| d.id == id)
            })
            .max_by_key(|(_, d)| d.id)
            .map(|(_, d)| d);
        following = following.or(drain.map(|d| d.id));
        let Some(d) = drain else {
            err!("lb: the drain of {name} is no longer listed (too many drains since?)");
            return ExitCode::from(1);
        };
        let removed = if d.removed { "; removed" } else { "" };
        match d.outcome.as_deref() {
            // The deadline has passed and the cut is under way: its count comes next.
            None if d.remaining_seconds.is_some_and(|left| left <= 0.0) => {}
            None => {
                // A line when the count changes, and every 10 s of silence.
                let tick = d.elapsed_seconds as u64 / 10;
                if shown != Some((d.open, tick)) {
                    shown = Some((d.open, tick));
                    let s = if d.open == 1 { "" } else { "s" };
                    match d.remaining_seconds {
                        Some(left) => out!(
                            "{name}: {} connection{s} open, {:.0}s to the deadline",
                            d.open,
                            left.ceil()
                        ),
                        None => out!("{name}: {} connection{s} open", d.open),
                    }
                }
            }
            Some("emptied") => {
                out!("{name}: empty after {:.1}s{removed}", d.elapsed_seconds);
                return ExitCode::SUCCESS;
            }
            Some("cut") => {
                let s = if d.cut == 1 { "" } else { "s" };
                out!(
                    "{name}: deadline passed after {:.1}s: closed {} connection{s} still open{removed}",
                    d.elapsed_seconds,
                    d.cut
                );
                return ExitCode::SUCCESS;
            }
            Some(other) => {
                let by = d.cancelled_by.as_deref().unwrap_or(other);
                err!("lb: the drain of {name} was cancelled by {by}");
                return ExitCode::from(1);
            }
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses_default_to_loopback() {
        assert_eq!(parse_admin_addr("9090").unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(parse_admin_addr(":9090").unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(parse_admin_addr("0.0.0.0:9090").unwrap().to_string(), "0.0.0.0:9090");
        assert_eq!(parse_admin_addr("[::1]:9090").unwrap().to_string(), "[::1]:9090");
        assert!(parse_admin_addr("nine").unwrap_err().contains("invalid admin address"));
        assert!(parse_admin_addr("99999").is_err());
    }
}
