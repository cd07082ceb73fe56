//! The admission handler in process (axum `Router` + `tower::ServiceExt::oneshot`):
//! bad requests get HTTP 400 with the reason, well-formed reviews always get
//! a review with the uid echoed, denials carry the message.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use serde_json::{Value, json};
use tempcreds_webhook::ClusterConfig;
use tempcreds_webhook::metrics::{Metrics, RequestResult};
use tempcreds_webhook::sa_cache::ServiceAccounts;
use tempcreds_webhook::server::{AppState, BODY_LIMIT, ShuttingDown, router};
use tower::ServiceExt as _;

const ROLE: &str = "arn:aws:iam::123456789012:role/app";

fn state() -> Arc<AppState> {
    let sa = BTreeMap::from([(
        ("team-a".to_owned(), "reporting".to_owned()),
        BTreeMap::from([("tempcreds.io/role-arn".to_owned(), ROLE.to_owned())]),
    )]);
    Arc::new(AppState {
        config: Arc::new(ArcSwap::from_pointee(ClusterConfig::with_image("img"))),
        service_accounts: ServiceAccounts::Static(Arc::new(sa)),
        metrics: Arc::new(Metrics::default()),
    })
}

fn review(uid: &str, operation: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "team-a",
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
        }
    })
}

fn pod(annotations: Value, service_account: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "app-", "namespace": "team-a", "annotations": annotations},
        "spec": {"serviceAccountName": service_account, "containers": [{"name": "app", "image": "app"}]},
    })
}

