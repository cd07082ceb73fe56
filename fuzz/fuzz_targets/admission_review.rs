//! AdmissionReview parsing, the mutation and the answer's encoding, through
//! the real `/mutate` handler. Any body must get either 200 with an
//! AdmissionReview answering the request's uid, whose patch (if any) applies
//! cleanly to the pod that was sent, or 400 with a reason; never a panic,
//! never another status.
//!
//! Input: a request body as is (bytes starting with `{`), or else a fixture
//! pod chosen by the first byte whose annotations come from the remaining
//! lines (`<selector byte><value>`), so the fuzzer reaches deep into the
//! annotation rules without having to invent JSON first.

#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tempcreds_core::annotations::USER_ANNOTATIONS;
use tempcreds_webhook::ClusterConfig;
use tempcreds_webhook::metrics::Metrics;
use tempcreds_webhook::sa_cache::ServiceAccounts;
use tempcreds_webhook::server::{AppState, router};
use tower::ServiceExt as _;

const FIXTURES: &[&str] = &[
    include_str!("../../tests/fixtures/webhook/existing-volumes-and-init-containers/pod.yaml"),
    include_str!("../../tests/fixtures/webhook/several-containers-skip-list/pod.yaml"),
    include_str!("../../tests/fixtures/webhook/name-clashes/pod.yaml"),
    include_str!("../../tests/fixtures/webhook/existing-aws-env/pod.yaml"),
    include_str!("../../tests/fixtures/webhook/escaped-keys/pod.yaml"),
    include_str!("../../tests/fixtures/webhook/no-volumes/pod.yaml"),
];

struct World {
    runtime: tokio::runtime::Runtime,
    app: axum::Router,
    pods: Vec<Value>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let state = Arc::new(AppState {
            config: Arc::new(ArcSwap::from_pointee(ClusterConfig::with_image(
                "ghcr.io/tempcreds/tempcreds-sidecar:0.1.0",
            ))),
            service_accounts: ServiceAccounts::Disabled,
            metrics: Arc::new(Metrics::default()),
        });
        World {
            runtime: tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
            app: router(state),
            pods: FIXTURES
                .iter()
                .map(|y| serde_yaml::from_str(y).expect("fixture YAML"))
                .collect(),
        }
    })
}

/// A review of a fixture pod with annotations taken from `data`.
fn structured(w: &World, data: &[u8]) -> Vec<u8> {
    let (first, rest) = data.split_first().unwrap_or((&0, &[]));
    let mut pod = w.pods[*first as usize % w.pods.len()].clone();
    let mut annotations = BTreeMap::new();
    for line in rest.split(|b| *b == b'\n') {
        if let Some((sel, value)) = line.split_first() {
            let key = USER_ANNOTATIONS[*sel as usize % USER_ANNOTATIONS.len()];
            annotations.insert(key, String::from_utf8_lossy(value).into_owned());
        }
    }
    pod["metadata"]["annotations"] = json!(annotations);
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "fuzz",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a",
            "operation": "CREATE",
            "object": pod,
        }
    }))
    .expect("JSON")
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let body = if data.first() == Some(&b'{') {
        data.to_vec()
    } else {
        structured(w, data)
    };
    let request = Request::post("/mutate")
        .header("content-type", "application/json")
        .body(Body::from(body.clone()))
        .expect("request");
    let response = w
        .runtime
        .block_on(w.app.clone().oneshot(request))
        .expect("infallible");
    let status = response.status();
    let bytes = w
        .runtime
        .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        .expect("body");
    match status {
        StatusCode::BAD_REQUEST => assert!(!bytes.is_empty(), "a 400 without a reason"),
        StatusCode::OK => {
            let sent: Value = serde_json::from_slice(&body).expect("a 200 for a non-JSON body");
            let review: Value = serde_json::from_slice(&bytes).expect("the answer is JSON");
            assert_eq!(review["kind"], "AdmissionReview");
            let answer = &review["response"];
            assert_eq!(answer["uid"], sent["request"]["uid"], "answers another uid");
            assert!(answer["allowed"].is_boolean());
            if let Some(patch) = answer["patch"].as_str() {
                let patch = base64::engine::general_purpose::STANDARD
                    .decode(patch)
                    .expect("base64 patch");
                let patch: json_patch::Patch =
                    serde_json::from_slice(&patch).expect("a JSON patch");
                let mut pod = sent["request"]["object"].clone();
                json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod sent");
            }
        }
        other => panic!("unexpected status {other}"),
    }
});
