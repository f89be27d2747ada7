//! `codex status`.

use super::COVERAGE_WINDOW_SECS;
use crate::config::Config;
use crate::error::StoreError;
use crate::psa::Provider;
use crate::timestamp;

/// The text `codex status` prints: polling configuration, webhook traffic
/// and coverage over the last 24 hours, and the last runs.
pub fn status_report(config: &Config) -> Result<String, StoreError> {
    use std::fmt::Write;
    let mut backend = crate::store::connect(&config.database.url)?;
    let day_start = timestamp::seconds_ago(COVERAGE_WINDOW_SECS);
    let mut out = String::new();
    let _ = writeln!(out, "database: {}", config.database.url.masked());
    let _ = writeln!(
        out,
        "webhooks: {}",
        if config.webhooks.enabled {
            "enabled"
        } else {
            "disabled"
        }
    );
    for provider in Provider::ALL {
        let counts = backend.webhook_counts(provider, &day_start)?;
        let missed = backend.missed_since(provider, &day_start)?;
        let runs = backend.recent_runs(Some(provider), 10)?;
        let state = backend.sync_state(provider)?;
        let _ = writeln!(
            out,
            "\n{provider}, last 24 h:\n  polling: {}",
            if provider.polling(config) {
                format!(
                    "every {} (every {} while webhooks deliver)",
                    crate::config::format_duration(config.scheduler.ticket_sync_interval),
                    crate::config::format_duration(
                        config.scheduler.ticket_sync_interval_with_webhooks
                    )
                )
            } else {
                "not configured".to_string()
            }
        );
        let _ = writeln!(
            out,
            "  webhook deliveries: {} received, {} stored a change, {} rejected; last at {}",
            counts.received,
            counts.applied,
            counts.rejected,
            counts.last_received_at.as_deref().unwrap_or("never")
        );
        let total = counts.applied + missed;
        let _ = writeln!(
            out,
            "  webhook coverage: {} ({} changes by webhook, {} found first by polling)",
            if total > 0 {
                format!("{:.1}%", counts.applied as f64 * 100.0 / total as f64)
            } else {
                "no changes yet".to_string()
            },
            counts.applied,
            missed
        );
        let _ = writeln!(
            out,
            "  sync cursor: {}; last reconcile: {}",
            state.cursor.as_deref().unwrap_or("none"),
            state.last_reconcile_at.as_deref().unwrap_or("never")
        );
        let _ = writeln!(out, "  last sync runs:");
        if runs.is_empty() {
            let _ = writeln!(out, "    none");
        }
        for run in &runs {
            let _ = writeln!(
                out,
                "    #{} {} {} -> {} {}: {} seen, {} changed, {} missed by webhooks{}, {} API calls{}",
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
            );
        }
    }
    Ok(out)
}
