//! Benchmark of the pure mutation on a typical pod (two containers'
//! worth of spec, existing volumes, an init container), the work done per
//! admission request besides JSON decoding and TLS.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::Value;
use tempcreds_webhook::{ClusterConfig, Context, Outcome, mutate};

fn typical_pod() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/webhook/existing-volumes-and-init-containers/pod.yaml"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_yaml::from_str(&text).expect("fixture YAML")
}

fn bench(c: &mut Criterion) {
    let pod = typical_pod();
    let config = ClusterConfig::with_image("ghcr.io/tempcreds/tempcreds-sidecar:0.1.0");
    let sa = BTreeMap::new();
    let ctx = Context {
        namespace: "team-a",
        service_account_annotations: &sa,
        namespace_labels: &Default::default(),
    };
    assert!(matches!(mutate(&pod, &ctx, &config), Outcome::Patch { .. }));
    c.bench_function("mutate typical pod", |b| {
        b.iter(|| mutate(black_box(&pod), black_box(&ctx), black_box(&config)))
    });
    let mut plain = pod.clone();
    if let Some(a) = plain["metadata"]["annotations"].as_object_mut() {
        a.clear();
    }
    c.bench_function("mutate pod not opted in", |b| {
        b.iter(|| mutate(black_box(&plain), black_box(&ctx), black_box(&config)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
