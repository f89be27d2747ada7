//! How the status reads: `/webhooks/health`'s JSON and the text `codex
//! status` prints.

use serde_json::{Map, Value, json};

use super::Status;
use crate::config::format_duration;
use crate::store::{COVERAGE_WINDOW_SECS, Delivery, ProviderSummary, SyncRun};

/// Deliveries `codex status` lists.
const REPORT_DELIVERIES: usize = 10;

impl Status {
    /// What `/webhooks/health` says about the service's state: the
    /// database (`status`, `database`, `database_error`) and polling (see
    /// `polling_fields`). The routes add what the configuration says.
    pub fn health_fields(&self) -> Map<String, Value> {
        let database = self.database_problem.is_none();
        let mut map = Map::new();
        map.insert(
            "status".into(),
            (if database { "ok" } else { "degraded" }).into(),
        );
        map.insert(
            "database".into(),
            (if database { "ok" } else { "unavailable" }).into(),
        );
        if let Some(problem) = &self.database_problem {
            map.insert("database_error".into(), problem.clone().into());
        }
        map.extend(self.polling_fields());
        map
    }

    /// The fields health adds about polling and coverage: every
    /// provider's under `providers` and `webhook_coverage`, and at the top
    /// (as the predecessor's readers expect) those of the first provider
    /// that polls, else the first provider's.
    fn polling_fields(&self) -> Map<String, Value> {
        let mut map = Map::new();
        let mut providers = Map::new();
        let mut coverage = Map::new();
        let main = self
            .providers
            .iter()
            .find(|p| p.poller.enabled)
            .or(self.providers.first());
        for status in &self.providers {
            let last = status.last_run();
            let interval = status.poller.interval.map(|d| d.as_secs());
            let mut fields = Map::new();
            fields.insert(
                "polling".into(),
                json!({
                    "enabled": status.poller.enabled,
                    "role": status.poller.role.as_str(),
                    "interval_seconds": interval,
                    "interval_reason": status.poller.interval_reason,
                    "next_sync_at": status.poller.next_sync_at,
                    "last_sync": last.map(run_json),
                }),
            );
            fields.insert(
                "last_sync_at".into(),
                json!(last.and_then(|r| r.finished_at.clone())),
            );
            fields.insert(
                "last_sync_outcome".into(),
                json!(last.map(|r| r.outcome.as_str())),
            );
            let webhook_coverage = json!(
                status
                    .stored
                    .as_ref()
                    .map(|s| coverage_json(s, self.webhooks_enabled))
            );
            if main.is_some_and(|m| m.provider == status.provider) {
                map.extend(fields.clone());
                map.insert("polling_interval_seconds".into(), json!(interval));
            }
            coverage.insert(status.provider.as_str().into(), webhook_coverage);
            providers.insert(status.provider.as_str().into(), Value::Object(fields));
        }
        map.insert("webhook_coverage".into(), Value::Object(coverage));
        map.insert("providers".into(), Value::Object(providers));
        map
    }

    /// The text `codex status` prints: polling configuration, webhook
    /// traffic and coverage over the last 24 hours, and the last runs.
    pub fn report(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "database: {}", self.database_name);
        let _ = writeln!(
            out,
            "webhooks: {}",
            if self.webhooks_enabled {
                "enabled"
            } else {
                "disabled"
            }
        );
        for status in &self.providers {
            let provider = status.provider;
            let (short, long) = status.poller.schedule;
            let _ = writeln!(
                out,
                "\n{provider}, last 24 h:\n  polling: {}",
                if status.poller.enabled {
                    format!(
                        "every {} (every {} while webhooks deliver)",
                        format_duration(short),
                        format_duration(long)
                    )
                } else {
                    "not configured".to_string()
                }
            );
            let Some(stored) = &status.stored else {
                let _ = writeln!(out, "  the database did not answer");
                continue;
            };
            let counts = &stored.counts;
            let _ = writeln!(
                out,
                "  webhook deliveries: {} received, {} stored a change, {} rejected; last at {}",
                counts.received,
                counts.applied,
                counts.rejected,
                counts.last_received_at.as_deref().unwrap_or("never")
            );
            let _ = writeln!(
                out,
                "  webhook coverage: {} ({} changes by webhook, {} found first by polling)",
                stored.coverage().map_or_else(
                    || "no changes yet".to_string(),
                    |ratio| format!("{:.1}%", ratio * 100.0)
                ),
                counts.applied,
                stored.missed
            );
            let _ = writeln!(
                out,
                "  sync cursor: {}; last reconcile: {}",
                stored.state.cursor.as_deref().unwrap_or("none"),
                stored.state.last_reconcile_at.as_deref().unwrap_or("never")
            );
            let _ = writeln!(out, "  last sync runs:");
            if stored.runs.is_empty() {
                let _ = writeln!(out, "    none");
            }
            for run in &stored.runs {
                let _ = writeln!(out, "    {}", run_line(run));
            }
        }
        if let Some(activity) = &self.activity {
            let _ = writeln!(out, "\nlast deliveries:");
            if activity.deliveries.is_empty() {
                let _ = writeln!(out, "  none");
            }
            for delivery in activity.deliveries.iter().take(REPORT_DELIVERIES) {
                let _ = writeln!(out, "  {}", delivery_line(delivery));
            }
        }
        out
    }
}

