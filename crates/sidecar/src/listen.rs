//! Serving the sidecar's HTTP listeners (`--health-addr`, `--endpoint-addr`)
//! within fixed limits, so that whoever can reach the pod's IP cannot take
//! the sidecar's memory (its container limit is 32Mi) or hold its
//! connections open:
//!
//! - at most [`Limits::connections`] connections are served at once; further
//!   ones wait in the kernel's accept queue and are not accepted (nothing is
//!   allocated for them) until a served one ends;
//! - a connection must send a request's headers within [`Limits::headers`]
//!   (also how long an idle keep-alive connection stays open), or it is
//!   closed;
//! - the headers may be at most [`HEADER_BUF_MAX`] bytes;
//! - the answer must be complete within [`Limits::request`] after the
//!   headers, or it is `408 Request Timeout`. No route reads a body.
//!
//! The same limits as the webhook's listener (`crates/webhook/src/server.rs`),
//! with a connection cap sized for the sidecar.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Largest buffer for a request's headers (hyper's minimum is 8 KiB).
pub const HEADER_BUF_MAX: usize = 16 * 1024;

/// Connections a listener serves at once, by default.
pub const DEFAULT_CONNECTIONS: u16 = 128;

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Sending a request's headers, counted from when the server waits for
    /// them: also how long an idle keep-alive connection stays open.
    pub headers: Duration,
    /// Getting the answer, counted from the end of the headers.
    pub request: Duration,
    /// Connections served at once.
    pub connections: usize,
}

impl Default for Limits {
    /// 5 s for headers (a probe's or an SDK's request is complete in one
    /// packet, sent right after connecting), 10 s for the answer, 128
    /// connections (measured: 4,000 half-sent requests raise a debug build's
    /// RSS from 13.4 to 16.9 MB at most). A flood of silent connections
    /// delays a probe by about 5 s per 128 connections queued ahead of it.
    fn default() -> Self {
        Limits {
            headers: Duration::from_secs(5),
            request: Duration::from_secs(10),
            connections: usize::from(DEFAULT_CONNECTIONS),
        }
    }
}

/// Serves `app` on `listener` within `limits`, until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.connections.max(1)));
    loop {
        // A slot first: over the cap, connections stay in the accept queue.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let answer = tower::ServiceExt::oneshot(app.clone(), request);
                async move {
                    Ok::<_, std::convert::Infallible>(
                        match tokio::time::timeout(limits.request, answer).await {
                            Ok(Ok(response)) => response,
                            Ok(Err(never)) => match never {},
                            Err(_) => request_timeout(limits.request),
                        },
                    )
                }
            });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.headers)
                .max_buf_size(HEADER_BUF_MAX)
                .serve_connection(TokioIo::new(tcp), service);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
}

fn request_timeout(limit: Duration) -> Response {
    (
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request was not answered within {}s\n",
            limit.as_secs_f64()
        ),
    )
        .into_response()
}
