//! The sidecar's Prometheus metrics, served as `GET /metrics` on the health
//! listener (`--health-addr`, beside `/healthz` and `/readyz`), so a pod
//! needs no further port. With `--no-health-server` (`hostNetwork: true`
//! pods) nothing is bound and there is no `/metrics` either.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `tempcreds_sidecar_refreshes_total{profile}` | counter | refreshes that fetched and wrote credentials |
//! | `tempcreds_sidecar_refresh_failures_total{profile,kind}` | counter | refresh attempts that failed, by [`FailureKind`] |
//! | `tempcreds_sidecar_credentials_expires_in_seconds{profile}` | gauge | seconds until the credentials written (or adopted) expire, computed at each scrape; negative once expired; absent until some are written |
//! | `tempcreds_sidecar_last_refresh_timestamp_seconds{profile}` | gauge | Unix time of the last refresh that wrote credentials; absent until one did (adopting a previous run's credentials at start is not one) |
//! | `tempcreds_sidecar_sts_request_duration_seconds{action}` | histogram | time of each STS call, answered or not, by STS action |
//!
//! `profile` is the credentials' profile name (`--profile`), which
//! [`tempcreds_core::config::is_profile_name`] limits to letters, digits,
//! `-`, `_` and `.`; the other label values come only from fixed sets (the
//! failure kinds, the STS action names), never from input: no access key ID,
//! role or session name, token or secret can appear in the output.
//! `tempcreds-sidecar status` ([`crate::status`]) reads these back. Recording is a few atomic operations and
//! one short lock for the histogram; encoding and its format are the
//! `prometheus-client` crate's ([`Exposition`] picks OpenMetrics or the
//! Prometheus text format from the `Accept` header).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tempcreds_core::exposition::Exposition;
use tokio::time::Instant;

use crate::app::RefreshError;
use crate::health::Readiness;
use crate::inputs::InputError;
use crate::sts::FetchError;

/// Upper bounds of the STS latency histogram, in seconds: a regional STS
/// answers in tens of milliseconds; a call gives up after 20 s.
pub const STS_BUCKETS: [f64; 11] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0];

/// Why a refresh attempt failed: the `kind` label of
/// `tempcreds_sidecar_refresh_failures_total`. A fixed set, so the label
/// never carries text from a file, STS or the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// `--token-file` could not be read or holds no token.
    TokenUnreadable,
    /// `--access-key-id-file` or `--secret-access-key-file` could not be
    /// read or holds no key.
    KeysUnreadable,
    /// `--source ambient`: the SDK's default chain found no credentials.
    AmbientUnavailable,
    /// No answer from STS (connection refused, DNS, TLS, timeout).
    StsUnreachable,
    /// STS refused the call for a reason that needs a change (access
    /// denied, invalid token, bad parameter).
    StsDenied,
    /// STS answered with an error that retrying can fix (throttling, a
    /// 5xx, an identity provider STS could not reach).
    StsTransient,
    /// The endpoint answered something that is not a usable STS answer.
    BadAnswer,
    /// Writing the credentials files failed.
    WriteFailed,
}

impl FailureKind {
    /// Every kind, in the order they are listed on `/metrics`.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::TokenUnreadable,
        FailureKind::KeysUnreadable,
        FailureKind::AmbientUnavailable,
        FailureKind::StsUnreachable,
        FailureKind::StsDenied,
        FailureKind::StsTransient,
        FailureKind::BadAnswer,
        FailureKind::WriteFailed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::TokenUnreadable => "token_unreadable",
            FailureKind::KeysUnreadable => "keys_unreadable",
            FailureKind::AmbientUnavailable => "ambient_unavailable",
            FailureKind::StsUnreachable => "sts_unreachable",
            FailureKind::StsDenied => "sts_denied",
            FailureKind::StsTransient => "sts_transient",
            FailureKind::BadAnswer => "bad_answer",
            FailureKind::WriteFailed => "write_failed",
        }
    }

    /// The kind of a failed refresh.
    pub fn of(error: &RefreshError) -> FailureKind {
        match error {
            RefreshError::Fetch(FetchError::Input(
                InputError::Read { flag, .. } | InputError::Invalid { flag, .. },
            )) => {
                if *flag == "token-file" {
                    FailureKind::TokenUnreadable
                } else {
                    FailureKind::KeysUnreadable
                }
            }
            RefreshError::Fetch(FetchError::Ambient { .. }) => FailureKind::AmbientUnavailable,
            RefreshError::Fetch(FetchError::Unreachable(_)) => FailureKind::StsUnreachable,
            RefreshError::Fetch(FetchError::Sts(f)) if f.explanation.transient => {
                FailureKind::StsTransient
            }
            RefreshError::Fetch(FetchError::Sts(_)) => FailureKind::StsDenied,
            RefreshError::Fetch(FetchError::Malformed { .. }) => FailureKind::BadAnswer,
            RefreshError::Write(_) => FailureKind::WriteFailed,
        }
    }
}

