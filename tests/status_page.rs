//! The status page in a real headless browser (Debian's Chromium): it
//! renders without console errors, its chart and tables hold what the test
//! delivered, it shows no secret and no body, and a phone-sized screenshot
//! is kept as a test artifact. And its access rule over plain HTTP.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, Codex, SECRET, TestDb};
use serde_json::{Value, json};

const STATUS_TOKEN: &str = "Page7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga";

/// What a real browser made of a page.
struct Rendered {
    /// `document.documentElement.outerHTML` once the page loaded.
    dom: String,
    /// Console errors and warnings, uncaught exceptions, and the browser's
    /// own error log entries (a resource that failed to load, say).
    problems: Vec<String>,
    /// A PNG of the page in a phone's viewport.
    screenshot: Vec<u8>,
}

/// Loads `url` in headless Chromium, driven over the DevTools protocol.
fn render(url: &str) -> Rendered {
    let browser = std::env::var("CODEX_TEST_CHROMIUM")
        .expect("CODEX_TEST_CHROMIUM was set when the tests were built but is not now");
    let profile = tempfile::tempdir().unwrap();
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run chromium");
    // Chromium creates the file, then writes the port into it: wait for
    // the port, not the file.
    let port_file = profile.path().join("DevToolsActivePort");
    let read_port = || {
        let text = std::fs::read_to_string(&port_file).ok()?;
        let port = text.lines().next()?.trim();
        port.parse::<u16>().ok()
    };
    assert!(
        common::wait_until(Duration::from_secs(30), || read_port().is_some()),
        "chromium did not open its DevTools port"
    );
    let port = read_port().expect("the port, read above");
    let targets: Value = ureq::get(&format!("http://127.0.0.1:{port}/json/list"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .map(|text| serde_json::from_str(&text).unwrap())
        .unwrap();
    let page = targets
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["type"] == "page")
        .expect("a page target");
    let (mut socket, _) =
        tungstenite::connect(page["webSocketDebuggerUrl"].as_str().unwrap()).unwrap();
    let mut next_id = 0;
    let mut problems = Vec::new();
    let mut loaded = false;
    let mut call = |socket: &mut tungstenite::WebSocket<_>,
                    method: &str,
                    params: Value,
                    problems: &mut Vec<String>,
                    loaded: &mut bool|
     -> Value {
        next_id += 1;
        let id = next_id;
        let message = json!({"id": id, "method": method, "params": params}).to_string();
        socket.send(tungstenite::Message::text(message)).unwrap();
        loop {
            let text = match socket.read().unwrap() {
                tungstenite::Message::Text(text) => text.to_string(),
                _ => continue,
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
            match message["method"].as_str() {
                Some("Page.loadEventFired") => *loaded = true,
                Some("Runtime.consoleAPICalled")
                    if ["error", "warning", "assert"]
                        .contains(&message["params"]["type"].as_str().unwrap_or("")) =>
                {
                    problems.push(message["params"].to_string())
                }
                Some("Runtime.exceptionThrown") => problems.push(message["params"].to_string()),
                Some("Log.entryAdded")
                    if ["error", "warning"]
                        .contains(&message["params"]["entry"]["level"].as_str().unwrap_or("")) =>
                {
                    problems.push(message["params"]["entry"].to_string())
                }
                _ => {}
            }
        }
    };
    for method in ["Runtime.enable", "Log.enable", "Page.enable"] {
        call(&mut socket, method, json!({}), &mut problems, &mut loaded);
    }
    call(
        &mut socket,
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 412, "height": 915, "deviceScaleFactor": 1, "mobile": true}),
        &mut problems,
        &mut loaded,
    );
    call(
        &mut socket,
        "Page.navigate",
        json!({"url": url}),
        &mut problems,
        &mut loaded,
    );
    // Events arrive with the answers to the calls: ask until the load fired.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !loaded {
        assert!(Instant::now() < deadline, "the page did not load");
        call(
            &mut socket,
            "Runtime.evaluate",
            json!({"expression": "document.readyState"}),
            &mut problems,
            &mut loaded,
        );
    }
    let dom = call(
        &mut socket,
        "Runtime.evaluate",
        json!({"expression": "document.documentElement.outerHTML", "returnByValue": true}),
        &mut problems,
        &mut loaded,
    )["result"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let shot = call(
        &mut socket,
        "Page.captureScreenshot",
        json!({"format": "png", "captureBeyondViewport": true}),
        &mut problems,
        &mut loaded,
    );
    let screenshot = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot["data"].as_str().unwrap(),
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    Rendered {
        dom,
        problems,
        screenshot,
    }
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
#[cfg_attr(
    not(codex_browser_tests),
    ignore = "needs CODEX_TEST_CHROMIUM: run scripts/test.sh"
)]
fn the_page_renders_what_was_delivered_in_a_real_browser() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Codex::start(&db, "");
    for id in [41, 42, 43] {
        let mut body = common::seed_body("ticket.created", id, 2, "2024-01-15T10:00:00Z");
        body["subject"] = json!("Confidential body text 7f3a");
        assert_eq!(codex.deliver_json(&body).status, 201);
    }
    let rejected = codex.request(
        "POST",
        "/webhooks/freshservice/ticket",
        &[
            ("X-Webhook-Secret", SECRET),
            ("Content-Type", "application/json"),
        ],
        br#"{"event": "ticket.updated", "ticket_id": "abc"}"#,
    );
    assert_eq!(rejected.status, 400);

    // `/` leads to the page.
    let root = codex.get("/");
    assert_eq!(root.status, 302);
    assert_eq!(root.header("Location"), Some("/status"));

    let url = format!("http://{}/status", codex.addr);
    let rendered = render(&url);
    assert!(
        rendered.problems.is_empty(),
        "console: {:#?}",
        rendered.problems
    );
    let dom = rendered.dom;
    assert!(dom.contains("<h1>Codex</h1>"), "{dom}");
    // The last deliveries, newest first, with their outcome and status.
    let table = dom
        .split("<table id=\"deliveries\">")
        .nth(1)
        .and_then(|rest| rest.split("</table>").next())
        .expect("the deliveries table");
    let rows: Vec<&str> = table.split("<tr>").skip(2).collect();
    assert_eq!(rows.len(), 4, "{table}");
    assert!(
        rows[0].contains("rejected") && rows[0].contains("<td>400</td>"),
        "{}",
        rows[0]
    );
    for (row, id) in rows[1..].iter().zip(["43", "42", "41"]) {
        assert!(row.contains(&format!("<td>{id}</td>")), "{row}");
        assert!(
            row.contains("created") && row.contains("<td>201</td>"),
            "{row}"
        );
    }
    // The chart: this slot's bar holds 3 stored and 1 refused.
    let chart = dom
        .split("<svg id=\"chart\"")
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .expect("the chart");
    assert!(chart.contains("3 stored"), "{chart}");
    assert!(chart.contains("1 rejected or failed"), "{chart}");
    assert!(dom.contains("freshservice"));
    assert!(!dom.contains(SECRET), "the page shows the secret");
    assert!(
        !dom.contains("Confidential body text"),
        "the page shows a body"
    );
    assert!(dom.contains("http-equiv=\"refresh\" content=\"30\""));

    // A phone-sized screenshot, kept as the test's artifact.
    assert!(rendered.screenshot.starts_with(b"\x89PNG"), "not a PNG");
    std::fs::write(artifacts().join("status-page.png"), &rendered.screenshot).unwrap();
}

