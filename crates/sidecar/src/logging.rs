//! Logging: `tracing` to stderr, JSON lines when stderr is not a terminal
//! (in a pod), human-readable otherwise. `RUST_LOG` overrides the default
//! filter, which keeps the AWS SDK's own logs at warnings.
//!
//! What any level may show: tempcreds' own events never carry a secret (the
//! token, a secret key, a session token, the endpoint's authorization token;
//! access key IDs, ARNs and expiry times are shown). Other crates' `debug`
//! and `trace` output can: the AWS SDK's request signing traces the
//! canonical request with `x-amz-security-token`, and its HTTP layers trace
//! requests and answers (the web-identity token, the credentials STS
//! returns). So whatever `RUST_LOG` asks for, events from crates other than
//! tempcreds' own are capped at `info` ([`THIRD_PARTY_CAP`]).

use std::io::IsTerminal;

use tracing::Metadata;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The filter used when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "warn,tempcreds_sidecar=info,tempcreds_core=info";

/// The most verbose level shown for crates other than tempcreds' own,
/// whatever `RUST_LOG` says.
pub const THIRD_PARTY_CAP: LevelFilter = LevelFilter::INFO;

/// Whether an event or span may be shown at all, before `RUST_LOG`: always
/// for tempcreds' own targets, up to [`THIRD_PARTY_CAP`] for the rest.
pub fn allowed(meta: &Metadata<'_>) -> bool {
    let target = meta.target();
    let own = ["tempcreds_sidecar", "tempcreds_core"].iter().any(|c| {
        target
            .strip_prefix(c)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    });
    own || *meta.level() <= THIRD_PARTY_CAP
}

/// The filter of the log layer: `directives` (`RUST_LOG`'s syntax), and
/// [`allowed`] whatever they say.
pub fn filter<S>(directives: &str) -> impl tracing_subscriber::layer::Filter<S> + use<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let env = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    env.and(FilterFn::new(allowed))
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init() {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_FILTER.to_owned());
    let filter = filter(&directives);
    if std::io::stderr().is_terminal() {
        let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .init();
    } else {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .init();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn trace_from_other_crates_is_capped_whatever_rust_log_says() {
        for directives in [
            "trace",
            "aws_sigv4=trace,aws_smithy_runtime=trace,hyper=trace",
        ] {
            let buf = Buffer::default();
            let writer = buf.clone();
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_filter(filter(directives));
            let subscriber = tracing_subscriber::registry().with(layer);
            tracing::subscriber::with_default(subscriber, || {
                tracing::trace!(target: "aws_sigv4::http_request::sign", "x-amz-security-token:SECRETTOKEN");
                tracing::debug!(target: "aws_smithy_runtime::client::orchestrator", "response body SECRETBODY");
                tracing::trace!(target: "hyper::proto", "SECRETHYPER");
                tracing::info!(target: "aws_config::profile", "kept info");
                tracing::trace!(target: "tempcreds_sidecar::sts", "kept own trace");
                tracing::trace!(target: "tempcreds_sidecarx", "SECRETLOOKALIKE");
            });
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert!(!text.contains("SECRET"), "{directives}: {text}");
            if directives == "trace" {
                assert!(
                    text.contains("kept info") && text.contains("kept own trace"),
                    "{text}"
                );
            }
        }
    }
}