/// A one-label set whose key and value are both fixed strings.
type Label = [(&'static str, &'static str); 1];

/// The sidecar's metrics, for one of its profiles; clones share them, and
/// the metrics of every profile from one [`Metrics::profiles`] are encoded
/// together.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
    /// Which profile this handle records for.
    profile: usize,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    /// `tempcreds_sidecar_refreshes_total` of each profile.
    refreshes: Vec<Counter>,
    /// `tempcreds_sidecar_refresh_failures_total` of each profile, by
    /// `FailureKind as usize`.
    failures: Vec<[Counter; FailureKind::ALL.len()]>,
    last_refresh: LastRefresh,
    sts_calls: Family<Label, Histogram, fn() -> Histogram>,
}

fn sts_histogram() -> Histogram {
    Histogram::new(STS_BUCKETS)
}

/// The `profile` label: a name checked by `is_profile_name` (letters,
/// digits, `-`, `_`, `.`), not free input.
type ProfileLabel = [(&'static str, String); 1];

/// Encodes the gauge `name` (in seconds) with one sample per
/// `(profile, value)`; nothing at all when there is none.
fn encode_profile_gauge(
    mut encoder: DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&String, f64)],
) -> Result<(), std::fmt::Error> {
    if values.is_empty() {
        return Ok(());
    }
    let mut metric = encoder.encode_descriptor(
        name,
        help,
        Some(&Unit::Seconds),
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (profile, value) in values {
        let label: ProfileLabel = [("profile", (*profile).clone())];
        ConstGauge::new(*value).encode(metric.encode_family(&label)?)?;
    }
    Ok(())
}

/// `tempcreds_sidecar_credentials_expires_in_seconds{profile}`, computed
/// from each profile's written credentials' expiry (its readiness latch)
/// when scraped.
#[derive(Debug)]
struct ExpiresIn(Vec<(String, Readiness)>);

impl Collector for ExpiresIn {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let now = Instant::now();
        let written: Vec<(&String, f64)> = self
            .0
            .iter()
            .filter_map(|(name, readiness)| {
                let expires_at = readiness.expires_at()?;
                Some((
                    name,
                    match expires_at.checked_duration_since(now) {
                        Some(left) => left.as_secs_f64(),
                        None => -now.duration_since(expires_at).as_secs_f64(),
                    },
                ))
            })
            .collect();
        encode_profile_gauge(
            encoder,
            "tempcreds_sidecar_credentials_expires_in",
            "Seconds until the credentials written (or adopted at start) expire; negative once expired.",
            &written,
        )
    }
}

/// `tempcreds_sidecar_last_refresh_timestamp_seconds{profile}`: the Unix
/// time of each profile's last refresh that wrote credentials, as `f64`
/// bits (0: none yet, and then that profile's sample is absent).
#[derive(Debug, Clone, Default)]
struct LastRefresh(Arc<Vec<(String, AtomicU64)>>);

impl LastRefresh {
    fn set_now(&self, profile: usize) {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Some((_, at)) = self.0.get(profile) {
            at.store(now.to_bits(), Ordering::Relaxed);
        }
    }
}

