//! The load generator behind the README's webhook figures: posts
//! AdmissionReviews of an opted-in pod over HTTPS (rustls, keep-alive) from
//! CONCURRENCY connections for SECONDS, then prints throughput and latency
//! percentiles (p50, p99, p99.9, max) and the number of failed requests.
//!
//! cargo run --release -p tempcreds-webhook --example load -- URL CA_FILE [CONCURRENCY] [SECONDS] [RATE] [REVIEW_FILE]
//!
//! REVIEW_FILE, when given, is the AdmissionReview (JSON) to post; without
//! it, a review of a typical pod that names its role in its own annotation.
//!
//! - RATE absent or 0: saturation. Each connection sends its next request as
//!   soon as the previous answer arrives (closed loop).
//! - RATE > 0: a fixed rate (open loop). Request i is due at start + i/RATE,
//!   whichever connection is free takes it. When no connection was free at
//!   that time, its latency counts from when it was due, so time spent queued
//!   behind slow answers is included (no coordinated omission); otherwise
//!   from when it was sent (tokio's timer wakes up to 1 ms late, a delay of
//!   the generator, not of the server). If the server cannot keep up,
//!   latencies grow without bound and the achieved rate stays below RATE.
//!
//! The last line is machine-readable (`RESULT key=value ...`), for
//! hack/bench.sh.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(ca)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: load URL CA_FILE [CONCURRENCY] [SECONDS] [RATE] [REVIEW_FILE]");
        std::process::exit(2);
    };
    let concurrency: usize = args.get(3).map_or(Ok(16), |s| s.parse())?;
    let seconds: u64 = args.get(4).map_or(Ok(10), |s| s.parse())?;
    let rate: u64 = args.get(5).map_or(Ok(0), |s| s.parse())?;
    let ca_pem = std::fs::read(ca)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_slice()) {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let body = match args.get(6) {
        Some(path) => std::fs::read_to_string(path)?,
        None => review_body(),
    };
    // One client (one TLS connection) per worker, so CONCURRENCY is the
    // number of connections.
    let clients = (0..concurrency)
        .map(|_| {
            reqwest::Client::builder()
                .tls_backend_preconfigured(tls.clone())
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(10))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    let (latencies, errors, elapsed) = runtime.block_on(async move {
        // Warm up: open every connection first.
        for client in &clients {
            let _ = post(client, url, &body).await;
        }
        let start = Instant::now();
        let deadline = start + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for client in clients {
            let (url, body, next) = (url.clone(), body.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                loop {
                    let due = if let Some(interval_ns) = (1_000_000_000u64).checked_div(rate) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let due = start + Duration::from_nanos(i * interval_ns);
                        if due >= deadline {
                            break;
                        }
                        if Instant::now() < due {
                            // Idle until it is due: tokio's timer wakes up
                            // to 1 ms late, which is the generator's delay,
                            // not the server's, so count from the wake-up.
                            tokio::time::sleep_until(due.into()).await;
                            Instant::now()
                        } else {
                            // Behind schedule (every connection was busy):
                            // the wait counts.
                            due
                        }
                    } else {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        now
                    };
                    if post(&client, &url, &body).await {
                        latencies.push(due.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            }));
        }
        let mut all = Vec::new();
        let mut errors = 0;
        for t in tasks {
            if let Ok((l, e)) = t.await {
                all.extend(l);
                errors += e;
            }
        }
        (all, errors, start.elapsed())
    });
    let mut latencies = latencies;
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let us = |d: Duration| d.as_micros();
    let achieved = latencies.len() as f64 / elapsed.as_secs_f64();
    let max = latencies.last().copied().unwrap_or_default();
    let mode = if rate > 0 {
        format!("fixed rate {rate}/s")
    } else {
        "saturation".to_owned()
    };
    println!(
        "{mode}, {concurrency} connections, {seconds}s: {} reviews, {achieved:.0}/s, p50 {:?}, p99 {:?}, p99.9 {:?}, max {max:?}, errors {errors}",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
    );
    println!(
        "RESULT rate={rate} connections={concurrency} seconds={seconds} reviews={} achieved={achieved:.0} p50_us={} p99_us={} p999_us={} max_us={} errors={errors}",
        latencies.len(),
        us(pct(0.50)),
        us(pct(0.99)),
        us(pct(0.999)),
        us(max),
    );
    Ok(())
}

/// Posts one review; true when it was answered with 200 and read whole.
async fn post(client: &reqwest::Client, url: &str, body: &str) -> bool {
    match client
        .post(url)
        .body(body.to_owned())
        .header("content-type", "application/json")
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
        _ => false,
    }
}

/// An AdmissionReview of a typical opted-in pod: one container with env,
/// ports and the ServiceAccount token volume.
fn review_body() -> String {
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "load",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a",
            "operation": "CREATE",
            "userInfo": {"username": "load"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-", "namespace": "team-a",
                    "labels": {"app": "web"},
                    "annotations": {"tempcreds.io/role-arn": "arn:aws:iam::123456789012:role/web"}},
                "spec": {
                    "serviceAccountName": "web",
                    "containers": [{"name": "web", "image": "example.com/web:1",
                        "ports": [{"containerPort": 8080}],
                        "env": [{"name": "LOG_LEVEL", "value": "info"}],
                        "volumeMounts": [{"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]}],
                    "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}}]}}]
                }
            }
        }
    })
    .to_string()
}
