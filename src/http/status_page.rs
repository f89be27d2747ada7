//! `GET /status`: the status page, rendered on the server from `Status`
//! (the type health and `codex status` render) with `maud`: one HTML
//! document, no JavaScript, no external assets, readable on a phone and
//! refreshing itself every 30 s. It never shows a secret or a body: the
//! database name is masked, deliveries are their journal lines.

use std::collections::HashMap;
use std::time::Duration;

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::config::format_duration;
use crate::status::{Activity, ProviderStatus, Status};
use crate::store::Delivery;
use crate::timestamp;

/// Ten-minute slots the chart shows: 24 hours.
const SLOTS: u64 = 144;
const SLOT_SECS: u64 = 600;
/// The chart's drawing box, in SVG units.
const BAR_WIDTH: u64 = 5;
const CHART_HEIGHT: f64 = 100.0;

const STYLE: &str = "
body{font-family:system-ui,sans-serif;margin:0;padding:0 1rem 2rem;color:#1b1b1b;background:#fafafa;line-height:1.4}
h1{font-size:1.4rem;margin:1rem 0 .2rem}h2{font-size:1.1rem;margin:1.4rem 0 .5rem}
.meta{color:#555;margin:0}.ok{color:#2e7d32}.bad{color:#c62828;font-weight:600}
.providers{display:grid;grid-template-columns:repeat(auto-fit,minmax(16rem,1fr));gap:.8rem}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.6rem .8rem}
.card h3{margin:0 0 .3rem;font-size:1rem}dl{margin:0;display:grid;grid-template-columns:auto 1fr;gap:.1rem .6rem}
dt{color:#555}dd{margin:0}.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.85rem;width:100%;background:#fff}
th,td{text-align:left;padding:.25rem .5rem;border-bottom:1px solid #eee;white-space:nowrap}
td.error{white-space:normal;min-width:12rem}svg{width:100%;height:8rem;background:#fff;border:1px solid #ddd}
.legend span{display:inline-block;margin-right:1rem;font-size:.85rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}
";

/// How the chart groups outcomes: what was stored, what changed nothing,
/// what was refused.
const GROUPS: [(&str, &str, &[&str]); 3] = [
    ("stored", "#2e7d32", &["created", "updated", "deleted"]),
    ("no change", "#9e9e9e", &["ignored", "unchanged", "stale"]),
    ("rejected or failed", "#c62828", &["rejected", "failed"]),
];

/// The page for `status`; `base_path` prefixes its own links.
pub fn render(status: &Status) -> String {
    let database = match &status.database_problem {
        None => html! { span.ok { "ok" } },
        Some(problem) => html! { span.bad { "unavailable: " (problem) } },
    };
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="30";
                title { "Codex status" }
                // No icon to fetch: the browser would ask for /favicon.ico.
                link rel="icon" href="data:,";
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "Codex" }
                p.meta {
                    "version " (env!("CARGO_PKG_VERSION"))
                    @if let Some(uptime) = status.uptime { " · up " (uptime_text(uptime)) }
                    " · updated " (timestamp::now())
                }
                p.meta id="database" { "database " (status.database_name) ": " (database) }
                p.meta { "webhooks " (if status.webhooks_enabled { "enabled" } else { "disabled" }) }
                h2 { "Providers" }
                div.providers { @for provider in &status.providers { (provider_card(provider)) } }
                @match &status.activity {
                    Some(activity) => (activity_sections(activity)),
                    None => p.bad { "The database did not answer: deliveries and runs cannot be shown." },
                }
            }
        }
    };
    page.into_string()
}

fn provider_card(status: &ProviderStatus) -> Markup {
    let poller = &status.poller;
    html! {
        section.card id={ "provider-" (status.provider.as_str()) } {
            h3 { (status.provider.as_str()) }
            dl {
                dt { "Polling" }
                dd {
                    @if poller.enabled {
                        (poller.role.as_str())
                        @if let Some(interval) = poller.interval {
                            ", every " (format_duration(interval)) " (" (poller.interval_reason) ")"
                        }
                    } @else { "not configured" }
                }
                dt { "Next run" }
                dd { (poller.next_sync_at.as_deref().unwrap_or("-")) }
                @match &status.stored {
                    Some(stored) => {
                        dt { "Last webhook" }
                        dd { (stored.counts.last_received_at.as_deref().unwrap_or("never")) }
                        dt { "Coverage, 24 h" }
                        dd {
                            @match stored.coverage() {
                                Some(ratio) => (format!("{:.1}%", ratio * 100.0)),
                                None => "no changes yet",
                            }
                            " (" (stored.counts.applied) " by webhook, "
                            (stored.missed) " found first by polling)"
                        }
                        dt { "Found first by polling, last run" }
                        dd {
                            @if stored.missed_last_run().is_empty() { "none" }
                            @else {
                                "tickets "
                                (stored.missed_last_run().iter().map(i64::to_string).collect::<Vec<_>>().join(", "))
                            }
                        }
                        dt { "Deliveries, 24 h" }
                        dd { (stored.counts.received) " received, " (stored.counts.rejected) " rejected" }
                    }
                    None => { dt { "Database" } dd.bad { "did not answer in time" } }
                }
            }
        }
    }
}

