//! `GET /`: the dashboard, a page that polls `GET /stats` and draws it, with actions sent to
//! `POST /command`.
//!
//! The page, its script and its style sheet are compiled into the binary (no CDN, no font or
//! script from anywhere else) and served with a Content-Security-Policy that lets the page load
//! and fetch only from the endpoint itself, run no inline script and be framed by nobody. The
//! script keeps the admin token the operator types in memory only and sends it as
//! `Authorization: Bearer`, with the [`CLIENT_HEADER`](super::CLIENT_HEADER) the guard asks of
//! every command: same-origin requests satisfy the guard as they are, which is the point.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

/// The policy every dashboard file is served with: its own script, style sheet and requests
/// only (`data:` for the empty favicon, so the browser does not ask for /favicon.ico); no
/// inline script, no plugin, no form sent anywhere, no framing (clickjacking).
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One file of the dashboard: its content type and body.
struct Asset {
    content_type: &'static str,
    body: &'static str,
}

/// The dashboard file served at `path`, if it is one.
fn asset(path: &str) -> Option<Asset> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", include_str!("dashboard.html")),
        "/dashboard.js" => ("text/javascript; charset=utf-8", include_str!("dashboard.js")),
        "/dashboard.css" => ("text/css; charset=utf-8", include_str!("dashboard.css")),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

/// Whether `path` is one of the dashboard's files.
pub(super) fn is_asset(path: &str) -> bool {
    asset(path).is_some()
}

/// The answer to `GET path` for a dashboard file, or `None` if `path` is not one.
pub(super) fn respond(path: &str) -> Option<Response<Full<Bytes>>> {
    let asset = asset(path)?;
    let mut response = super::text(StatusCode::OK, Bytes::from_static(asset.body.as_bytes()));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    // Revalidate each time: after an upgrade the browser must not mix an old script with a
    // new page (the files are small; the endpoint is local).
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_file_has_its_type_and_the_policy() {
        for (path, kind) in [
            ("/", "text/html"),
            ("/index.html", "text/html"),
            ("/dashboard.js", "text/javascript"),
            ("/dashboard.css", "text/css"),
        ] {
            let r = respond(path).unwrap();
            let h = r.headers();
            assert!(h[CONTENT_TYPE].to_str().unwrap().starts_with(kind), "{path}");
            assert_eq!(h["content-security-policy"], CONTENT_SECURITY_POLICY);
            assert_eq!(h["x-content-type-options"], "nosniff");
            assert_eq!(h[CACHE_CONTROL], "no-cache");
        }
        assert!(respond("/dashboard.js.map").is_none());
        assert!(!is_asset("/stats"));
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_has_no_inline_script() {
        let page = include_str!("dashboard.html");
        let script = include_str!("dashboard.js");
        let style = include_str!("dashboard.css");
        for text in [page, style] {
            assert!(!text.contains("http:") && !text.contains("https:") && !text.contains("//"));
        }
        assert!(!style.contains("@import") && !style.contains("url("));
        // The script's only URL is the SVG namespace, which is a name, not a request.
        let urls: Vec<&str> =
            script.match_indices("http").map(|(i, _)| &script[i..i + 26]).collect();
        assert!(urls.iter().all(|u| u.starts_with("http://www.w3.org/2000/svg")), "{urls:?}");
        // One <script>, loaded from the endpoint; no inline handlers or style attributes.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(page.contains(r#"<script src="/dashboard.js" defer></script>"#));
        let mut attributes = page.split('<').flat_map(|tag| {
            let inside = tag.split('>').next().unwrap_or_default();
            inside.split_whitespace().skip(1)
        });
        assert!(!attributes.any(|a| a.starts_with("on")), "no inline handler");
        assert!(!page.contains("style="));
        // Data from /stats is written as text, never parsed as HTML.
        assert!(!script.contains("innerHTML") && !script.contains("insertAdjacentHTML"));
    }
}
