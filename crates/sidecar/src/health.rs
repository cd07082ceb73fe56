//! `/healthz`, `/readyz` and `/metrics`.
//!
//! `/healthz` answers 200 while the process runs. `/readyz` answers 200 only
//! while every profile's credentials are written and not expired: the
//! injected startup probe uses it, so application containers start only once
//! credentials exist for each profile they may use.
//! `/metrics` is Prometheus' scrape ([`crate::metrics`]). Requests to these
//! routes are not logged.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use tempcreds_core::exposition::Exposition;
use tempcreds_core::paths;
use tokio::time::Instant;

use crate::metrics::Metrics;

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

/// The health routes and `/metrics`; `/readyz` needs every profile's
/// `readiness`.
pub fn router(readiness: Vec<Readiness>, metrics: Metrics) -> Router {
    Router::new()
        .route(
            paths::METRICS_PATH,
            get(move |headers: HeaderMap| {
                let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                let format = Exposition::from_accept(accept);
                let body = metrics.encode(format);
                async move { ([(header::CONTENT_TYPE, format.content_type())], body) }
            }),
        )
        .route(paths::HEALTHZ_PATH, get(|| async { "ok\n" }))
        .route(
            paths::READYZ_PATH,
            get(move || {
                let ready = readiness.iter().all(Readiness::is_ready);
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
        router(
            vec![readiness.clone()],
            Metrics::new(readiness.clone(), "default"),
        )
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

#[cfg(test)]
mod metrics_route {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn scrape(app: Router, accept: Option<&str>) -> (String, String) {
        let mut request = Request::get("/metrics");
        if let Some(a) = accept {
            request = request.header(header::ACCEPT, a);
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn metrics_in_the_format_asked_for() {
        let readiness = Readiness::default();
        let app = router(vec![readiness.clone()], Metrics::new(readiness, "default"));
        let (ct, text) = scrape(app.clone(), None).await;
        assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            text.contains("# TYPE tempcreds_sidecar_refreshes_total counter"),
            "{text}"
        );
        let (ct, open) = scrape(
            app,
            Some("application/openmetrics-text;version=1.0.0;q=0.5,text/plain;q=0.3"),
        )
        .await;
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        assert!(
            open.contains("# TYPE tempcreds_sidecar_refreshes counter"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"), "{open}");
    }
}
