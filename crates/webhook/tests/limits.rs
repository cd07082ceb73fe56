//! Request limits of the HTTPS server: an oversized body, deeply nested
//! JSON and slow clients (slowloris) get a clear error or a closed
//! connection, while other clients keep being served.
//!
//! The server runs with short [`Limits`] (1–2 s) so the test stays quick;
//! production uses the defaults (10 s handshake, 30 s headers, 30 s request).
//! No assertion depends on how long anything took: slow clients trickle
//! without end until the server closes them, and [`GUARD`] only turns a
//! server that never does into a failure instead of a hang.

mod common;

use std::time::Duration;

use serde_json::json;
use tempcreds_webhook::server::{BODY_LIMIT, Limits, Shutdown};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const LIMITS: Limits = Limits {
    handshake: Duration::from_secs(2),
    headers: Duration::from_secs(1),
    request: Duration::from_secs(1),
    first_request: Duration::from_secs(1),
};

/// Limits no test reaches: slow clients stay connected as long as the test
/// needs them.
const PATIENT: Limits = Limits {
    handshake: Duration::from_secs(3600),
    headers: Duration::from_secs(3600),
    request: Duration::from_secs(3600),
    first_request: Duration::from_secs(3600),
};

/// How long a test waits for the server to close a slow client before it
/// fails: far above the limits, so only a server that never closes fails.
const GUARD: Duration = Duration::from_secs(120);

type Server = common::TestServer;

async fn start() -> Server {
    start_with(LIMITS).await
}

async fn start_with(limits: Limits) -> Server {
    common::start_server(
        "limits",
        Shutdown::immediate(std::future::pending(), Duration::from_secs(1)),
        limits,
    )
    .await
}

/// A TLS connection trusting the test root, without HTTP on top.
async fn tls_connect(server: &Server) -> TlsStream<TcpStream> {
    common::tls_connect(server.addr, &server.root_pem).await
}

/// Writes `start`, then `repeat` over and over, one byte every 50 ms, until
/// the server closes the connection (a slowloris client that would never
/// finish); returns what the server answered. Panics after [`GUARD`].
async fn trickle(stream: &mut TlsStream<TcpStream>, start: &[u8], repeat: &[u8]) -> String {
    let sending = async {
        if stream.write_all(start).await.is_err() {
            return;
        }
        for b in repeat.iter().cycle() {
            if stream.write_all(&[*b]).await.is_err() || stream.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(GUARD, sending)
        .await
        .expect("the server never closed a client that trickles without end");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(GUARD, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// A request head that never ends (one header value without end).
const ENDLESS_HEAD: (&[u8], &[u8]) = (
    b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
    b"a",
);
/// A complete head, then a chunked body that never ends.
const ENDLESS_BODY: (&[u8], &[u8]) = (
    b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"1\r\n \r\n",
);

fn opted_in_review(uid: &str) -> serde_json::Value {
    common::review(
        uid,
        json!({"tempcreds.io/role-arn": "arn:aws:iam::123456789012:role/app"}),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_with_a_reason() {
    let server = start().await;
    let mut big = opted_in_review("big");
    big["request"]["object"]["metadata"]["labels"] = json!({"padding": "x".repeat(BODY_LIMIT)});
    let body = serde_json::to_vec(&big).unwrap();
    let response = common::client(&server.root_pem)
        .post(format!("{}/mutate", server.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(
        text.contains(&format!("larger than {BODY_LIMIT} bytes")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let server = start().await;
    let client = common::client(&server.root_pem);
    // 100,000 levels: far past serde_json's recursion limit (128).
    let depth = 100_000;
    let body = format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let response = client
        .post(format!("{}/mutate", server.url))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let text = response.text().await.unwrap();
    assert!(text.contains("recursion limit"), "{text}");

    // Nesting the parser accepts (100 levels inside the pod) is mutated
    // and answered like any pod: the patch never recurses past it.
    let mut deep = json!("leaf");
    for _ in 0..100 {
        deep = json!({ "a": deep });
    }
    let mut review = opted_in_review("deep");
    review["request"]["object"]["spec"]["x-nested"] = deep;
    let response = client
        .post(format!("{}/mutate", server.url))
        .json(&review)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    assert!(answer["response"]["patch"].is_string(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_by_the_limits() {
    let server = start().await;
    // 20 clients trickling their headers without end, 20 trickling a body
    // without end, and 10 that open TCP and never start TLS: all at once.
    let mut slow = Vec::new();
    for (kind, (start, repeat)) in [("headers", ENDLESS_HEAD), ("body", ENDLESS_BODY)] {
        for _ in 0..20 {
            let mut s = tls_connect(&server).await;
            slow.push(tokio::spawn(async move {
                (kind, trickle(&mut s, start, repeat).await)
            }));
        }
    }
    for _ in 0..10 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        slow.push(tokio::spawn(async move {
            let mut buf = Vec::new();
            tokio::time::timeout(GUARD, tcp.read_to_end(&mut buf))
                .await
                .expect("the server never closed a connection that sent no TLS handshake")
                .ok();
            ("handshake", String::new())
        }));
    }
    for task in slow {
        let (kind, answer) = task.await.unwrap();
        // The request limit answers a body that never ends with 408; a head
        // that never ends and a missing handshake get a closed connection.
        if kind == "body" {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_keep_others_from_being_served() {
    // Limits far away: the slow clients stay connected through the test.
    let server = start_with(PATIENT).await;
    let rss_before = tempcreds_tests::vm_rss_kib();
    let mut slow = Vec::new();
    for (start, repeat) in [ENDLESS_HEAD, ENDLESS_BODY] {
        for _ in 0..50 {
            let mut s = tls_connect(&server).await;
            slow.push(tokio::spawn(
                async move { trickle(&mut s, start, repeat).await },
            ));
        }
    }
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }

    // Ordinary reviews are answered while 120 slow connections are open.
    let client = common::client(&server.root_pem);
    for i in 0..20 {
        let response = client
            .post(format!("{}/mutate", server.url))
            .json(&opted_in_review(&format!("ok-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: serde_json::Value = response.json().await.unwrap();
        assert!(answer["response"]["patch"].is_string(), "{answer}");
    }
    let rss_during = tempcreds_tests::vm_rss_kib();
    // All the slow clients were still connected meanwhile.
    assert!(
        slow.iter().all(|t| !t.is_finished()),
        "a slow client was cut off long before the limits"
    );
    for task in slow {
        task.abort();
    }
    drop(silent);
    eprintln!(
        "VmRSS of the test process (server and all clients): {rss_before} KiB before, {rss_during} KiB with 120 slow connections open"
    );
    // Each slow connection holds a TLS session and small buffers, here and in
    // the client: a few MiB for 120 of them.
    assert!(
        rss_during < rss_before + 64 * 1024,
        "{rss_before} -> {rss_during} KiB"
    );
}
