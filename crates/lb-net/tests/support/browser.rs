//! Headless Chromium, driven through the DevTools protocol (JSON messages over a WebSocket),
//! for the dashboard test: open a page, evaluate JavaScript in it, record every request it
//! makes and every error it reports, take screenshots.
//!
//! Only a handful of protocol methods are used, all stable for years: `Target.createTarget`,
//! `Target.attachToTarget`, `Network.enable`, `Runtime.enable`, `Log.enable`, `Page.navigate`,
//! `Runtime.evaluate`, `Emulation.setDeviceMetricsOverride`, `Page.captureScreenshot`,
//! `Browser.close`.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Longest wait for the browser to start and open its DevTools port, and for one protocol
/// answer. Generous: two busy cores, and a first start that builds the profile.
const START_TIMEOUT: Duration = Duration::from_secs(60);
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The Chromium to use: `$LB_CHROMIUM`, else the first of `chromium`, `chromium-browser`,
/// `google-chrome`, `google-chrome-stable` on the `PATH`.
pub fn find() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LB_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"].iter().find_map(
        |name| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()),
    )
}

/// What a page did: the URLs it requested and the errors it reported.
#[derive(Debug, Default)]
pub struct PageLog {
    /// Every URL requested, in order (`Network.requestWillBeSent`).
    pub requests: Vec<String>,
    /// Uncaught exceptions, `console.error` calls and error-level browser log entries other
    /// than the network's (Content-Security-Policy violations among them), as text.
    pub errors: Vec<String>,
    /// Error-level log entries of the network: answers with an error status (a 401 for a
    /// wrong token), failed loads.
    pub network_errors: Vec<String>,
}

/// A running headless Chromium with one page attached. Dropping it kills the browser (the
/// process this started, nothing else) and removes its temporary profile.
pub struct Browser {
    child: Child,
    profile: PathBuf,
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: String,
    /// What the attached page did so far.
    pub log: PageLog,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").field("pid", &self.child.id()).finish()
    }
}

impl Browser {
    /// Starts `chromium` headless with a new temporary profile and attaches to a blank page
    /// of `width` × `height` CSS pixels.
    pub async fn launch(chromium: &Path, width: u32, height: u32) -> Result<Browser, String> {
        let profile = std::env::temp_dir().join(format!(
            "lb-dashboard-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&profile).map_err(|e| format!("{}: {e}", profile.display()))?;
        let stderr =
            std::fs::File::create(profile.join("stderr.txt")).map_err(|e| e.to_string())?;
        let child = Command::new(chromium)
            .args([
                "--headless",
                // CI runs as root, where Chromium's sandbox cannot start.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
                "--password-store=basic",
                "--use-mock-keychain",
                &format!("--window-size={width},{height}"),
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", chromium.display()))?;
        let mut starting = Starting { child: Some(child), profile: profile.clone() };
        let url = starting.devtools_url().await?;
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .map_err(|e| format!("connecting to {url}: {e}"))?;
        let child = starting.child.take().expect("still ours");
        let mut browser = Browser {
            child,
            profile,
            ws,
            next_id: 0,
            session: String::new(),
            log: PageLog::default(),
        };
        let target = browser.call("Target.createTarget", json!({ "url": "about:blank" })).await?;
        let target = target["targetId"].as_str().ok_or("no targetId")?.to_owned();
        let attached = browser
            .call("Target.attachToTarget", json!({ "targetId": target, "flatten": true }))
            .await?;
        browser.session = attached["sessionId"].as_str().ok_or("no sessionId")?.to_owned();
        for domain in ["Network", "Runtime", "Log", "Page"] {
            browser.page(&format!("{domain}.enable"), json!({})).await?;
        }
        browser.viewport(width, height, false).await?;
        Ok(browser)
    }

    /// Sets the page's viewport (`mobile`: a phone's, with touch-style layout).
    pub async fn viewport(&mut self, width: u32, height: u32, mobile: bool) -> Result<(), String> {
        let metrics = json!({
            "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile
        });
        self.page("Emulation.setDeviceMetricsOverride", metrics).await.map(drop)
    }

    /// Opens `url` in the page.
    pub async fn navigate(&mut self, url: &str) -> Result<(), String> {
        let answer = self.page("Page.navigate", json!({ "url": url })).await?;
        match answer.get("errorText").and_then(Value::as_str) {
            Some(e) if !e.is_empty() => Err(format!("navigating to {url}: {e}")),
            _ => Ok(()),
        }
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value as JSON.
    pub async fn eval(&mut self, expression: &str) -> Result<Value, String> {
        let params =
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true });
        let answer = self.page("Runtime.evaluate", params).await?;
        if let Some(e) = answer.get("exceptionDetails") {
            return Err(format!("evaluating {expression:?}: {e}"));
        }
        Ok(answer["result"].get("value").cloned().unwrap_or(Value::Null))
    }

    /// A PNG of the whole page (beyond the viewport if it is longer).
    pub async fn screenshot(&mut self) -> Result<Vec<u8>, String> {
        let metrics = self.page("Page.getLayoutMetrics", json!({})).await?;
        let size = &metrics["cssContentSize"];
        let clip = json!({
            "x": 0, "y": 0, "scale": 1,
            "width": size["width"].as_f64().unwrap_or(1280.0),
            "height": size["height"].as_f64().unwrap_or(800.0),
        });
        let shot = self
            .page(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true, "clip": clip }),
            )
            .await?;
        let data = shot["data"].as_str().ok_or("no screenshot data")?;
        base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| e.to_string())
    }

