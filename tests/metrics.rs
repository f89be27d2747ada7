//! `GET /metrics` over real sockets: read by the Prometheus client's own
//! text parser, its counters matching the deliveries sent, and the access
//! rule of `[status]` (allowed addresses, or the token as Bearer or Basic).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use common::{Backend, Codex, TestDb};

const STATUS_TOKEN: &str = "Stat7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Ga";

/// Samples as the Prometheus client's parser reads `text`: each sample's
/// name with its labels sorted (`name{a="x",b="y"}`) to its value.
fn parse(text: &str) -> HashMap<String, f64> {
    let python = std::env::var("CODEX_TEST_PROMETHEUS_PYTHON")
        .expect("CODEX_TEST_PROMETHEUS_PYTHON was set when the tests were built but is not now");
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {s.value}")
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[test]
#[cfg_attr(
    not(codex_prometheus_tests),
    ignore = "needs CODEX_TEST_PROMETHEUS_PYTHON: run scripts/test.sh"
)]
fn counters_match_the_deliveries_sent_and_the_prometheus_parser_reads_them() {
    let db = TestDb::new(&Backend::Sqlite);
    let codex = Codex::start(&db, "");
    for id in 1..=3 {
        let created = codex.deliver_json(&common::seed_body(
            "ticket.created",
            id,
            2,
            "2024-01-15T10:00:00Z",
        ));
        assert_eq!(created.status, 201);
    }
    let updated = codex.deliver_json(&common::seed_body(
        "ticket.updated",
        1,
        3,
        "2024-01-15T11:00:00Z",
    ));
    assert_eq!(updated.status, 200);
    let refused = codex.request(
        "POST",
        "/webhooks/freshservice/ticket",
        &[
            ("X-Webhook-Secret", "wrong"),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    );
    assert_eq!(refused.status, 401);

    let response = codex.get("/metrics");
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("Content-Type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let samples = parse(&String::from_utf8(response.body).unwrap());
    let value = |name: &str| {
        *samples
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing; have {:#?}", samples.keys()))
    };
    let deliveries = |outcome: &str, code: u16| {
        value(&format!(
            "codex_deliveries_total{{code=\"{code}\",outcome=\"{outcome}\",provider=\"freshservice\"}}"
        ))
    };
    assert_eq!(deliveries("created", 201), 3.0);
    assert_eq!(deliveries("updated", 200), 1.0);
    assert_eq!(deliveries("refused", 401), 1.0);
    assert_eq!(deliveries("stale", 200), 0.0);
    assert_eq!(value("codex_database_up{}"), 1.0);
    // Every delivery that reached the writer is journaled; the refusal is not.
    assert_eq!(value("codex_journal_rows{}"), 4.0);
    // Timed are the requests that passed the head: the refusal was answered
    // on its head, before any handling to time.
    assert_eq!(
        value("codex_request_duration_seconds_count{route=\"delivery\"}"),
        4.0
    );
    assert!(value("codex_commit_duration_seconds_count{}") >= 1.0);
    assert!(value("codex_writer_batch_size_sum{}") >= 4.0);
    assert_eq!(
        value("codex_sync_runs_total{outcome=\"ok\",provider=\"freshservice\"}"),
        0.0
    );
    assert_eq!(
        value("codex_psa_api_calls_total{provider=\"superops\"}"),
        0.0
    );
    assert!(samples.contains_key("codex_writer_queue_depth{}"));
}

#[test]
fn metrics_need_an_allowed_address_or_the_token() {
    let db = TestDb::new(&Backend::Sqlite);
    // Loopback not allowed, no token: 403, saying what to set.
    let closed = Codex::start(&db, "[status]\nallowed_ips = 10.0.0.0/8\n");
    let refused = closed.get("/metrics");
    assert_eq!(refused.status, 403);
    assert!(
        refused.json()["detail"]
            .as_str()
            .unwrap()
            .contains("[status] token")
    );

    let codex = Codex::start(
        &db,
        &format!("[status]\nallowed_ips = 10.0.0.0/8\ntoken = {STATUS_TOKEN}\n"),
    );
    let missing = codex.get("/metrics");
    assert_eq!(missing.status, 401);
    let challenges: Vec<&str> = missing
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("WWW-Authenticate"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Basic")),
        "{challenges:?}"
    );
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer")),
        "{challenges:?}"
    );
    let bearer = format!("Bearer {STATUS_TOKEN}");
    let basic = format!("Basic {}", STANDARD.encode(format!("admin:{STATUS_TOKEN}")));
    for header in [&bearer, &basic] {
        let response = codex.request("GET", "/metrics", &[("Authorization", header)], b"");
        assert_eq!(response.status, 200, "{header}");
        assert!(String::from_utf8_lossy(&response.body).contains("codex_deliveries_total"));
    }
    let wrong = codex.request(
        "GET",
        "/metrics",
        &[("Authorization", "Bearer Stat7Kq2Lm9Vx4Rb8Nc3Hd6Jf1Pw5Zs0Gb")],
        b"",
    );
    assert_eq!(wrong.status, 401);
    assert!(!String::from_utf8_lossy(&wrong.body).contains(STATUS_TOKEN));
    // Health stays public.
    assert_eq!(codex.get("/webhooks/health").status, 200);
}
