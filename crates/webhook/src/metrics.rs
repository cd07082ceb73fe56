//! Prometheus metrics of the webhook, kept in atomics and rendered as the
//! text exposition format on `GET /metrics`. Hand-written: a handful of
//! counters and one histogram do not justify a metrics framework.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The webhook's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [AtomicU64; 4],
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_nanos: AtomicU64,
    sa_lookups: AtomicU64,
    sa_lookup_failures: AtomicU64,
    tls_reloads: AtomicU64,
    tls_reload_failures: AtomicU64,
    config_reloads: AtomicU64,
    config_reload_failures: AtomicU64,
}

/// Something that was reloaded from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The serving certificate and key.
    Tls,
    /// The cluster config file.
    Config,
}

impl Metrics {
    /// Records one admission request and how long it took.
    pub fn record(&self, result: RequestResult, elapsed: Duration) {
        self.requests[result.index()].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Records a direct ServiceAccount read after a cache miss.
    pub fn record_sa_lookup(&self, ok: bool) {
        self.sa_lookups.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.sa_lookup_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a reload attempt.
    pub fn record_reload(&self, what: Reloaded, ok: bool) {
        let (total, failed) = match what {
            Reloaded::Tls => (&self.tls_reloads, &self.tls_reload_failures),
            Reloaded::Config => (&self.config_reloads, &self.config_reload_failures),
        };
        total.fetch_add(1, Ordering::Relaxed);
        if !ok {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The number of requests that ended with `result`.
    pub fn requests(&self, result: RequestResult) -> u64 {
        self.requests[result.index()].load(Ordering::Relaxed)
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut out = String::with_capacity(2048);
        // Writing to a String cannot fail.
        let _ = self.render_into(&mut out, load);
        out
    }

    fn render_into(&self, out: &mut String, load: impl Fn(&AtomicU64) -> u64) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP tempcreds_webhook_requests_total Admission requests by result."
        )?;
        writeln!(out, "# TYPE tempcreds_webhook_requests_total counter")?;
        for r in RequestResult::ALL {
            writeln!(
                out,
                "tempcreds_webhook_requests_total{{result=\"{}\"}} {}",
                r.as_str(),
                load(&self.requests[r.index()])
            )?;
        }
        writeln!(
            out,
            "# HELP tempcreds_webhook_patches_total Pods patched (sidecar injected)."
        )?;
        writeln!(out, "# TYPE tempcreds_webhook_patches_total counter")?;
        writeln!(
            out,
            "tempcreds_webhook_patches_total {}",
            load(&self.requests[RequestResult::Patched.index()])
        )?;
        writeln!(out, "# HELP tempcreds_webhook_denials_total Pods denied.")?;
        writeln!(out, "# TYPE tempcreds_webhook_denials_total counter")?;
        writeln!(
            out,
            "tempcreds_webhook_denials_total {}",
            load(&self.requests[RequestResult::Denied.index()])
        )?;
        writeln!(
            out,
            "# HELP tempcreds_webhook_request_duration_seconds Time to answer an admission request."
        )?;
        writeln!(
            out,
            "# TYPE tempcreds_webhook_request_duration_seconds histogram"
        )?;
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += load(count);
            writeln!(
                out,
                "tempcreds_webhook_request_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            )?;
        }
        let count = load(&self.latency_count);
        writeln!(
            out,
            "tempcreds_webhook_request_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
        )?;
        writeln!(
            out,
            "tempcreds_webhook_request_duration_seconds_sum {}",
            load(&self.latency_sum_nanos) as f64 / 1e9
        )?;
        writeln!(
            out,
            "tempcreds_webhook_request_duration_seconds_count {count}"
        )?;
        for (name, help, total, failed) in [
            (
                "serviceaccount_lookups",
                "Direct ServiceAccount reads after a cache miss",
                &self.sa_lookups,
                &self.sa_lookup_failures,
            ),
            (
                "tls_reloads",
                "Certificate reload attempts",
                &self.tls_reloads,
                &self.tls_reload_failures,
            ),
            (
                "config_reloads",
                "Config file reload attempts",
                &self.config_reloads,
                &self.config_reload_failures,
            ),
        ] {
            writeln!(out, "# HELP tempcreds_webhook_{name}_total {help}.")?;
            writeln!(out, "# TYPE tempcreds_webhook_{name}_total counter")?;
            writeln!(out, "tempcreds_webhook_{name}_total {}", load(total))?;
            writeln!(
                out,
                "# HELP tempcreds_webhook_{name}_failed_total {help} that failed."
            )?;
            writeln!(out, "# TYPE tempcreds_webhook_{name}_failed_total counter")?;
            writeln!(
                out,
                "tempcreds_webhook_{name}_failed_total {}",
                load(failed)
            )?;
        }
        Ok(())
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
        let text = m.render();
        assert!(text.contains("tempcreds_webhook_requests_total{result=\"patched\"} 1"));
        assert!(text.contains("tempcreds_webhook_denials_total 1"));
        assert!(
            text.contains("tempcreds_webhook_request_duration_seconds_bucket{le=\"0.0001\"} 1")
        );
        assert!(text.contains("tempcreds_webhook_request_duration_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("tempcreds_webhook_request_duration_seconds_bucket{le=\"1\"} 2"));
        assert!(text.contains("tempcreds_webhook_request_duration_seconds_bucket{le=\"+Inf\"} 3"));
        assert!(text.contains("tempcreds_webhook_request_duration_seconds_count 3"));
    }
}
