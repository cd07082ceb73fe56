//! Prometheus metrics of the webhook, served on `GET /metrics` and encoded by
//! the `prometheus-client` crate: OpenMetrics text when the scrape asks for
//! it (Prometheus does), the Prometheus text format 0.0.4 otherwise
//! ([`Exposition`]).
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `tempcreds_webhook_requests_total{result}` | counter | admission requests by [`RequestResult`] |
//! | `tempcreds_webhook_patches_total` | counter | pods patched (the `patched` requests) |
//! | `tempcreds_webhook_denials_total` | counter | pods denied (the `denied` requests) |
//! | `tempcreds_webhook_request_duration_seconds` | histogram | time to answer an admission request |
//! | `tempcreds_webhook_serviceaccount_lookups_total`, `..._failed_total` | counter | direct ServiceAccount reads after a cache miss, and those that failed |
//! | `tempcreds_webhook_tls_reloads_total`, `..._failed_total` | counter | certificate reload attempts, and those that failed |
//! | `tempcreds_webhook_config_reloads_total`, `..._failed_total` | counter | config file reload attempts, and those that failed |
//!
//! Recording one review is one atomic increment and one histogram
//! observation (a short uncontended lock): the counters of the four results
//! are looked up once, when the metrics are made, not per request.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tempcreds_core::exposition::Exposition;

/// How an admission request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestResult {
    /// Allowed with a patch (sidecar injected).
    Patched,
    /// Allowed unchanged (not opted in, opted out, already injected, not a CREATE).
    Allowed,
    /// Denied (bad annotation, ServiceAccount unreadable).
    Denied,
    /// Answered HTTP 400: no review to answer.
    BadRequest,
}

impl RequestResult {
    const ALL: [RequestResult; 4] = [
        RequestResult::Patched,
        RequestResult::Allowed,
        RequestResult::Denied,
        RequestResult::BadRequest,
    ];

    /// The `result` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestResult::Patched => "patched",
            RequestResult::Allowed => "allowed",
            RequestResult::Denied => "denied",
            RequestResult::BadRequest => "bad_request",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Upper bounds of the latency histogram, in seconds.
pub const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Something that was reloaded from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The serving certificate and key.
    Tls,
    /// The cluster config file.
    Config,
}

/// Attempts of something, and how many of them failed.
#[derive(Debug, Default)]
struct Attempts {
    total: Counter,
    failed: Counter,
}

impl Attempts {
    fn register(&self, registry: &mut Registry, name: &str, help: &str) {
        registry.register(
            format!("tempcreds_webhook_{name}"),
            help,
            self.total.clone(),
        );
        registry.register(
            format!("tempcreds_webhook_{name}_failed"),
            format!("{help} that failed"),
            self.failed.clone(),
        );
    }

    fn record(&self, ok: bool) {
        self.total.inc();
        if !ok {
            self.failed.inc();
        }
    }
}

/// The webhook's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `tempcreds_webhook_requests_total` by [`RequestResult::index`].
    requests: [Counter; 4],
    latency: Histogram,
    sa_lookups: Attempts,
    tls_reloads: Attempts,
    config_reloads: Attempts,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let by_result = Family::<[(&'static str, &'static str); 1], Counter>::default();
        // Every result is listed from the start (at 0), and its counter is
        // kept so that recording needs no label lookup.
        let requests =
            RequestResult::ALL.map(|r| by_result.get_or_create_owned(&[("result", r.as_str())]));
        registry.register(
            "tempcreds_webhook_requests",
            "Admission requests by result",
            by_result,
        );
        registry.register(
            "tempcreds_webhook_patches",
            "Pods patched (sidecar injected)",
            requests[RequestResult::Patched.index()].clone(),
        );
        registry.register(
            "tempcreds_webhook_denials",
            "Pods denied",
            requests[RequestResult::Denied.index()].clone(),
        );
        let latency = Histogram::new(BUCKETS);
        registry.register_with_unit(
            "tempcreds_webhook_request_duration",
            "Time to answer an admission request",
            Unit::Seconds,
            latency.clone(),
        );
        let sa_lookups = Attempts::default();
        sa_lookups.register(
            &mut registry,
            "serviceaccount_lookups",
            "Direct ServiceAccount reads after a cache miss",
        );
        let tls_reloads = Attempts::default();
        tls_reloads.register(&mut registry, "tls_reloads", "Certificate reload attempts");
        let config_reloads = Attempts::default();
        config_reloads.register(
            &mut registry,
            "config_reloads",
            "Config file reload attempts",
        );
        Metrics {
            registry,
            requests,
            latency,
            sa_lookups,
            tls_reloads,
            config_reloads,
        }
    }
}

