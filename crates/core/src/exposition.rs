//! Which Prometheus exposition format a scrape asked for.
//!
//! The webhook's and the sidecar's `/metrics` answer in the OpenMetrics text
//! format when the request's `Accept` header names
//! `application/openmetrics-text` (Prometheus asks for it first), and in the
//! classic Prometheus text format 0.0.4 otherwise (`curl`, older scrapers),
//! as the Go client's `promhttp` does. The encoding itself is the
//! `prometheus-client` crate's; this module only chooses, so both binaries
//! choose alike.

/// An exposition format of `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// OpenMetrics 1.0 text, ending in `# EOF`.
    OpenMetrics,
    /// The Prometheus text format, version 0.0.4.
    PrometheusText,
}

impl Exposition {
    /// The format for a request with this `Accept` header (`None`: no
    /// header, or one that is not text). Quality values are not weighed:
    /// naming OpenMetrics at all is taken as preferring it, since every
    /// scraper that can read it asks for it first.
    pub fn from_accept(accept: Option<&str>) -> Exposition {
        match accept {
            Some(a)
                if a.to_ascii_lowercase()
                    .contains("application/openmetrics-text") =>
            {
                Exposition::OpenMetrics
            }
            _ => Exposition::PrometheusText,
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Exposition::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0;q=0.5,\
                          text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(
            Exposition::from_accept(Some(prometheus)),
            Exposition::OpenMetrics
        );
        assert_eq!(
            Exposition::from_accept(Some("Application/OpenMetrics-Text")),
            Exposition::OpenMetrics
        );
        for other in [None, Some("*/*"), Some("text/plain"), Some("")] {
            assert_eq!(Exposition::from_accept(other), Exposition::PrometheusText);
        }
        assert!(
            Exposition::OpenMetrics
                .content_type()
                .starts_with("application/openmetrics-text; version=1.0.0")
        );
        assert!(
            Exposition::PrometheusText
                .content_type()
                .starts_with("text/plain; version=0.0.4")
        );
    }
}
