//! Request limits of the HTTPS server: an oversized body, deeply nested
//! JSON and slow clients (slowloris) get a clear error or a closed
//! connection within bounded time, while other clients keep being served.
//!
//! The server runs with short [`Limits`] (1–2 s) so the test stays quick;
//! production uses the defaults (10 s handshake, 30 s headers, 30 s request).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::json;
use tempcreds_webhook::ClusterConfig;
use tempcreds_webhook::metrics::Metrics;
use tempcreds_webhook::sa_cache::ServiceAccounts;
use tempcreds_webhook::server::{AppState, BODY_LIMIT, Limits, router, serve_with_limits};
use tempcreds_webhook::tls::CertStore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const LIMITS: Limits = Limits {
    handshake: Duration::from_secs(2),
    headers: Duration::from_secs(1),
    request: Duration::from_secs(1),
};

struct Server {
    addr: std::net::SocketAddr,
    url: String,
    root_pem: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let pki = common::Pki::new();
    let leaf = pki.leaf("limits");
    let dir = tempfile::tempdir().unwrap();
    let certs = common::CertDir::new(dir.path(), &leaf.chain_pem, &leaf.key_pem);
    let store = CertStore::open(&certs.cert(), &certs.key()).unwrap();
    let state = Arc::new(AppState {
        config: Arc::new(ArcSwap::from_pointee(ClusterConfig::with_image("img"))),
        service_accounts: ServiceAccounts::Disabled,
        metrics: Arc::new(Metrics::default()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_with_limits(
        listener,
        store.server_config().unwrap(),
        router(state),
        std::future::pending(),
        Duration::from_secs(1),
        LIMITS,
    ));
    Server {
        addr,
        url: format!("https://127.0.0.1:{}", addr.port()),
        root_pem: pki.root_pem(),
        _dir: dir,
    }
}

/// A TLS connection trusting the test root, without HTTP on top.
async fn tls_connect(server: &Server) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut server.root_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Sends `bytes` one at a time, `gap` apart, until the server closes the
/// connection; returns how long that took and what the server answered.
async fn trickle(stream: &mut TlsStream<TcpStream>, bytes: &[u8], gap: Duration) -> String {
    for b in bytes {
        if stream.write_all(&[*b]).await.is_err() || stream.flush().await.is_err() {
            break;
        }
        tokio::time::sleep(gap).await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

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
async fn slow_clients_are_cut_off_and_others_are_served_meanwhile() {
    let server = start().await;
    let rss_before = vm_rss_kib();

    // 50 clients trickling their headers, 50 trickling a body, and 20 that
    // open TCP and never start TLS: all at once.
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = tls_connect(&server).await;
        slow.push(tokio::spawn(async move {
            let start = Instant::now();
            let answer = trickle(
                &mut s,
                b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n",
                Duration::from_millis(100),
            )
            .await;
            ("headers", start.elapsed(), answer)
        }));
    }
    for _ in 0..50 {
        let mut s = tls_connect(&server).await;
        slow.push(tokio::spawn(async move {
            let start = Instant::now();
            s.write_all(
                b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n",
            )
            .await
            .unwrap();
            let answer = trickle(&mut s, &[b' '; 1000], Duration::from_millis(100)).await;
            ("body", start.elapsed(), answer)
        }));
    }
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        slow.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut buf = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
            ("handshake", start.elapsed(), String::new())
        }));
    }

    // Meanwhile, ordinary reviews are answered promptly.
    let client = common::client(&server.root_pem);
    for i in 0..20 {
        let start = Instant::now();
        let response = client
            .post(format!("{}/mutate", server.url))
            .json(&opted_in_review(&format!("ok-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            start.elapsed() < Duration::from_millis(1500),
            "a review took {:?} while slow clients were connected",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss_during = vm_rss_kib();

    for task in slow {
        let (kind, took, answer) = task.await.unwrap();
        let limit = match kind {
            "headers" => LIMITS.headers,
            "body" => LIMITS.request,
            _ => LIMITS.handshake,
        };
        assert!(
            took < limit + Duration::from_millis(1500),
            "a client trickling its {kind} was cut off only after {took:?}"
        );
        if kind == "body" {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        }
    }
    eprintln!(
        "VmRSS of the test process (server and all clients): {rss_before} KiB before, {rss_during} KiB with 120 slow connections open"
    );
    // Each slow connection holds a TLS session and small buffers, here and in
    // the client, until its time limit: a few MiB for 120 of them.
    assert!(
        rss_during < rss_before + 64 * 1024,
        "{rss_before} -> {rss_during} KiB"
    );
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