impl Collector for LastRefresh {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let set: Vec<(&String, f64)> = self
            .0
            .iter()
            .filter_map(|(name, at)| {
                let bits = at.load(Ordering::Relaxed);
                (bits != 0).then(|| (name, f64::from_bits(bits)))
            })
            .collect();
        encode_profile_gauge(
            encoder,
            "tempcreds_sidecar_last_refresh_timestamp",
            "Unix time of the last refresh that fetched credentials from STS and wrote them.",
            &set,
        )
    }
}

impl Metrics {
    /// Metrics of the credentials of one profile `profile` (the `profile`
    /// label), whose expiry gauge reads `readiness`, the latch the refresh
    /// loop sets with each written credentials' expiry.
    pub fn new(readiness: Readiness, profile: &str) -> Metrics {
        let mut all = Metrics::profiles(vec![(profile.to_owned(), readiness)]);
        all.remove(0)
    }

    /// One handle per profile of `profiles` (name and readiness latch), in
    /// order, all in one registry: each series of a profile's credentials
    /// carries its `profile` label.
    pub fn profiles(profiles: Vec<(String, Readiness)>) -> Vec<Metrics> {
        let mut registry = Registry::default();
        let sts_calls = Family::new_with_constructor(sts_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "tempcreds_sidecar_sts_request_duration",
            "Time of each STS call, answered or not, by STS action",
            Unit::Seconds,
            sts_calls.clone(),
        );
        let refreshes_family = Family::<ProfileLabel, Counter>::default();
        let refreshes: Vec<Counter> = profiles
            .iter()
            .map(|(name, _)| {
                refreshes_family
                    .get_or_create(&[("profile", name.clone())])
                    .clone()
            })
            .collect();
        registry.register(
            "tempcreds_sidecar_refreshes",
            "Refreshes that fetched credentials from STS and wrote them",
            refreshes_family,
        );
        let by_kind = Family::<[(&'static str, String); 2], Counter>::default();
        // Every kind is listed from the start (at 0), so rates and alerts
        // need no first failure, and its counter is kept for recording.
        let failures: Vec<[Counter; FailureKind::ALL.len()]> = profiles
            .iter()
            .map(|(name, _)| {
                FailureKind::ALL.map(|k| {
                    by_kind
                        .get_or_create(&[
                            ("profile", name.clone()),
                            ("kind", k.as_str().to_owned()),
                        ])
                        .clone()
                })
            })
            .collect();
        registry.register(
            "tempcreds_sidecar_refresh_failures",
            "Refresh attempts that failed, by kind; the last good credentials stay and the attempt is retried",
            by_kind,
        );
        let last_refresh = LastRefresh(Arc::new(
            profiles
                .iter()
                .map(|(name, _)| (name.clone(), AtomicU64::new(0)))
                .collect(),
        ));
        registry.register_collector(Box::new(last_refresh.clone()));
        let count = profiles.len();
        registry.register_collector(Box::new(ExpiresIn(profiles)));
        let inner = Arc::new(Inner {
            registry,
            refreshes,
            failures,
            last_refresh,
            sts_calls,
        });
        (0..count)
            .map(|profile| Metrics {
                inner: inner.clone(),
                profile,
            })
            .collect()
    }

    /// Records a refresh that wrote credentials, now.
    pub fn refreshed(&self) {
        self.inner.refreshes[self.profile].inc();
        self.inner.last_refresh.set_now(self.profile);
    }

    /// Records a failed refresh attempt.
    pub fn failed(&self, kind: FailureKind) {
        self.inner.failures[self.profile][kind as usize].inc();
    }

    /// Records one STS call of `action` (an STS action name such as
    /// `AssumeRole`) that took `elapsed`.
    pub fn sts_call(&self, action: &'static str, elapsed: Duration) {
        self.inner
            .sts_calls
            .get_or_create(&[("action", action)])
            .observe(elapsed.as_secs_f64());
    }

    /// The number of refreshes that wrote credentials.
    pub fn refreshes(&self) -> u64 {
        self.inner.refreshes[self.profile].get()
    }

    /// The number of failed attempts of `kind`.
    pub fn failures(&self, kind: FailureKind) -> u64 {
        self.inner.failures[self.profile][kind as usize].get()
    }

    /// The metrics in `format`.
    pub fn encode(&self, format: Exposition) -> String {
        let mut out = String::with_capacity(4096);
        let written = match format {
            Exposition::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.inner.registry)
            }
            Exposition::PrometheusText => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry)
            }
        };
        // Writing to a String cannot fail, and no metric here fails to encode.
        debug_assert!(written.is_ok());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[tokio::test(start_paused = true)]
    async fn counts_failures_by_kind_and_computes_expiry_at_scrape_time() {
        let readiness = Readiness::default();
        let m = Metrics::new(readiness.clone(), "default");
        let text = m.encode(Exposition::PrometheusText);
        assert!(
            text.contains("tempcreds_sidecar_refreshes_total{profile=\"default\"} 0"),
            "{text}"
        );
        for kind in FailureKind::ALL {
            let series = format!(
                "tempcreds_sidecar_refresh_failures_total{{profile=\"default\",kind=\"{}\"}} 0",
                kind.as_str()
            );
            assert!(text.contains(&series), "{text}");
        }
        assert!(
            !text.contains("expires_in_seconds{"),
            "nothing written yet: {text}"
        );
        assert!(
            !text.contains("last_refresh_timestamp_seconds{"),
            "nothing refreshed yet: {text}"
        );

        readiness.written(Instant::now() + Duration::from_secs(900));
        m.refreshed();
        m.failed(FailureKind::StsUnreachable);
        m.failed(FailureKind::StsUnreachable);
        m.sts_call("AssumeRole", Duration::from_millis(30));
        tokio::time::advance(Duration::from_secs(100)).await;
        let text = m.encode(Exposition::PrometheusText);
        assert!(
            text.contains("tempcreds_sidecar_refreshes_total{profile=\"default\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "tempcreds_sidecar_refresh_failures_total{profile=\"default\",kind=\"sts_unreachable\"} 2"
            ),
            "{text}"
        );
        assert_eq!(
            line(&text, "tempcreds_sidecar_credentials_expires_in_seconds{"),
            Some("tempcreds_sidecar_credentials_expires_in_seconds{profile=\"default\"} 800.0"),
            "{text}"
        );
        let unix_now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let last = line(&text, "tempcreds_sidecar_last_refresh_timestamp_seconds{")
            .and_then(|l| {
                l.strip_prefix(
                    "tempcreds_sidecar_last_refresh_timestamp_seconds{profile=\"default\"} ",
                )
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no last refresh gauge: {text}"));
        assert!(
            (unix_now - 60.0..=unix_now).contains(&last),
            "{last} {unix_now}"
        );
        assert!(
            text.contains(
                "tempcreds_sidecar_sts_request_duration_seconds_bucket{action=\"AssumeRole\",le=\"0.05\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "tempcreds_sidecar_sts_request_duration_seconds_count{action=\"AssumeRole\"} 1"
            ),
            "{text}"
        );

        tokio::time::advance(Duration::from_secs(810)).await;
        let open = m.encode(Exposition::OpenMetrics);
        assert_eq!(
            line(&open, "tempcreds_sidecar_credentials_expires_in_seconds{"),
            Some("tempcreds_sidecar_credentials_expires_in_seconds{profile=\"default\"} -10.0"),
            "{open}"
        );
        assert!(open.contains("# UNIT tempcreds_sidecar_credentials_expires_in_seconds seconds"));
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert_eq!(m.refreshes(), 1);
        assert_eq!(m.failures(FailureKind::StsUnreachable), 2);
        assert_eq!(m.failures(FailureKind::StsDenied), 0);
    }

    #[test]
    fn label_values_are_fixed_snake_case_words() {
        for (i, kind) in FailureKind::ALL.into_iter().enumerate() {
            assert_eq!(kind as usize, i, "ALL is in declaration order");
            let v = kind.as_str();
            assert!(v.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{v}");
        }
    }
}