async fn post(state: &Arc<AppState>, body: impl Into<Body>) -> (StatusCode, Vec<u8>) {
    let response = router(state.clone())
        .oneshot(
            Request::post("/mutate")
                .header("content-type", "application/json")
                .body(body.into())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

async fn answer(state: &Arc<AppState>, review: Value) -> Value {
    let (status, body) = post(state, review.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");
    v["response"].clone()
}

#[tokio::test]
async fn bad_requests_get_400_with_the_reason() {
    let state = state();
    let not_a_pod = {
        let mut r = review("u", "CREATE", json!({}));
        r["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        r
    };
    let no_object = review("u", "CREATE", Value::Null);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "not JSON"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#
                .to_vec(),
            "admission.k8s.io/v1",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            "no request",
        ),
        (
            not_a_pod.to_string().into_bytes(),
            "only handles core v1 Pods",
        ),
        (no_object.to_string().into_bytes(), "no Pod object"),
        (vec![b' '; BODY_LIMIT + 1], "larger than"),
    ];
    for (body, needle) in cases {
        let (status, reason) = post(&state, body).await;
        let reason = String::from_utf8_lossy(&reason);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{reason}");
        assert!(reason.contains(needle), "{needle}: {reason}");
    }
    assert_eq!(state.metrics.requests(RequestResult::BadRequest), 6);
}

#[tokio::test]
async fn injects_and_echoes_the_uid() {
    let state = state();
    let input = pod(json!({"tempcreds.io/role-arn": ROLE}), "default");
    let response = answer(&state, review("uid-1", "CREATE", input.clone())).await;
    assert_eq!(response["uid"], "uid-1");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().unwrap())
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut out = input;
    json_patch::patch(&mut out, &patch).unwrap();
    assert_eq!(out["spec"]["initContainers"][0]["image"], "img");
    assert_eq!(state.metrics.requests(RequestResult::Patched), 1);
    let metrics = state.metrics.render();
    assert!(
        metrics.contains("tempcreds_webhook_patches_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn service_account_defaults_apply() {
    let state = state();
    let response = answer(
        &state,
        review("uid-sa", "CREATE", pod(json!({}), "reporting")),
    )
    .await;
    assert_eq!(response["uid"], "uid-sa");
    assert!(response["patch"].is_string(), "{response}");
    let response = answer(
        &state,
        review(
            "uid-out",
            "CREATE",
            pod(json!({"tempcreds.io/inject": "false"}), "reporting"),
        ),
    )
    .await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
}

#[tokio::test]
async fn bad_annotations_are_denied_with_a_message_and_warnings_passed_on() {
    let state = state();
    let input = pod(
        json!({"tempcreds.io/role-arn": ROLE, "tempcreds.io/session-duration": "5m"}),
        "default",
    );
    let response = answer(&state, review("uid-2", "CREATE", input)).await;
    assert_eq!(response["uid"], "uid-2");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("tempcreds.io/session-duration=\"5m\"") && message.contains("900"),
        "{message}"
    );
    assert_eq!(state.metrics.requests(RequestResult::Denied), 1);

    let input = pod(
        json!({"tempcreds.io/role-arn": ROLE, "tempcreds.io/containers": "app,typo",
               "tempcreds.io/region": "eu-west-1"}),
        "default",
    );
    let response = answer(&state, review("uid-3", "CREATE", input)).await;
    assert_eq!(response["allowed"], true);
    assert!(
        response["warnings"][0].as_str().unwrap().contains("typo"),
        "{response}"
    );
}

#[tokio::test]
async fn non_create_and_plain_pods_pass_unchanged() {
    let state = state();
    let input = pod(json!({"tempcreds.io/role-arn": ROLE}), "default");
    for (uid, op, p) in [
        ("u-up", "UPDATE", input.clone()),
        ("u-del", "DELETE", Value::Null),
        ("u-plain", "CREATE", pod(json!({}), "default")),
    ] {
        let response = answer(&state, review(uid, op, p)).await;
        assert_eq!(response["uid"], uid);
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none(), "{response}");
    }
}

#[tokio::test]
async fn probes_and_metrics() {
    let state = state();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let response = router(state.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn readyz_fails_once_shutdown_has_begun() {
    let mut request = Request::get("/readyz").body(Body::empty()).unwrap();
    request.extensions_mut().insert(ShuttingDown);
    let response = router(state()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    assert_eq!(&body[..], b"shutting down\n");
}

/// `GET /metrics` with an `Accept` header, returning the content type and
/// the body.
async fn scrape(state: &Arc<AppState>, accept: Option<&str>) -> (String, String) {
    let mut request = Request::get("/metrics");
    if let Some(a) = accept {
        request = request.header("accept", a);
    }
    let response = router(state.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (content_type, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn metrics_are_openmetrics_for_prometheus_and_text_for_others() {
    let state = state();
    let input = pod(json!({"tempcreds.io/role-arn": ROLE}), "default");
    answer(&state, review("uid-m", "CREATE", input)).await;

    // What Prometheus asks for: OpenMetrics first.
    let (content_type, open) = scrape(
        &state,
        Some(
            "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;\
             version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        ),
    )
    .await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    for line in [
        "# TYPE tempcreds_webhook_requests counter",
        "tempcreds_webhook_requests_total{result=\"patched\"} 1",
        "tempcreds_webhook_patches_total 1",
        "tempcreds_webhook_request_duration_seconds_count 1",
        "# EOF",
    ] {
        assert!(open.lines().any(|l| l == line), "no {line:?} in\n{open}");
    }

    // curl and scrapers that do not name OpenMetrics: text format 0.0.4.
    for accept in [None, Some("*/*"), Some("text/plain")] {
        let (content_type, text) = scrape(&state, accept).await;
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        assert!(
            text.lines()
                .any(|l| l == "# TYPE tempcreds_webhook_requests_total counter"),
            "{text}"
        );
        assert!(
            text.lines()
                .any(|l| l == "tempcreds_webhook_patches_total 1"),
            "{text}"
        );
        assert!(!text.contains("# EOF"), "{text}");
    }
}

/// The sidecar's args in the answer's patch applied to `input`.
fn sidecar_args(response: &Value, input: &Value) -> Vec<String> {
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut out = input.clone();
    json_patch::patch(&mut out, &patch).unwrap();
    serde_json::from_value(out["spec"]["initContainers"][0]["args"].clone()).unwrap()
}

#[tokio::test]
async fn fips_and_dual_stack_from_the_cluster_default_and_annotations() {
    let state = state();
    let mut config =
        ClusterConfig::from_yaml("sidecar: {image: img}\nregion: us-west-2\nuseFipsEndpoint: true")
            .unwrap();
    state.config.store(Arc::new(config.clone()));

    // The cluster's FIPS default, plus the pod's dual-stack.
    let input = pod(
        json!({"tempcreds.io/role-arn": ROLE, "tempcreds.io/use-dualstack-endpoint": "true"}),
        "default",
    );
    let response = answer(&state, review("v-1", "CREATE", input.clone())).await;
    assert_eq!(response["allowed"], true, "{response}");
    let args = sidecar_args(&response, &input);
    assert!(
        args.ends_with(&[
            "--use-fips-endpoint".to_owned(),
            "--use-dualstack-endpoint".to_owned()
        ]),
        "{args:?}"
    );

    // The pod's "false" turns the cluster's "true" off.
    let input = pod(
        json!({"tempcreds.io/role-arn": ROLE, "tempcreds.io/use-fips-endpoint": "false"}),
        "default",
    );
    let response = answer(&state, review("v-2", "CREATE", input.clone())).await;
    let args = sidecar_args(&response, &input);
    assert!(!args.iter().any(|a| a.starts_with("--use-")), "{args:?}");

    // Where STS has no FIPS endpoint: denied, naming the annotation, its
    // value and the regions accepted.
    config.use_fips_endpoint = false;
    state.config.store(Arc::new(config));
    let input = pod(
        json!({"tempcreds.io/role-arn": ROLE, "tempcreds.io/region": "sa-east-1",
               "tempcreds.io/use-fips-endpoint": "true"}),
        "default",
    );
    let response = answer(&state, review("v-3", "CREATE", input)).await;
    assert_eq!(response["uid"], "v-3");
    assert_eq!(response["allowed"], false);
    assert_eq!(
        response["status"]["message"],
        "tempcreds: annotation tempcreds.io/use-fips-endpoint=\"true\": STS has no FIPS endpoint in \
         tempcreds.io/region \"sa-east-1\" (partition aws); accepted: tempcreds.io/region one of \
         us-east-1, us-east-2, us-west-1, us-west-2, us-gov-east-1, us-gov-west-1"
    );
    let input = pod(
        json!({"tempcreds.io/role-arn": ROLE, "tempcreds.io/use-dualstack-endpoint": "maybe"}),
        "default",
    );
    let response = answer(&state, review("v-4", "CREATE", input)).await;
    assert_eq!(
        response["status"]["message"],
        "tempcreds: annotation tempcreds.io/use-dualstack-endpoint=\"maybe\": accepted: \"true\" or \"false\""
    );
}
