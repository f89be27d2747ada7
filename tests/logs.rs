//! Log lines: values from requests cannot forge a line or reach a terminal
//! (control characters escaped, no colour codes off a terminal), and under
//! journald a line carries its syslog priority and no timestamp of its own.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Backend, Codex, SECRET, TestDb, base_config, request, wait_until};

/// A line a forger would like to see in the log.
const FORGED: &str = "[1999-01-01T00:00:00Z INFO  codex] FORGED";

#[test]
fn values_from_bodies_are_escaped_and_forge_no_line() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Codex::start_with_env(
        &db,
        "[webhooks]\nlog_payloads = true\n",
        &[("RUST_LOG_STYLE", "always"), ("CLICOLOR_FORCE", "1")],
    );
    // Control characters as JSON escapes: decoded, they reach the
    // warnings and refusals about the event, id, status and timestamp.
    let escaped = [
        format!(r#"{{"event": "ticket.odd\r\n{FORGED}-EVENT", "ticket_id": 1, "status_id": 2}}"#),
        format!(r#"{{"event": "ticket.updated", "ticket_id": "7\n{FORGED}-ID"}}"#),
        format!(r#"{{"ticket_id": 2, "status": "open\u001b[31m\r{FORGED}-STATUS\u007f"}}"#),
        format!(r#"{{"ticket_id": 3, "updated_at": "2024\n{FORGED}-UPDATED"}}"#),
    ];
    // Raw control bytes in the body: the payload log shows the body itself.
    let raw = format!(
        "{{\"ticket_id\": 4, \"subject\": \"Printer\r\n{FORGED}-SUBJECT\x1b]0;owned\x07\x1b[2J\"}}"
    );
    for body in escaped.iter().chain([&raw]) {
        let response = codex.deliver(body);
        assert!(
            [200, 201, 400].contains(&response.status),
            "{}",
            String::from_utf8_lossy(&response.body)
        );
    }
    let markers = ["EVENT", "ID", "STATUS", "UPDATED", "SUBJECT"];
    let all_logged = || {
        let logs = codex.logs();
        markers
            .iter()
            .all(|m| logs.contains(&format!("FORGED-{m}")))
    };
    assert!(
        wait_until(Duration::from_secs(10), all_logged),
        "{}",
        codex.logs()
    );
    let logs = codex.logs();
    // Every line is one of Codex's, none begins with what a body sent.
    for line in logs.lines() {
        assert!(
            line.starts_with("[20") && !line.starts_with(FORGED),
            "forged or foreign line {line:?} in:\n{logs}"
        );
    }
    // Neither the body's ESC nor a colour code reaches the log: stderr is
    // a pipe, whatever RUST_LOG_STYLE and CLICOLOR_FORCE say.
    assert!(!logs.contains('\x1b') && !logs.contains('\x07') && !logs.contains('\x7f'));
    assert!(!logs.contains('\r'));
    assert!(logs.contains(&format!("\\r\\n{FORGED}-EVENT")), "{logs}");
    assert!(logs.contains(&format!("\\n{FORGED}-ID")), "{logs}");
    assert!(
        logs.contains(&format!("\\x1b[31m\\r{FORGED}-STATUS\\x7f")),
        "{logs}"
    );
    assert!(logs.contains(&format!("\\n{FORGED}-UPDATED")), "{logs}");
    assert!(
        logs.contains(&format!(
            "Printer\\r\\n{FORGED}-SUBJECT\\x1b]0;owned\\x07\\x1b[2J"
        )),
        "{logs}"
    );
}

/// Runs `codex serve` with stderr to a file, and `JOURNAL_STREAM` naming
/// that file when `journal` is `Some(true)`, another file's when
/// `Some(false)`; sends one delivery (an info line) and one without the
/// secret (a warning), has a reload refused (an error), and returns
/// stderr.
fn serve_stderr(journal: Option<bool>) -> String {
    let db = TestDb::new(&Backend::Sqlite);
    let config = db.dir.path().join("codex.conf");
    std::fs::write(&config, base_config(&db, "")).unwrap();
    let log_path = db.dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&log_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_codex"));
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .env_remove("CODEX_WEBHOOK_SECRET")
        .env_remove("CODEX_DATABASE_URL")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    match journal {
        Some(true) => {
            command.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        Some(false) => {
            // Set, as for a program systemd's service started with its
            // stderr elsewhere: not the journal.
            command.env(
                "JOURNAL_STREAM",
                format!("{}:{}", meta.dev(), meta.ino() + 1),
            );
        }
        None => {}
    }
    let mut child = command.spawn().unwrap();
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let listening = wait_until(Duration::from_secs(30), || {
        read().contains("listening on http://")
    });
    let text = read();
    let addr = text
        .split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|addr| addr.parse().ok());
    let Some(addr) = addr.filter(|_| listening) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("codex did not start:\n{text}");
    };
    let body = br#"{"event": "ticket.created", "ticket_id": 1, "status_id": 2}"#;
    let secret = [
        ("X-Webhook-Secret", SECRET),
        ("Content-Type", "application/json"),
    ];
    let path = "/webhooks/freshservice/ticket";
    assert_eq!(request(addr, "POST", path, &secret, body).status, 201);
    assert_eq!(request(addr, "POST", path, &[], body).status, 401);
    // An invalid file on SIGHUP: the reload is refused (an error line).
    std::fs::write(&config, base_config(&db, "[server]\nthreads = many\n")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let logged = wait_until(Duration::from_secs(10), || {
        let text = read();
        ["outcome=created", "outcome=refused", "reload refused"]
            .iter()
            .all(|what| text.contains(what))
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = read();
    assert!(logged, "{text}");
    text
}

fn line<'a>(text: &'a str, holding: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(holding))
        .unwrap_or_else(|| panic!("no line with {holding:?} in:\n{text}"))
}

#[test]
fn under_journald_lines_carry_the_priority_and_no_timestamp() {
    let text = serve_stderr(Some(true));
    assert!(
        line(&text, "listening on").starts_with("<6>[codex"),
        "{text}"
    );
    assert!(
        line(&text, "outcome=created").starts_with("<6>[codex"),
        "{text}"
    );
    assert!(
        line(&text, "outcome=refused").starts_with("<4>[codex"),
        "{text}"
    );
    for l in text.lines() {
        assert!(l.starts_with('<'), "{l:?} in:\n{text}");
        assert!(!l.contains(" INFO ") && !l.contains(" WARN "), "{l}");
    }
    assert!(
        !text.contains("[20"),
        "a timestamp of Codex's own in:\n{text}"
    );
    assert!(!text.contains('\x1b'), "{text}");
}

#[test]
fn without_journald_lines_keep_their_timestamp_and_level() {
    for journal in [None, Some(false)] {
        let text = serve_stderr(journal);
        let info = line(&text, "outcome=created");
        assert!(
            info.starts_with("[20") && info.contains("Z INFO  codex"),
            "{info}"
        );
        assert!(
            line(&text, "outcome=refused").contains("Z WARN  codex"),
            "{text}"
        );
        assert!(!text.starts_with('<') && !text.contains('\x1b'), "{text}");
    }
}
