//! Prometheus metrics, served at `GET /metrics` in the text format by the
//! `prometheus` crate. One process-wide set, as Prometheus' own clients
//! keep: the HTTP workers, the writer and the pollers each record where
//! the event happens.
//!
//! Recording costs no lock: every counter and histogram a request can
//! touch is resolved once, here, and kept in plain tables; incrementing
//! one is an atomic add. Values read from elsewhere (database state,
//! coverage, journal rows) are set when `/metrics` is scraped.

use std::collections::HashMap;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::psa::Provider;

/// What a delivery became, as the answer's `status` (or `refused` for an
/// error answer), with the HTTP status it was answered with.
const DELIVERY_OUTCOMES: [(&str, &[u16]); 7] = [
    ("created", &[201]),
    ("updated", &[200]),
    ("deleted", &[200]),
    ("ignored", &[200]),
    ("unchanged", &[200]),
    ("stale", &[200]),
    (
        "refused",
        &[400, 401, 403, 404, 405, 408, 411, 413, 415, 429, 500, 503],
    ),
];

/// The routes request latency is kept for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    Delivery,
    Test,
    Health,
    Api,
    Operator,
    Other,
}

impl RouteKind {
    const ALL: [RouteKind; 6] = [
        RouteKind::Delivery,
        RouteKind::Test,
        RouteKind::Health,
        RouteKind::Api,
        RouteKind::Operator,
        RouteKind::Other,
    ];

    fn label(self) -> &'static str {
        match self {
            RouteKind::Delivery => "delivery",
            RouteKind::Test => "test",
            RouteKind::Health => "health",
            RouteKind::Api => "api",
            RouteKind::Operator => "operator",
            RouteKind::Other => "other",
        }
    }
}

