//! Graceful termination over real TLS, each phase triggered by the test
//! itself ([`Shutdown`] takes the signal and the end of the delay as two
//! futures), so no assertion depends on how long anything takes:
//!
//! 1. after the signal, `/readyz` answers 503 while new connections are
//!    still accepted and served (with `Connection: close`);
//! 2. after the delay, new connections are refused, an idle keep-alive
//!    connection is closed, a request in flight is answered, and a
//!    connection opened before the listener closed still gets its first
//!    request served;
//! 3. then the server returns, long before its drain deadline.
//!
//! [`GUARD`] only turns a server that never does what is awaited into a
//! failure instead of a hang.

mod common;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempcreds_webhook::server::{Limits, Shutdown};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

const GUARD: Duration = Duration::from_secs(120);

/// Limits no test reaches, so that only the shutdown closes connections.
const PATIENT: Limits = Limits {
    handshake: Duration::from_secs(3600),
    headers: Duration::from_secs(3600),
    request: Duration::from_secs(3600),
    first_request: Duration::from_secs(3600),
};

const ROLE: &str = "arn:aws:iam::123456789012:role/app";

type Server = common::TestServer;

/// Serves until `shutdown` ends it, with [`PATIENT`] limits.
async fn start(
    shutdown: Shutdown<
        impl std::future::Future<Output = ()> + Send + 'static,
        impl std::future::Future<Output = ()> + Send + 'static,
    >,
) -> Server {
    common::start_server("shutdown", shutdown, PATIENT).await
}

/// Reads one HTTP/1.1 response: its head (lower case) and its body (by
/// `content-length`).
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> (String, String) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(GUARD, stream.read(&mut chunk))
            .await
            .expect("a response")
            .unwrap();
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(GUARD, stream.read(&mut chunk))
            .await
            .expect("the body")
            .unwrap();
        assert!(n > 0, "closed within the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    (head, body)
}

/// Whether the server closed `stream` (end of stream or reset), waiting for
/// it up to [`GUARD`].
async fn closed(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(GUARD, stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Polls `cond` until it holds; fails after [`GUARD`].
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut cond: impl FnMut() -> F,
) {
    let deadline = Instant::now() + GUARD;
    while !cond().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn review_bytes(uid: &str) -> Vec<u8> {
    serde_json::to_vec(&common::review(uid, json!({"tempcreds.io/role-arn": ROLE}))).unwrap()
}

fn post_head(length: usize) -> String {
    format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
}

/// The admission response of a `/mutate` answer, checked to be a patch for
/// `uid`.
fn patched(body: &str, uid: &str) {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["response"]["uid"], uid, "{v}");
    assert!(v["response"]["patch"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_serving_during_the_shutdown_delay_then_refuses_new_connections_and_drains() {
    let (signal, signal_rx) = oneshot::channel::<()>();
    let (end_delay, end_delay_rx) = oneshot::channel::<()>();
    let s = start(Shutdown {
        signal: async {
            let _ = signal_rx.await;
        },
        delay: async {
            let _ = end_delay_rx.await;
        },
        // Never reached: the test proves the server returns once every
        // connection is done.
        drain: Duration::from_secs(3600),
    })
    .await;
    let client = common::client(&s.root_pem);
    let readyz = format!("{}/readyz", s.url);
    let response = client.get(&readyz).send().await.unwrap();
    assert_eq!(response.status(), 200);

    // A keep-alive connection that has served a request and sits idle.
    let mut idle = common::tls_connect(s.addr, &s.root_pem).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut idle).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(body, "ok\n");

    // A request in flight: its headers and half of its body sent.
    let in_flight = review_bytes("in-flight");
    let half = in_flight.len() / 2;
    let mut busy = common::tls_connect(s.addr, &s.root_pem).await;
    busy.write_all(post_head(in_flight.len()).as_bytes())
        .await
        .unwrap();
    busy.write_all(&in_flight[..half]).await.unwrap();
    busy.flush().await.unwrap();

    // Phase 1: shutdown asked for.
    signal.send(()).unwrap();
    eventually("/readyz answers 503", || async {
        client.get(&readyz).send().await.unwrap().status() == 503
    })
    .await;
    let response = client.get(&readyz).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.text().await.unwrap(), "shutting down\n");

    // New connections are still served, and told to close.
    let response = client
        .post(format!("{}/mutate", s.url))
        .json(&common::review(
            "during-delay",
            json!({"tempcreds.io/role-arn": ROLE}),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["connection"], "close");
    patched(&response.text().await.unwrap(), "during-delay");
    let mut fresh = common::tls_connect(s.addr, &s.root_pem).await;
    fresh
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_response(&mut fresh).await;
    assert!(
        head.starts_with("http/1.1 200") && head.contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, "ok\n");
    assert!(closed(&mut fresh).await, "closed after its response");

    // A connection opened during the delay that sends its request only
    // after the listener has closed.
    let mut late = common::tls_connect(s.addr, &s.root_pem).await;

    // Phase 2: the delay is over.
    end_delay.send(()).unwrap();
    eventually("new connections are refused", || async {
        tokio::net::TcpStream::connect(s.addr).await.is_err()
    })
    .await;
    assert!(
        closed(&mut idle).await,
        "the idle keep-alive connection is closed"
    );

    // The request in flight completes.
    busy.write_all(&in_flight[half..]).await.unwrap();
    busy.flush().await.unwrap();
    let (head, body) = read_response(&mut busy).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    patched(&body, "in-flight");
    assert!(closed(&mut busy).await);

    // So does the first request of the connection opened before the close.
    let late_review = review_bytes("late");
    late.write_all(post_head(late_review.len()).as_bytes())
        .await
        .unwrap();
    late.write_all(&late_review).await.unwrap();
    let (head, body) = read_response(&mut late).await;
    assert!(
        head.starts_with("http/1.1 200") && head.contains("connection: close"),
        "{head}"
    );
    patched(&body, "late");
    assert!(closed(&mut late).await);

    // Every connection is done: the server returns, an hour before its
    // drain deadline.
    tokio::time::timeout(GUARD, s.task)
        .await
        .expect("the server returns once drained")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_delay_the_listener_closes_at_the_signal() {
    let (stop, stop_rx) = oneshot::channel::<()>();
    let s = start(Shutdown::delayed(
        async {
            let _ = stop_rx.await;
        },
        Duration::ZERO,
        Duration::from_secs(3600),
    ))
    .await;
    let mut idle = common::tls_connect(s.addr, &s.root_pem).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut idle).await;
    assert!(!head.contains("connection: close"), "{head}");
    stop.send(()).unwrap();
    assert!(
        closed(&mut idle).await,
        "the idle keep-alive connection is closed"
    );
    tokio::time::timeout(GUARD, s.task)
        .await
        .expect("the server returns once drained")
        .unwrap();
    assert!(tokio::net::TcpStream::connect(s.addr).await.is_err());
}