impl Metrics {
    /// Records one admission request and how long it took.
    pub fn record(&self, result: RequestResult, elapsed: Duration) {
        self.requests[result.index()].inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Records a direct ServiceAccount read after a cache miss.
    pub fn record_sa_lookup(&self, ok: bool) {
        self.sa_lookups.record(ok);
    }

    /// Records a reload attempt.
    pub fn record_reload(&self, what: Reloaded, ok: bool) {
        match what {
            Reloaded::Tls => self.tls_reloads.record(ok),
            Reloaded::Config => self.config_reloads.record(ok),
        }
    }

    /// The number of requests that ended with `result`.
    pub fn requests(&self, result: RequestResult) -> u64 {
        self.requests[result.index()].get()
    }

    /// The metrics in `format`.
    pub fn encode(&self, format: Exposition) -> String {
        let mut out = String::with_capacity(4096);
        let written = match format {
            Exposition::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Exposition::PrometheusText => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        // Writing to a String cannot fail, and no metric here fails to encode.
        debug_assert!(written.is_ok());
        out
    }

    /// The metrics in the Prometheus text format (what `curl` gets).
    pub fn render(&self) -> String {
        self.encode(Exposition::PrometheusText)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.record(RequestResult::Patched, Duration::from_micros(80));
        m.record(RequestResult::Denied, Duration::from_millis(3));
        m.record(RequestResult::Allowed, Duration::from_secs(2));
        m.record_reload(Reloaded::Config, false);
        m.record_sa_lookup(true);
        let text = m.render();
        for line in [
            "# TYPE tempcreds_webhook_requests_total counter",
            "tempcreds_webhook_requests_total{result=\"patched\"} 1",
            "tempcreds_webhook_requests_total{result=\"bad_request\"} 0",
            "tempcreds_webhook_patches_total 1",
            "tempcreds_webhook_denials_total 1",
            "# TYPE tempcreds_webhook_request_duration_seconds histogram",
            "tempcreds_webhook_request_duration_seconds_bucket{le=\"0.0001\"} 1",
            "tempcreds_webhook_request_duration_seconds_bucket{le=\"0.005\"} 2",
            "tempcreds_webhook_request_duration_seconds_bucket{le=\"1\"} 2",
            "tempcreds_webhook_request_duration_seconds_bucket{le=\"+Inf\"} 3",
            "tempcreds_webhook_request_duration_seconds_count 3",
            "tempcreds_webhook_serviceaccount_lookups_total 1",
            "tempcreds_webhook_serviceaccount_lookups_failed_total 0",
            "tempcreds_webhook_tls_reloads_total 0",
            "tempcreds_webhook_config_reloads_total 1",
            "tempcreds_webhook_config_reloads_failed_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("tempcreds_webhook_request_duration_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 2.00308).abs() < 1e-9, "{sum}");
        assert_eq!(m.requests(RequestResult::Patched), 1);
        assert_eq!(m.requests(RequestResult::BadRequest), 0);
    }

    #[test]
    fn openmetrics_has_units_and_an_end() {
        let m = Metrics::default();
        m.record(RequestResult::Patched, Duration::from_micros(80));
        let text = m.encode(Exposition::OpenMetrics);
        assert!(
            text.contains("# TYPE tempcreds_webhook_requests counter"),
            "{text}"
        );
        assert!(text.contains("tempcreds_webhook_patches_total 1"), "{text}");
        assert!(
            text.contains("# UNIT tempcreds_webhook_request_duration_seconds seconds"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn content_types_are_the_crates() {
        assert_eq!(
            Exposition::PrometheusText.content_type(),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE
        );
    }
}