/// One delivery on one line, for `codex status`.
fn delivery_line(delivery: &Delivery) -> String {
    format!(
        "{} {} ticket {} {} -> {} ({}){}",
        delivery.received_at,
        delivery.provider,
        delivery
            .ticket_id
            .map_or_else(|| "-".to_string(), |id| id.to_string()),
        delivery.event.as_deref().unwrap_or("-"),
        delivery.outcome,
        delivery.status_code(),
        delivery
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    )
}

/// One run on one line, for `codex status`.
fn run_line(run: &SyncRun) -> String {
    format!(
        "#{} {} {} -> {} {}: {} seen, {} changed, {} missed by webhooks{}, {} API calls{}",
        run.id,
        run.kind,
        run.started_at,
        run.finished_at.as_deref().unwrap_or("(running)"),
        run.outcome,
        run.tickets_seen,
        run.tickets_changed,
        run.missed_by_webhooks,
        if run.missed_ticket_ids.is_empty() {
            String::new()
        } else {
            format!(" {:?}", run.missed_ticket_ids)
        },
        run.api_calls,
        run.error
            .as_deref()
            .map(|e| format!("; error: {e}"))
            .unwrap_or_default()
    )
}

/// A run as JSON, for health and `codex sync --once`.
pub fn run_json(run: &SyncRun) -> Value {
    json!({
        "id": run.id,
        "provider": run.provider,
        "kind": run.kind.as_str(),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "outcome": run.outcome.as_str(),
        "tickets_seen": run.tickets_seen,
        "tickets_changed": run.tickets_changed,
        "missed_by_webhooks": run.missed_by_webhooks,
        "missed_ticket_ids": run.missed_ticket_ids,
        "api_calls": run.api_calls,
        "error": run.error,
    })
}