fn activity_sections(activity: &Activity) -> Markup {
    html! {
        h2 { "Deliveries per 10 minutes, last 24 h" }
        (chart(activity))
        h2 { "Last " (Activity::DELIVERIES) " deliveries" }
        div.scroll {
            table id="deliveries" {
                thead { tr { th { "Time" } th { "Provider" } th { "Ticket" } th { "Event" } th { "Outcome" } th { "Status" } th { "Error" } } }
                tbody {
                    @for delivery in &activity.deliveries { (delivery_row(delivery)) }
                    @if activity.deliveries.is_empty() { tr { td colspan="7" { "none yet" } } }
                }
            }
        }
        h2 { "Last " (Activity::RUNS) " sync runs" }
        div.scroll {
            table id="runs" {
                thead { tr { th { "Started" } th { "Provider" } th { "Kind" } th { "Outcome" } th { "Seen" } th { "Changed" } th { "Missed by webhooks" } th { "API calls" } th { "Error" } } }
                tbody {
                    @for run in &activity.runs {
                        tr {
                            td { (run.started_at) } td { (run.provider) } td { (run.kind.as_str()) }
                            td { (run.outcome.as_str()) } td { (run.tickets_seen) } td { (run.tickets_changed) }
                            td { (run.missed_by_webhooks) } td { (run.api_calls) }
                            td.error { (run.error.as_deref().unwrap_or("")) }
                        }
                    }
                    @if activity.runs.is_empty() { tr { td colspan="9" { "none yet" } } }
                }
            }
        }
    }
}

fn delivery_row(delivery: &Delivery) -> Markup {
    html! {
        tr {
            td { (delivery.received_at) }
            td { (delivery.provider) }
            td { @if let Some(id) = delivery.ticket_id { (id) } @else { "-" } }
            td { (delivery.event.as_deref().unwrap_or("-")) }
            td { (delivery.outcome) }
            td { (delivery.status_code()) }
            td.error { (delivery.error.as_deref().unwrap_or("")) }
        }
    }
}

/// A stacked bar per ten-minute slot, oldest on the left, split by
/// `GROUPS`; each bar has a tooltip with its counts.
fn chart(activity: &Activity) -> Markup {
    let mut per_slot: HashMap<&str, [i64; 3]> = HashMap::new();
    for count in &activity.counts {
        if let Some(group) = GROUPS
            .iter()
            .position(|(_, _, outcomes)| outcomes.contains(&count.outcome.as_str()))
        {
            per_slot.entry(count.slot.as_str()).or_default()[group] += count.count;
        }
    }
    let slots: Vec<(String, [i64; 3])> = (0..SLOTS)
        .map(|i| {
            let start = timestamp::seconds_ago((SLOTS - 1 - i) * SLOT_SECS);
            let key = start.get(..15).unwrap_or_default().to_string();
            let counts = per_slot.get(key.as_str()).copied().unwrap_or_default();
            (key, counts)
        })
        .collect();
    let highest = slots
        .iter()
        .map(|(_, c)| c.iter().sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let total: i64 = slots.iter().map(|(_, c)| c.iter().sum::<i64>()).sum();
    let mut bars = Vec::new();
    for (i, (slot, counts)) in slots.iter().enumerate() {
        let mut top = CHART_HEIGHT;
        for (group, count) in counts.iter().enumerate().filter(|(_, c)| **c > 0) {
            let height = bar_height(*count, highest);
            top -= height;
            let (name, colour, _) = GROUPS[group];
            bars.push(Bar {
                x: i as u64 * BAR_WIDTH,
                y: top,
                height,
                colour,
                name,
                title: format!("{slot}0: {count} {name}"),
            });
        }
    }
    let width = SLOTS * BAR_WIDTH;
    html! {
        svg id="chart" viewBox={ "0 0 " (width) " " (CHART_HEIGHT) } role="img" preserveAspectRatio="none"
            aria-label={ (total) " deliveries in the last 24 hours" } {
            @for bar in &bars {
                rect x=(bar.x) y=(format!("{:.2}", bar.y)) width=(BAR_WIDTH - 1)
                    height=(format!("{:.2}", bar.height)) fill=(bar.colour) data-group=(bar.name) {
                    title { (bar.title) }
                }
            }
        }
        p.legend {
            @for (name, colour, _) in GROUPS {
                span { span.swatch style={ "background:" (colour) } {} (name) }
            }
            span { "highest: " (highest) " in 10 minutes; total " (total) }
        }
    }
}

/// One coloured part of a slot's bar.
struct Bar {
    x: u64,
    y: f64,
    height: f64,
    colour: &'static str,
    name: &'static str,
    title: String,
}

/// The height of `count` deliveries when `highest` fills the chart.
fn bar_height(count: i64, highest: i64) -> f64 {
    // Counts per ten minutes are far below 2^52: the casts are exact.
    #[allow(clippy::cast_precision_loss)]
    let share = count as f64 / highest as f64;
    share * CHART_HEIGHT
}

fn uptime_text(uptime: Duration) -> String {
    let secs = uptime.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_scaled_to_the_busiest_slot() {
        assert_eq!(bar_height(5, 10), 50.0);
        assert_eq!(bar_height(10, 10), CHART_HEIGHT);
    }

    #[test]
    fn uptime_reads_in_the_largest_units() {
        assert_eq!(uptime_text(Duration::from_secs(42)), "42 s");
        assert_eq!(
            uptime_text(Duration::from_secs(3 * 3600 + 120)),
            "3 h 2 min"
        );
        assert_eq!(
            uptime_text(Duration::from_secs(2 * 86_400 + 3600)),
            "2 d 1 h"
        );
    }
}
