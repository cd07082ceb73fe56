//! Benchmarks of the work done per admission request besides TLS:
//!
//! - `mutate/{small,typical,large}`: the pure mutation of an opted-in pod.
//!   small: one container, no volumes; typical: the
//!   `existing-volumes-and-init-containers` fixture (an init container, two
//!   volumes, env, ports); large: 12 containers and 4 init containers with
//!   20 env variables and 3 mounts each, 40 volumes, 30 annotations.
//! - `mutate/not-opted-in`: the same typical pod without annotations.
//! - `handler/{small,typical,large}`: the `/mutate` handler in process:
//!   decoding the AdmissionReview, the mutation, encoding the answer.
//! - `metrics/record`: recording one review's metrics (its result's counter
//!   and the latency histogram) with `prometheus-client`, as the handler
//!   does; `metrics/record-atomics`: the same with the hand-written atomics
//!   the webhook used before (kept here only as the comparison);
//!   `metrics/encode`: one scrape in the Prometheus text format.
//!
//! `make bench` runs these; the goal is a typical mutation ≤ 50 µs median
//! and recording a review's metrics ≤ 5 µs.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use tempcreds_webhook::metrics::{BUCKETS, Metrics, RequestResult};
use tempcreds_webhook::sa_cache::ServiceAccounts;
use tempcreds_webhook::server::{AppState, router};
use tempcreds_webhook::{ClusterConfig, Context, Outcome, mutate};
use tower::ServiceExt as _;

const ROLE: &str = "arn:aws:iam::123456789012:role/web";

fn small_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "small", "namespace": "team-a",
            "annotations": {"tempcreds.io/role-arn": ROLE}},
        "spec": {"containers": [{"name": "app", "image": "example.com/app:1"}]}
    })
}

fn typical_pod() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/webhook/existing-volumes-and-init-containers/pod.yaml"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_yaml::from_str(&text).expect("fixture YAML")
}

fn large_pod() -> Value {
    let container = |name: String| {
        json!({
            "name": name,
            "image": format!("example.com/{name}:1.2.3"),
            "args": ["--listen", ":8080", "--verbose"],
            "env": (0..20).map(|i| json!({"name": format!("VAR_{i}"), "value": format!("value-{i}")})).collect::<Vec<_>>(),
            "ports": [{"containerPort": 8080, "name": "http"}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
            "volumeMounts": (0..3).map(|i| json!({"name": format!("vol-{i}"), "mountPath": format!("/mnt/{i}")})).collect::<Vec<_>>(),
        })
    };
    let mut annotations: BTreeMap<String, String> = (0..28)
        .map(|i| (format!("example.com/note-{i}"), "x".repeat(40)))
        .collect();
    annotations.insert("tempcreds.io/role-arn".into(), ROLE.into());
    annotations.insert("tempcreds.io/session-duration".into(), "2h".into());
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "large", "namespace": "team-a", "annotations": annotations,
            "labels": {"app": "large", "tier": "backend", "team": "a"}},
        "spec": {
            "serviceAccountName": "large",
            "initContainers": (0..4).map(|i| container(format!("init-{i}"))).collect::<Vec<_>>(),
            "containers": (0..12).map(|i| container(format!("app-{i}"))).collect::<Vec<_>>(),
            "volumes": (0..40).map(|i| json!({"name": format!("vol-{i}"), "emptyDir": {}})).collect::<Vec<_>>(),
        }
    })
}

fn review(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "bench",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a",
            "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": pod,
        }
    }))
    .expect("JSON")
}

fn bench(c: &mut Criterion) {
    let config = ClusterConfig::with_image("ghcr.io/tempcreds/tempcreds-sidecar:0.1.0");
    let sa = BTreeMap::new();
    let ctx = Context {
        namespace: "team-a",
        service_account_annotations: &sa,
        namespace_labels: &Default::default(),
    };
    let pods = [
        ("small", small_pod()),
        ("typical", typical_pod()),
        ("large", large_pod()),
    ];
    let mut group = c.benchmark_group("mutate");
    for (name, pod) in &pods {
        assert!(matches!(mutate(pod, &ctx, &config), Outcome::Patch { .. }));
        group.bench_function(*name, |b| {
            b.iter(|| mutate(black_box(pod), black_box(&ctx), black_box(&config)))
        });
    }
    let mut plain = typical_pod();
    if let Some(a) = plain["metadata"]["annotations"].as_object_mut() {
        a.clear();
    }
    group.bench_function("not-opted-in", |b| {
        b.iter(|| mutate(black_box(&plain), black_box(&ctx), black_box(&config)))
    });
    group.finish();

    let state = Arc::new(AppState {
        config: Arc::new(ArcSwap::from_pointee(config.clone())),
        service_accounts: ServiceAccounts::Disabled,
        metrics: Arc::new(Metrics::default()),
    });
    let app = router(state);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("handler");
    for (name, pod) in &pods {
        let body = bytes_of(review(pod));
        group.bench_function(*name, |b| {
            b.iter(|| {
                let request = Request::post("/mutate")
                    .header("content-type", "application/json")
                    .body(Body::from(body.clone()))
                    .expect("request");
                runtime.block_on(async {
                    let response = app.clone().oneshot(request).await.expect("infallible");
                    assert!(response.status().is_success());
                    axum::body::to_bytes(response.into_body(), usize::MAX)
                        .await
                        .expect("body")
                })
            })
        });
    }
    group.finish();
}

/// The webhook's recording before `prometheus-client`: one atomic per
/// result, per bucket, for the count and for the sum.
#[derive(Default)]
struct Atomics {
    requests: [AtomicU64; 4],
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Atomics {
    fn record(&self, result: usize, elapsed: Duration) {
        self.requests[result].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

fn bench_metrics(c: &mut Criterion) {
    // A typical review's latency (the handler's, about 40 µs: the third
    // bucket), so the bucket search walks as far as it usually does.
    let elapsed = Duration::from_micros(40);
    let metrics = Metrics::default();
    let atomics = Atomics::default();
    let mut group = c.benchmark_group("metrics");
    group.bench_function("record", |b| {
        b.iter(|| metrics.record(black_box(RequestResult::Patched), black_box(elapsed)))
    });
    group.bench_function("record-atomics", |b| {
        b.iter(|| atomics.record(black_box(0), black_box(elapsed)))
    });
    group.bench_function("encode", |b| b.iter(|| metrics.render()));
    group.finish();
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}

criterion_group!(benches, bench, bench_metrics);
criterion_main!(benches);
