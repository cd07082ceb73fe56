//! `/healthz` and `/readyz`.
//!
//! `/healthz` answers 200 while the process runs. `/readyz` answers 200 only
//! while credentials are written and not expired: the injected startup probe
//! uses it, so application containers start only once credentials exist.
//! Probe requests are not logged.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tempcreds_core::paths;
use tokio::time::Instant;

/// Whether valid credentials are on disk: a latch set by the refresh loop
/// with the written credentials' expiry.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<Option<Instant>>>);

impl Readiness {
    /// Records that credentials expiring at `expires_at` are written.
    pub fn written(&self, expires_at: Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(expires_at);
    }

    /// The written credentials' expiry, if any were written.
    pub fn expires_at(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether written credentials are still valid now.
    pub fn is_ready(&self) -> bool {
        self.expires_at().is_some_and(|t| Instant::now() < t)
    }
}

/// The health routes.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route(paths::HEALTHZ_PATH, get(|| async { "ok\n" }))
        .route(
            paths::READYZ_PATH,
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "no valid credentials written yet\n",
                        )
                    }
                }
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::time::Duration;
    use tower::ServiceExt;

    async fn status(readiness: &Readiness, path: &str) -> StatusCode {
        router(readiness.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    }

    #[tokio::test(start_paused = true)]
    async fn ready_only_while_written_credentials_are_valid() {
        let r = Readiness::default();
        assert_eq!(status(&r, "/healthz").await, StatusCode::OK);
        assert_eq!(status(&r, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
        r.written(Instant::now() + Duration::from_secs(60));
        assert_eq!(status(&r, "/readyz").await, StatusCode::OK);
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(status(&r, "/readyz").await, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(status(&r, "/healthz").await, StatusCode::OK);
    }
}
