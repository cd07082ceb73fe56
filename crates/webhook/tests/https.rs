//! The server over real TLS: a rustls client trusting only the test root
//! posts AdmissionReviews while the certificate is rotated by a `..data`
//! symlink swap; no request fails and the new certificate is served. The
//! certificate file holds a chain (leaf + intermediate) and the client trusts
//! only the root, so every success proves the chain is served whole. A
//! broken new certificate is refused and the old one kept.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde_json::json;
use tempcreds_webhook::ClusterConfig;
use tempcreds_webhook::metrics::Metrics;
use tempcreds_webhook::sa_cache::ServiceAccounts;
use tempcreds_webhook::server::{AppState, Shutdown, router, serve};
use tempcreds_webhook::tls::CertStore;
use tempcreds_webhook::watch::spawn_reloader;

/// How long the test waits for anything before it fails: only a hang
/// takes this long.
const GUARD: Duration = Duration::from_secs(120);

/// The value of a counter in the metrics text (0 when absent).
fn counter(metrics: &Metrics, name: &str) -> u64 {
    metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

async fn served_leaf(client: &reqwest::Client, url: &str) -> Vec<u8> {
    let response = client.get(format!("{url}/healthz")).send().await.unwrap();
    let info = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .unwrap();
    info.peer_certificate().unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_the_certificate_without_a_failed_request() {
    let pki = common::Pki::new();
    let first = pki.leaf("first");
    let tmp = tempfile::tempdir().unwrap();
    let mut certs = common::CertDir::new(tmp.path(), &first.chain_pem, &first.key_pem);

    let store = CertStore::open(&certs.cert(), &certs.key()).unwrap();
    let metrics = Arc::new(Metrics::default());
    let (s, m) = (store.clone(), metrics.clone());
    let _reloader = spawn_reloader(&store.paths(), Duration::from_secs(3600), move || {
        s.reload(&m);
    })
    .unwrap();
    let state = Arc::new(AppState {
        config: Arc::new(ArcSwap::from_pointee(ClusterConfig::with_image("img"))),
        service_accounts: ServiceAccounts::Disabled,
        metrics: metrics.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        store.server_config().unwrap(),
        router(state),
        Shutdown::immediate(
            async {
                let _ = stop_rx.await;
            },
            Duration::from_secs(5),
        ),
    ));

    let client = common::client(&pki.root_pem());
    assert_eq!(served_leaf(&client, &url).await, first.der);

    // Reviews posted continuously, each on a new connection.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for worker in 0..2 {
        let (client, url, stop, ok, failed) = (
            client.clone(),
            url.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        loops.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let uid = format!("w{worker}-{i}");
                let body = common::review(
                    &uid,
                    json!({"tempcreds.io/role-arn": "arn:aws:iam::123456789012:role/app"}),
                );
                let result = client
                    .post(format!("{url}/mutate"))
                    .json(&body)
                    .send()
                    .await;
                let good = match result {
                    Ok(r) if r.status().is_success() => {
                        let v: serde_json::Value = r.json().await.unwrap_or_default();
                        v["response"]["uid"] == uid.as_str() && v["response"]["patch"].is_string()
                    }
                    Ok(r) => {
                        eprintln!("status {}", r.status());
                        false
                    }
                    Err(e) => {
                        eprintln!("request failed: {e:?}");
                        false
                    }
                };
                if good {
                    ok.fetch_add(1, Ordering::Relaxed)
                } else {
                    failed.fetch_add(1, Ordering::Relaxed)
                };
            }
        }));
    }

    // The load runs before, during and after each rotation; the test waits
    // for progress (requests answered, reloads counted), never for a time.
    let served = || ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
    let progress = |at_least: u64| async move {
        let deadline = Instant::now() + GUARD;
        while served() < at_least {
            assert!(Instant::now() < deadline, "the load stopped being served");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    progress(10).await;
    let second = pki.leaf("second");
    certs.rotate(&second.chain_pem, &second.key_pem);
    let deadline = Instant::now() + GUARD;
    while served_leaf(&client, &url).await != second.der {
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken update (certificate and key that do not match) is refused;
    // the second certificate stays in service.
    let third = pki.leaf("third");
    certs.rotate(&third.chain_pem, &second.key_pem);
    let deadline = Instant::now() + GUARD;
    while counter(&metrics, "tempcreds_webhook_tls_reloads_failed_total") < 1 {
        assert!(
            Instant::now() < deadline,
            "the broken update was never refused: {}",
            metrics.render()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(served_leaf(&client, &url).await, second.der);

    progress(served() + 10).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} failed requests ({ok} succeeded)");
    assert!(ok > 20, "only {ok} requests");

    // Graceful shutdown returns once connections are drained.
    let _ = stop_tx.send(());
    tokio::time::timeout(GUARD, server).await.unwrap().unwrap();
}
