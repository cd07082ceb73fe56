//! A small load generator for the figures in the README: posts
//! AdmissionReviews of an opted-in pod over HTTPS with keep-alive from
//! CONCURRENCY connections for SECONDS, then prints throughput and latency
//! percentiles.
//!
//! cargo run --release -p tempcreds-webhook --example load -- URL CA_FILE [CONCURRENCY] [SECONDS]

use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(ca)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: load URL CA_FILE [CONCURRENCY] [SECONDS]");
        std::process::exit(2);
    };
    let concurrency: usize = args.get(3).map_or(Ok(16), |s| s.parse())?;
    let seconds: u64 = args.get(4).map_or(Ok(10), |s| s.parse())?;
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
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let body = serde_json::json!({
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
    .to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (latencies, errors) = runtime.block_on(async move {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    let ok = match client
                        .post(&url)
                        .body(body.clone())
                        .header("content-type", "application/json")
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                        _ => false,
                    };
                    if ok {
                        latencies.push(start.elapsed())
                    } else {
                        errors += 1
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
        (all, errors)
    });
    let mut latencies = latencies;
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{} reviews in {seconds}s: {:.0}/s, p50 {:?}, p99 {:?}, max {:?}, errors {errors}",
        latencies.len(),
        latencies.len() as f64 / seconds as f64,
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or_default()
    );
    Ok(())
}