fn coverage_json(stored: &ProviderSummary, webhooks_enabled: bool) -> Value {
    json!({
        "webhooks_enabled": webhooks_enabled,
        "window_hours": COVERAGE_WINDOW_SECS / 3600,
        "coverage": stored.coverage(),
        "changes_by_webhook": stored.counts.applied,
        "changes_missed": stored.missed,
        "missed_ticket_ids_last_run": stored.missed_last_run(),
        "last_webhook_at": stored.counts.last_processed_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::psa::Provider;
    use crate::status::ProviderStatus;
    use crate::store::{RunKind, RunOutcome, SyncState, WebhookCounts};
    use crate::sync::{PollerState, Role};
    use std::time::Duration;

    fn run(id: i64, provider: Provider, outcome: RunOutcome) -> SyncRun {
        SyncRun {
            id,
            finished_at: Some(format!("2024-05-0{id}T00:00:00Z")),
            outcome,
            missed_ticket_ids: vec![id * 10],
            ..SyncRun::starting(provider, RunKind::Incremental)
        }
    }

    fn poller(role: Role, last_run: Option<SyncRun>) -> PollerState {
        PollerState {
            enabled: role != Role::Disabled,
            role,
            schedule: (Duration::from_secs(300), Duration::from_secs(3600)),
            interval: (role == Role::Leader).then_some(Duration::from_secs(300)),
            interval_reason: "no webhook delivery in the last 1h".to_string(),
            next_sync_at: None,
            last_run,
        }
    }

    fn status() -> Status {
        Status {
            database_problem: None,
            database_name: "codex.db".to_string(),
            webhooks_enabled: true,
            uptime: None,
            activity: None,
            providers: vec![
                ProviderStatus {
                    provider: Provider::Freshservice,
                    poller: poller(Role::Disabled, None),
                    stored: None,
                },
                ProviderStatus {
                    provider: Provider::SuperOps,
                    poller: poller(
                        Role::Leader,
                        Some(run(1, Provider::SuperOps, RunOutcome::Failed)),
                    ),
                    stored: Some(ProviderSummary {
                        counts: WebhookCounts {
                            received: 5,
                            applied: 3,
                            rejected: 1,
                            last_processed_at: Some("2024-05-02T00:00:00Z".to_string()),
                            last_received_at: Some("2024-05-02T00:00:01Z".to_string()),
                            last_deletion_at: None,
                        },
                        missed: 1,
                        runs: vec![run(2, Provider::SuperOps, RunOutcome::Ok)],
                        state: SyncState::default(),
                    }),
                },
            ],
        }
    }

    #[test]
    fn health_shows_the_polling_provider_at_the_top_and_every_provider_below() {
        let fields = Value::Object(status().health_fields());
        assert_eq!(fields["status"], "ok");
        assert_eq!(fields["database"], "ok");
        assert!(fields.get("database_error").is_none());
        // SuperOps polls, Freshservice does not: SuperOps is at the top.
        assert_eq!(fields["polling"]["role"], "leader");
        assert_eq!(fields["polling_interval_seconds"], 300);
        // The database holds a newer run (another instance's) than this
        // instance's own: that one is the last.
        assert_eq!(fields["last_sync_outcome"], "ok");
        assert_eq!(fields["polling"]["last_sync"]["id"], 2);
        assert_eq!(fields["polling"]["last_sync"]["kind"], "incremental");
        let coverage = &fields["webhook_coverage"]["superops"];
        assert_eq!(coverage["changes_by_webhook"], 3);
        assert_eq!(coverage["changes_missed"], 1);
        assert_eq!(coverage["coverage"], 0.75);
        assert_eq!(coverage["missed_ticket_ids_last_run"], json!([20]));
        assert_eq!(coverage["window_hours"], 24);
        assert_eq!(fields["webhook_coverage"]["freshservice"], Value::Null);
        let freshservice = &fields["providers"]["freshservice"];
        assert_eq!(freshservice["polling"]["role"], "disabled");
        assert_eq!(freshservice["last_sync_outcome"], Value::Null);
        assert!(freshservice.get("polling_interval_seconds").is_none());
        assert!(freshservice.get("webhook_coverage").is_none());
    }

    #[test]
    fn health_says_why_the_database_is_unavailable() {
        let mut status = status();
        status.database_problem = Some("database unavailable: refused".to_string());
        let fields = Value::Object(status.health_fields());
        assert_eq!(fields["status"], "degraded");
        assert_eq!(fields["database"], "unavailable");
        assert_eq!(fields["database_error"], "database unavailable: refused");
    }

    #[test]
    fn the_report_lists_counts_coverage_and_runs() {
        let report = status().report();
        assert!(
            report.starts_with("database: codex.db\nwebhooks: enabled\n"),
            "{report}"
        );
        assert!(
            report.contains(
                "freshservice, last 24 h:\n  polling: not configured\n  the database did not answer"
            ),
            "{report}"
        );
        assert!(
            report.contains("  polling: every 5m (every 1h while webhooks deliver)"),
            "{report}"
        );
        assert!(report.contains("webhook deliveries: 5 received, 3 stored a change, 1 rejected; last at 2024-05-02T00:00:01Z"), "{report}");
        assert!(
            report.contains(
                "webhook coverage: 75.0% (3 changes by webhook, 1 found first by polling)"
            ),
            "{report}"
        );
        assert!(
            report.contains("sync cursor: none; last reconcile: never"),
            "{report}"
        );
        assert!(report.contains("    #2 incremental "), "{report}");
        assert!(
            report.contains(" ok: 0 seen, 0 changed, 0 missed by webhooks [20], 0 API calls"),
            "{report}"
        );
    }

    #[test]
    fn roles_and_run_fields_are_stored_as_before() {
        let names: Vec<&str> = [Role::Starting, Role::Leader, Role::Standby, Role::Disabled]
            .into_iter()
            .map(Role::as_str)
            .collect();
        assert_eq!(names, ["starting", "leader", "standby", "disabled"]);
        for kind in [RunKind::Initial, RunKind::Incremental, RunKind::Full] {
            assert_eq!(kind.as_str().parse::<RunKind>(), Ok(kind));
        }
        for outcome in [RunOutcome::Running, RunOutcome::Ok, RunOutcome::Failed] {
            assert_eq!(outcome.as_str().parse::<RunOutcome>(), Ok(outcome));
        }
        assert!("done".parse::<RunOutcome>().is_err());
    }
}