/// Every metric Codex exports.
pub struct Metrics {
    registry: Registry,
    deliveries: IntCounterVec,
    delivery_counters: HashMap<(Provider, &'static str, u16), IntCounter>,
    requests: [Histogram; RouteKind::ALL.len()],
    commit_seconds: Histogram,
    batch_size: Histogram,
    queue_depth: IntGauge,
    database_up: IntGauge,
    sync_runs: IntCounterVec,
    api_calls: HashMap<Provider, IntCounter>,
    rate_limit_waits: HashMap<Provider, IntCounter>,
    coverage: GaugeVec,
    journal_rows: IntGauge,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Latency buckets in seconds: 0.5 ms to 10 s.
const LATENCY: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        // The names and label sets below are fixed, so registering cannot
        // fail; a failure would be a programming error caught by the tests.
        let register = |collector: Box<dyn prometheus::core::Collector>| {
            registry
                .register(collector)
                .expect("metric names are unique and valid");
        };
        let deliveries = IntCounterVec::new(
            Opts::new(
                "codex_deliveries_total",
                "Webhook deliveries by provider, outcome and HTTP status answered.",
            ),
            &["provider", "outcome", "code"],
        )
        .expect("valid metric");
        register(Box::new(deliveries.clone()));
        let mut delivery_counters = HashMap::new();
        for provider in Provider::ALL {
            for (outcome, codes) in DELIVERY_OUTCOMES {
                for code in codes {
                    let counter = deliveries.with_label_values(&[
                        provider.as_str(),
                        outcome,
                        &code.to_string(),
                    ]);
                    delivery_counters.insert((provider, outcome, *code), counter);
                }
            }
        }
        let requests_vec = HistogramVec::new(
            HistogramOpts::new(
                "codex_request_duration_seconds",
                "Time from reading a request to answering it, by route.",
            )
            .buckets(LATENCY.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        register(Box::new(requests_vec.clone()));
        let requests = RouteKind::ALL.map(|route| requests_vec.with_label_values(&[route.label()]));
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
                .expect("valid metric");
            register(Box::new(histogram.clone()));
            histogram
        };
        let commit_seconds = histogram(
            "codex_commit_duration_seconds",
            "Time the writer took to apply and commit one batch.",
            LATENCY.to_vec(),
        );
        let batch_size = histogram(
            "codex_writer_batch_size",
            "Writes committed together in one transaction (group commit).",
            vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0],
        );
        let gauge = |name: &str, help: &str| {
            let gauge = IntGauge::new(name, help).expect("valid metric");
            register(Box::new(gauge.clone()));
            gauge
        };
        let queue_depth = gauge(
            "codex_writer_queue_depth",
            "Commands waiting for the writer when it last took a batch.",
        );
        let database_up = gauge(
            "codex_database_up",
            "1 when the database takes writes, 0 while it is unavailable.",
        );
        let journal_rows = gauge(
            "codex_journal_rows",
            "Rows in the delivery journal (webhook_events).",
        );
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(Box::new(vec.clone()));
            vec
        };
        let sync_runs = counter_vec(
            "codex_sync_runs_total",
            "Polling runs by provider and outcome.",
            &["provider", "outcome"],
        );
        // Every series exists from the start, at 0, so rates and alerts
        // work before the first run.
        for provider in Provider::ALL {
            for outcome in ["ok", "failed"] {
                sync_runs.with_label_values(&[provider.as_str(), outcome]);
            }
        }
        let per_provider = |vec: &IntCounterVec| {
            Provider::ALL
                .into_iter()
                .map(|p| (p, vec.with_label_values(&[p.as_str()])))
                .collect::<HashMap<_, _>>()
        };
        let api_calls = per_provider(&counter_vec(
            "codex_psa_api_calls_total",
            "Requests made to a PSA's API.",
            &["provider"],
        ));
        let rate_limit_waits = per_provider(&counter_vec(
            "codex_psa_rate_limit_waits_total",
            "Rate-limit answers from a PSA's API, each followed by a wait.",
            &["provider"],
        ));
        let coverage = GaugeVec::new(
            Opts::new(
                "codex_webhook_coverage_ratio",
                "Share of the last 24 h's ticket changes that arrived by webhook before polling saw them.",
            ),
            &["provider"],
        )
        .expect("valid metric");
        register(Box::new(coverage.clone()));
        Metrics {
            registry,
            deliveries,
            delivery_counters,
            requests,
            commit_seconds,
            batch_size,
            queue_depth,
            database_up,
            sync_runs,
            api_calls,
            rate_limit_waits,
            coverage,
            journal_rows,
        }
    }

    /// Counts a delivery answered with `code`; `outcome` is what it became.
    pub fn delivery(&self, provider: Provider, outcome: &str, code: u16) {
        match self.delivery_counters.get(&(provider, outcome, code)) {
            Some(counter) => counter.inc(),
            // An outcome or code not foreseen above: counted all the same.
            None => self
                .deliveries
                .with_label_values(&[provider.as_str(), outcome, &code.to_string()])
                .inc(),
        }
    }

    /// Records how long a request of `route` took to answer.
    pub fn request(&self, route: RouteKind, took: Duration) {
        let at = RouteKind::ALL
            .iter()
            .position(|r| *r == route)
            .unwrap_or(RouteKind::ALL.len() - 1);
        self.requests[at].observe(took.as_secs_f64());
    }

    /// Records a committed batch of `size` writes and how long it took.
    pub fn commit(&self, size: usize, took: Duration) {
        self.commit_seconds.observe(took.as_secs_f64());
        // Batch sizes are small; the cast to f64 is exact.
        #[allow(clippy::cast_precision_loss)]
        self.batch_size.observe(size as f64);
    }

    pub fn queue_depth(&self, depth: usize) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub fn sync_run(&self, provider: Provider, outcome: &str) {
        self.sync_runs
            .with_label_values(&[provider.as_str(), outcome])
            .inc();
    }

    /// Counts `calls` requests a run made to `provider`'s API.
    pub fn api_calls(&self, provider: Provider, calls: i64) {
        if let (Some(counter), Ok(calls)) = (self.api_calls.get(&provider), u64::try_from(calls)) {
            counter.inc_by(calls);
        }
    }

    pub fn rate_limit_wait(&self, provider: Provider) {
        if let Some(counter) = self.rate_limit_waits.get(&provider) {
            counter.inc();
        }
    }

    /// The text exposition, after setting what is read at scrape time.
    pub fn render(&self, scraped: &Scraped) -> String {
        self.database_up.set(i64::from(scraped.database_up));
        for (provider, coverage) in &scraped.coverage {
            match coverage {
                Some(ratio) => self
                    .coverage
                    .with_label_values(&[provider.as_str()])
                    .set(*ratio),
                None => {
                    let _ = self.coverage.remove_label_values(&[provider.as_str()]);
                }
            }
        }
        if let Some(rows) = scraped.journal_rows {
            self.journal_rows.set(rows);
        }
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("cannot encode the metrics: {error}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// What `/metrics` reads from elsewhere when scraped.
pub struct Scraped {
    pub database_up: bool,
    /// Each provider's webhook coverage, `None` while there is nothing to measure.
    pub coverage: Vec<(Provider, Option<f64>)>,
    /// `None` when the database could not be asked: the last value stays.
    pub journal_rows: Option<i64>,
}

/// The content type of the text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_by_prometheus_conventions() {
        let text = metrics().render(&Scraped {
            database_up: true,
            coverage: vec![(Provider::Freshservice, Some(0.5))],
            journal_rows: Some(3),
        });
        for name in [
            "codex_deliveries_total",
            "codex_request_duration_seconds_bucket",
            "codex_commit_duration_seconds_count",
            "codex_writer_batch_size_bucket",
            "codex_writer_queue_depth",
            "codex_database_up 1",
            "codex_psa_api_calls_total",
            "codex_psa_rate_limit_waits_total",
            "codex_webhook_coverage_ratio{provider=\"freshservice\"} 0.5",
            "codex_journal_rows 3",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