/// The browser check above can fail: a page with a console error and a
/// resource that does not load is caught.
#[test]
#[cfg_attr(
    not(codex_browser_tests),
    ignore = "needs CODEX_TEST_CHROMIUM: run scripts/test.sh"
)]
fn the_browser_check_catches_console_errors() {
    let rendered = render(
        "data:text/html,<p>x</p><script>console.error('boom')</script><img src='http://127.0.0.1:9/x.png'>",
    );
    assert!(
        rendered.problems.iter().any(|p| p.contains("boom")),
        "{:#?}",
        rendered.problems
    );
}

#[test]
fn the_page_needs_an_allowed_address_or_the_token() {
    let db = TestDb::new(&Backend::Sqlite);
    let closed = Codex::start(&db, "[status]\nallowed_ips = 10.0.0.0/8\n");
    assert_eq!(closed.get("/status").status, 403);
    let codex = Codex::start(
        &db,
        &format!("[status]\nallowed_ips = 10.0.0.0/8\ntoken = {STATUS_TOKEN}\n"),
    );
    let missing = codex.get("/status");
    assert_eq!(missing.status, 401);
    assert!(missing.header("WWW-Authenticate").is_some());
    let bearer = format!("Bearer {STATUS_TOKEN}");
    let page = codex.request("GET", "/status", &[("Authorization", &bearer)], b"");
    assert_eq!(page.status, 200);
    assert!(
        page.header("Content-Type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(String::from_utf8_lossy(&page.body).contains("Last 50 deliveries"));
}