    /// Asks the browser to close and waits for it to exit (killing it if it does not).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.call("Browser.close", json!({})))
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return; // Drop removes the profile
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A method of the attached page's session.
    async fn page(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let session = self.session.clone();
        self.send(method, params, Some(&session)).await
    }

    /// A method of the browser itself.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        self.send(method, params, None).await
    }

    async fn send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .await
            .map_err(|e| format!("{method}: {e}"))?;
        let answer = tokio::time::timeout(CALL_TIMEOUT, async {
            loop {
                let frame = self.ws.next().await.ok_or("the browser closed the connection")?;
                let text = match frame.map_err(|e| e.to_string())? {
                    Message::Text(text) => text.to_string(),
                    Message::Binary(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                    _ => continue,
                };
                let value: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                if value.get("id").and_then(Value::as_u64) == Some(id) {
                    return Ok::<Value, String>(value);
                }
                self.event(&value);
            }
        })
        .await
        .map_err(|_| format!("{method}: no answer within {CALL_TIMEOUT:?}"))??;
        match answer.get("error") {
            Some(e) => Err(format!("{method}: {e}")),
            None => Ok(answer.get("result").cloned().unwrap_or(Value::Null)),
        }
    }

    /// Records what an event says about the attached page.
    fn event(&mut self, event: &Value) {
        if event.get("sessionId").and_then(Value::as_str) != Some(self.session.as_str()) {
            return;
        }
        let p = &event["params"];
        match event["method"].as_str().unwrap_or_default() {
            "Network.requestWillBeSent" => {
                self.log.requests.push(p["request"]["url"].as_str().unwrap_or("?").to_owned());
            }
            "Runtime.exceptionThrown" => {
                let d = &p["exceptionDetails"];
                let text = d["exception"]["description"].as_str().or(d["text"].as_str());
                self.log.errors.push(format!("exception: {}", text.unwrap_or("?")));
            }
            "Runtime.consoleAPICalled"
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                self.log.errors.push(format!("console.{}: {}", p["type"], p["args"]));
            }
            "Log.entryAdded" if p["entry"]["level"].as_str() == Some("error") => {
                let e = &p["entry"];
                let text = format!("log ({}): {} {}", e["source"], e["text"], e["url"]);
                match e["source"].as_str() {
                    Some("network") => self.log.network_errors.push(text),
                    _ => self.log.errors.push(text),
                }
            }
            _ => {}
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Only our own child; its renderer processes exit with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A browser that has not opened its DevTools port yet: killed and cleaned up if it never does.
struct Starting {
    child: Option<Child>,
    profile: PathBuf,
}

impl Starting {
    /// Waits for Chromium to write `DevToolsActivePort` (the port it chose and the browser's
    /// WebSocket path) into its profile.
    async fn devtools_url(&mut self) -> Result<String, String> {
        let file = self.profile.join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    return Ok(format!("ws://127.0.0.1:{}{}", port.trim(), path.trim()));
                }
            }
            let child = self.child.as_mut().expect("still ours");
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "Chromium exited ({status}) before opening DevTools: {}",
                    self.stderr()
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "Chromium opened no DevTools port within {START_TIMEOUT:?}: {}",
                    self.stderr()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.profile.join("stderr.txt")).unwrap_or_default()
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(&self.profile);
        }
    }
}
