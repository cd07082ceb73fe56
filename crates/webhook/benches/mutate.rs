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
//!
//! `make bench` runs these; the goal is a typical mutation ≤ 50 µs median.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use tempcreds_webhook::metrics::Metrics;
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

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}

criterion_group!(benches, bench);
criterion_main!(benches);
