//! Log lines: values from requests cannot forge a line or reach a terminal
//! (control characters escaped, no colour codes off a terminal), and under
//! journald a line carries its syslog priority and no timestamp of its own.

mod common;

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Backend, Codex, SECRET, TestDb, wait_until};

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

/// Runs `codex check-config` on a configuration with an unknown key (a
/// warning) with stderr to a file, and `JOURNAL_STREAM` naming that file
/// when `journal`, else something else; returns stderr.
fn check_config_stderr(journal: Option<bool>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("codex.conf");
    std::fs::write(
        &config,
        format!(
            "[webhooks]\nenabled = true\nsecret = {SECRET}\n[database]\nconnection_string = sqlite:///{}\n[server]\nunknown_key = 1\n",
            dir.path().join("x.db").display()
        ),
    )
    .unwrap();
    let log_path = dir.path().join("stderr.log");
    let stderr = std::fs::File::create(&log_path).unwrap();
    let meta = stderr.metadata().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_codex"));
    command
        .args(["check-config", "--config"])
        .arg(&config)
        .env_remove("CODEX_WEBHOOK_SECRET")
        .env_remove("JOURNAL_STREAM")
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
    let status = command.status().unwrap();
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(status.success(), "{text}");
    text
}

#[test]
fn under_journald_lines_carry_the_priority_and_no_timestamp() {
    let text = check_config_stderr(Some(true));
    let info = text
        .lines()
        .find(|l| l.contains("configuration read from"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(info.starts_with("<6>[codex"), "{info}");
    let warning = text
        .lines()
        .find(|l| l.contains("unknown_key"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(warning.starts_with("<4>[codex"), "{warning}");
    for line in [info, warning] {
        assert!(
            !line.contains(" INFO ") && !line.contains(" WARN "),
            "{line}"
        );
    }
    assert!(
        !text.contains("[20"),
        "a timestamp of Codex's own in:\n{text}"
    );
}

#[test]
fn without_journald_lines_keep_their_timestamp_and_level() {
    for journal in [None, Some(false)] {
        let text = check_config_stderr(journal);
        let info = text
            .lines()
            .find(|l| l.contains("configuration read from"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            info.starts_with("[20") && info.contains("Z INFO  codex"),
            "{info}"
        );
        let warning = text
            .lines()
            .find(|l| l.contains("unknown_key"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(warning.contains("Z WARN  codex"), "{warning}");
        assert!(!text.starts_with('<') && !text.contains('\x1b'), "{text}");
    }
}
