//! The HTTPS server: `POST /mutate` (AdmissionReview `admission.k8s.io/v1`),
//! `GET /healthz`, `/readyz` and `/metrics`, served with rustls; graceful
//! shutdown in phases ([`Shutdown`]): first keep serving while `/readyz`
//! fails and the Service's endpoints drop the pod, then stop accepting and
//! drain in-flight requests.
//!
//! The handler only decodes, calls [`crate::mutate::mutate`] and encodes. A
//! parseable review is always answered with a review (a denial carries a
//! message a `kubectl` user can act on); HTTP 400 is only for requests with
//! no review to answer.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::{Value, json};
use tempcreds_core::annotations as a;
use tempcreds_core::exposition::Exposition;
use tokio::net::TcpListener;

use crate::cli::ServeArgs;
use crate::config::ClusterConfig;
use crate::metrics::{Metrics, Reloaded, RequestResult};
use crate::mutate::{self, Context, Outcome};
use crate::sa_cache::ServiceAccounts;
use crate::selfcert::Lifetimes;
use crate::selfcert_sync::{self, SelfCertTarget};
use crate::tls::CertStore;

/// Largest request body accepted (the API server's own limit for a pod is
/// far lower; this bounds memory per request).
pub const BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Time limits on each client connection, so that slow or stalled clients
/// (slowloris) cannot hold connections, and the memory behind them, for
/// long. Each limit closes the connection (or answers 408) when exceeded;
/// other clients are served meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Completing the TLS handshake.
    pub handshake: Duration,
    /// Sending a request's headers, counted from when the server waits for
    /// them: also how long an idle keep-alive connection stays open.
    pub headers: Duration,
    /// Sending the body and getting the answer, counted from the end of the
    /// headers: a body sent byte by byte is cut off with `408 Request
    /// Timeout`. The API server itself gives a webhook at most 30 s.
    pub request: Duration,
    /// Once the listener is closed at shutdown, how long a connection that
    /// has sent no request yet (opened just before, possibly still in its
    /// TLS handshake) may take to send its first one, which is then served;
    /// after that it is closed. Go's `http.Server` gives 5 s likewise.
    pub first_request: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake: Duration::from_secs(10),
            headers: Duration::from_secs(30),
            request: Duration::from_secs(30),
            first_request: Duration::from_secs(5),
        }
    }
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct AppState {
    /// The cluster config, swapped on reload.
    pub config: Arc<ArcSwap<ClusterConfig>>,
    /// Where ServiceAccount annotations come from.
    pub service_accounts: ServiceAccounts,
    /// The metrics.
    pub metrics: Arc<Metrics>,
}

/// The routes. Probes and metrics are not traced per request.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Marks requests received once shutdown has begun (a request extension
/// set by [`serve_with_limits`]): `/readyz` then answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShuttingDown;

async fn readyz(
    State(state): State<Arc<AppState>>,
    shutting_down: Option<axum::Extension<ShuttingDown>>,
) -> Response {
    if shutting_down.is_some() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    let namespaces_needed = state.config.load().policy.needs_namespace_labels();
    if state.service_accounts.is_ready()
        && (!namespaces_needed || state.service_accounts.namespaces_ready())
    {
        (StatusCode::OK, "ok\n").into_response()
    } else if state.service_accounts.is_ready() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the namespace cache to sync (policy.roles uses namespaceSelector)\n",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the ServiceAccount cache to sync\n",
        )
            .into_response()
    }
}

/// `/metrics`: OpenMetrics when the scrape asks for it, else the
/// Prometheus text format.
async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Exposition::from_accept(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        state.metrics.encode(format),
    )
        .into_response()
}

/// The parts of an AdmissionRequest the webhook uses.
#[derive(Debug)]
struct Request {
    uid: String,
    namespace: String,
    operation: String,
    sub_resource: Option<String>,
    object: Option<Value>,
    pod_name: String,
}

/// Decodes an AdmissionReview, or says why there is no review to answer.
fn parse_review(body: &[u8]) -> Result<Request, String> {
    let mut root: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    if root["apiVersion"] != "admission.k8s.io/v1" || root["kind"] != "AdmissionReview" {
        return Err(format!(
            "expected an AdmissionReview of apiVersion admission.k8s.io/v1, got kind {} apiVersion {}",
            root["kind"], root["apiVersion"]
        ));
    }
    let Some(request) = root.get_mut("request").filter(|r| r.is_object()) else {
        return Err("the AdmissionReview has no request".into());
    };
    let uid = match request["uid"].as_str() {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => return Err("the AdmissionReview's request has no uid".into()),
    };
    let kind = &request["kind"];
    if kind["kind"] != "Pod"
        || kind["version"] != "v1"
        || !matches!(kind["group"].as_str(), None | Some(""))
    {
        return Err(format!(
            "the request is for a {kind}; this webhook only handles core v1 Pods"
        ));
    }
    let operation = request["operation"].as_str().unwrap_or_default().to_owned();
    let sub_resource = request["subResource"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    let object = request
        .get_mut("object")
        .map(Value::take)
        .filter(|o| !o.is_null());
    let meta = object.as_ref().map(|o| &o["metadata"]);
    let namespace = request["namespace"]
        .as_str()
        .or_else(|| meta.and_then(|m| m["namespace"].as_str()))
        .unwrap_or("default")
        .to_owned();
    let pod_name = request["name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| meta.and_then(|m| m["name"].as_str()))
        .map(str::to_owned)
        .or_else(|| {
            meta.and_then(|m| m["generateName"].as_str())
                .map(|g| format!("{g}*"))
        })
        .unwrap_or_default();
    Ok(Request {
        uid,
        namespace,
        operation,
        sub_resource,
        object,
        pod_name,
    })
}

fn bad_request(state: &AppState, start: Instant, reason: String) -> Response {
    state
        .metrics
        .record(RequestResult::BadRequest, start.elapsed());
    tracing::warn!(%reason, "bad admission request");
    (StatusCode::BAD_REQUEST, reason + "\n").into_response()
}

fn review(response: Value) -> Response {
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn mutate_handler(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let start = Instant::now();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return bad_request(
                &state,
                start,
                format!("the body is unreadable or larger than {BODY_LIMIT} bytes"),
            );
        }
    };
    let mut request = match parse_review(&bytes) {
        Ok(r) => r,
        Err(reason) => return bad_request(&state, start, reason),
    };
    // One line per review, its fields on the event itself: a span would
    // cost its fields' formatting and, with the JSON log format, parsing
    // them back for every event (about a tenth of a review's CPU).
    let (result, response) = match decide(&state, &mut request).await {
        Ok(answer) => answer,
        Err(reason) => return bad_request(&state, start, reason),
    };
    let elapsed = start.elapsed();
    state.metrics.record(result, elapsed);
    let outcome = result.as_str();
    let Request {
        uid,
        namespace,
        pod_name: pod,
        operation,
        ..
    } = &request;
    match result {
        RequestResult::Allowed => {
            tracing::debug!(%uid, %namespace, %pod, %operation, outcome, ?elapsed, "allowed unchanged");
        }
        RequestResult::Denied => tracing::info!(
            %uid,
            %namespace,
            %pod,
            %operation,
            outcome,
            ?elapsed,
            message = response["status"]["message"].as_str().unwrap_or_default(),
            "denied"
        ),
        _ => {
            tracing::info!(%uid, %namespace, %pod, %operation, outcome, ?elapsed, "sidecar injected")
        }
    }
    review(response)
}

/// The response to a well-formed request, or why it is malformed after all.
async fn decide(state: &AppState, request: &mut Request) -> Result<(RequestResult, Value), String> {
    let uid = request.uid.clone();
    let allow = |uid: String| (RequestResult::Allowed, json!({"uid": uid, "allowed": true}));
    if request.operation != "CREATE" || request.sub_resource.is_some() {
        return Ok(allow(uid));
    }
    let Some(pod) = request.object.take().filter(Value::is_object) else {
        return Err("the CREATE request has no Pod object".into());
    };
    let opted_out = pod["metadata"]["annotations"][a::INJECT] == "false";
    let sa_annotations = if opted_out {
        Default::default()
    } else {
        let name = mutate::service_account_name(&pod);
        match state
            .service_accounts
            .annotations(&request.namespace, name)
            .await
        {
            Ok(annotations) => annotations,
            Err(e) => {
                let message = format!(
                    "tempcreds: {}; the pod is refused so it cannot start without the credentials \
                     its ServiceAccount may ask for; retry shortly",
                    crate::error_chain(&e)
                );
                return Ok(deny(uid, message));
            }
        }
    };
    let config = state.config.load();
    let labels_needed = config.policy.needs_namespace_labels() && !opted_out;
    let labels = if labels_needed {
        match state
            .service_accounts
            .namespace_labels(&request.namespace, false)
            .await
        {
            Ok(labels) => labels,
            Err(e) => {
                let message = format!(
                    "tempcreds: {}; the cluster's policy selects namespaces by label, so the pod \
                     cannot be checked; retry shortly",
                    crate::error_chain(&e)
                );
                return Ok(deny(uid, message));
            }
        }
    } else {
        Default::default()
    };
    let mut ctx = Context {
        namespace: &request.namespace,
        service_account_annotations: &sa_annotations,
        namespace_labels: &labels,
    };
    let mut outcome = mutate::mutate(&pod, &ctx, &config);
    // Before refusing on cached labels, read them once from the API: the
    // namespace may have been labelled moments ago.
    let fresh;
    if labels_needed
        && matches!(outcome, Outcome::Deny(_))
        && let Ok(labels) = state
            .service_accounts
            .namespace_labels(&request.namespace, true)
            .await
        && labels != *ctx.namespace_labels
    {
        fresh = labels;
        ctx.namespace_labels = &fresh;
        outcome = mutate::mutate(&pod, &ctx, &config);
    }
    Ok(match outcome {
        Outcome::NotForUs => allow(uid),
        Outcome::Patch { patch, warnings } => {
            let mut response = json!({"uid": uid, "allowed": true});
            if !patch.0.is_empty() {
                let bytes = serde_json::to_vec(&patch).map_err(|e| e.to_string())?;
                response["patchType"] = json!("JSONPatch");
                response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
            if !warnings.is_empty() {
                response["warnings"] = json!(warnings);
            }
            (RequestResult::Patched, response)
        }
        Outcome::Deny(message) => deny(uid, message),
    })
}

fn deny(uid: String, message: String) -> (RequestResult, Value) {
    (
        RequestResult::Denied,
        json!({
            "uid": uid,
            "allowed": false,
            "status": {"status": "Failure", "code": 403, "reason": "Forbidden", "message": message},
        }),
    )
}

/// How [`serve_with_limits`] ends, in the phases of kube-apiserver's
/// `--shutdown-delay-duration`:
///
/// 1. `signal` completes (SIGTERM): `/readyz` answers 503 and every response
///    carries `Connection: close` (so keep-alive clients reconnect, through
///    the Service, elsewhere), but new connections are still accepted and
///    served: the Service's endpoints (kube-proxy's rules, the API server's
///    endpoint routing) keep sending connections to a deleted pod for a
///    moment, and refusing them would fail admission requests.
/// 2. `delay` completes: the listener is closed, so new connections are
///    refused, and open connections are told to finish: idle keep-alive
///    connections are closed, busy ones after their response (hyper's
///    graceful shutdown of HTTP/1.1; the server speaks no HTTP/2, so there
///    is no GOAWAY to send), and ones that have sent no request yet get
///    [`Limits::first_request`] to send one.
/// 3. `drain` after that at the latest, the remaining connections are
///    dropped.
///
/// `delay` is polled only once `signal` has completed, so a lazy future (an
/// `async` block, as [`Shutdown::delayed`] builds) measures the delay from
/// the signal; a test can pass any future it completes itself.
#[derive(Debug)]
pub struct Shutdown<S, D> {
    /// Completes when shutdown is asked for.
    pub signal: S,
    /// Completes when new connections stop being accepted.
    pub delay: D,
    /// How long open connections may take to finish after that.
    pub drain: Duration,
}

impl<S: Future<Output = ()>> Shutdown<S, futures::future::BoxFuture<'static, ()>> {
    /// Keeps serving for `delay` after `signal` completes, then drains for
    /// up to `drain`: the production sequence (`--shutdown-delay`,
    /// `--shutdown-grace`). A zero `delay` stops accepting at once.
    pub fn delayed(signal: S, delay: Duration, drain: Duration) -> Self {
        Shutdown {
            signal,
            delay: Box::pin(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
            }),
            drain,
        }
    }

    /// No delay: stops accepting as soon as `signal` completes.
    pub fn immediate(signal: S, drain: Duration) -> Self {
        Self::delayed(signal, Duration::ZERO, drain)
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` ends it (see
/// [`Shutdown`]). The connections get the default [`Limits`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: Shutdown<impl Future<Output = ()>, impl Future<Output = ()>>,
) {
    serve_with_limits(listener, tls, app, shutdown, Limits::default()).await
}

/// The answer to a request that was not read and answered within
/// [`Limits::request`].
fn request_timeout(limit: Duration) -> Response {
    tracing::debug!(?limit, "request not completed in time");
    (
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request was not received and answered within {}s\n",
            limit.as_secs_f64()
        ),
    )
        .into_response()
}

/// [`serve`] with the given connection [`Limits`].
pub async fn serve_with_limits(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: Shutdown<impl Future<Output = ()>, impl Future<Output = ()>>,
    limits: Limits,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let shutting_down = Arc::new(AtomicBool::new(false));
    // `true` once the listener is closed; every connection task holds a
    // receiver, so `closed()` on the sender tells when all have ended.
    let (draining, drain_rx) = tokio::sync::watch::channel(false);
    let Shutdown {
        signal,
        delay,
        drain,
    } = shutdown;
    let mut signal = std::pin::pin!(signal);
    let mut delay = std::pin::pin!(delay);
    let mut signalled = false;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(connection(
                    tcp,
                    peer,
                    acceptor.clone(),
                    app.clone(),
                    shutting_down.clone(),
                    drain_rx.clone(),
                    limits,
                ));
            }
            () = &mut signal, if !signalled => {
                signalled = true;
                shutting_down.store(true, Ordering::Relaxed);
                tracing::info!(
                    "shutdown requested: /readyz answers 503; still accepting and serving new \
                     connections until the shutdown delay is over, while the endpoints drop this pod"
                );
            }
            () = &mut delay, if signalled => break,
        }
    }
    drop(listener);
    drop(drain_rx);
    shutting_down.store(true, Ordering::Relaxed);
    tracing::info!(
        drain = %tempcreds_core::duration::format_duration(drain),
        "shutdown delay over: listener closed; open connections finish their requests and close"
    );
    let _ = draining.send(true);
    tokio::select! {
        () = draining.closed() => tracing::info!("all connections drained; shut down"),
        () = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain deadline passed; closing remaining connections"),
    }
}

/// Serves one connection: the TLS handshake, then HTTP/1.1 requests until
/// the client closes, a limit is exceeded, or the drain: then the request
/// under way is answered (with `Connection: close`) and an idle
/// connection is closed at once, while one that has sent no request yet
/// gets [`Limits::first_request`] to send one.
async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    shutting_down: Arc<AtomicBool>,
    mut draining: tokio::sync::watch::Receiver<bool>,
    limits: Limits,
) {
    // Resolves once the drain has lasted `limits.first_request`.
    async fn first_request_grace_over(
        draining: &mut tokio::sync::watch::Receiver<bool>,
        grace: Duration,
    ) {
        let _ = draining.wait_for(|d| *d).await;
        tokio::time::sleep(grace).await;
    }
    let handshake = tokio::time::timeout(limits.handshake, acceptor.accept(tcp));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        () = first_request_grace_over(&mut draining, limits.first_request) => {
            tracing::debug!(%peer, "TLS handshake not done after the listener closed");
            return;
        }
    };
    // Set when the first request's headers have arrived.
    let started = Arc::new(tokio::sync::Notify::new());
    let has_started = Arc::new(AtomicBool::new(false));
    let service = {
        let (started, has_started) = (started.clone(), has_started.clone());
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            has_started.store(true, Ordering::Relaxed);
            started.notify_one();
            let app = app.clone();
            let shutting_down = shutting_down.clone();
            async move {
                if shutting_down.load(Ordering::Relaxed) {
                    request.extensions_mut().insert(ShuttingDown);
                }
                let answer = tower::ServiceExt::oneshot(app, request);
                let mut response = match tokio::time::timeout(limits.request, answer).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => request_timeout(limits.request),
                };
                // Once shutdown has begun, a keep-alive client reconnects
                // for its next request, through the Service, to a replica
                // that stays.
                if shutting_down.load(Ordering::Relaxed) {
                    response.headers_mut().insert(
                        header::CONNECTION,
                        header::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.headers)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let ended = tokio::select! {
        ended = conn.as_mut() => Some(ended),
        _ = draining.wait_for(|d| *d) => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            if !has_started.load(Ordering::Relaxed) {
                let grace = tokio::time::sleep(limits.first_request);
                tokio::select! {
                    ended = conn.as_mut() => return log_end(peer, ended),
                    () = started.notified() => {}
                    () = grace => {}
                }
            }
            // HTTP/1.1: keep-alive off; closes an idle connection now and a
            // busy one after its response.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    log_end(peer, ended);
}

fn log_end(peer: SocketAddr, ended: Result<(), hyper::Error>) {
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Where the serving certificate comes from.
#[derive(Debug)]
enum Certs {
    /// PEM files, reloaded when they change.
    Files(Arc<CertStore>),
    /// The webhook's own CA and certificate, kept in a Secret.
    SelfManaged(SelfCertTarget),
}

/// Everything `serve` needs, checked before any port is bound.
#[derive(Debug)]
pub struct Prepared {
    args: ServeArgs,
    config: ClusterConfig,
    certs: Certs,
}

/// Loads and checks the config file and the certificate; every problem is
/// reported before anything is bound.
pub fn prepare(args: ServeArgs) -> anyhow::Result<Prepared> {
    let config = ClusterConfig::load(&args.config);
    let certs = match (
        &args.tls_cert_file,
        &args.tls_key_file,
        &args.tls_self_managed_secret,
    ) {
        (Some(cert), Some(key), _) => CertStore::open(cert, key)
            .map(Certs::Files)
            .map_err(|e| crate::error_chain(&e)),
        (_, _, Some((namespace, secret))) => Lifetimes::new(
            args.tls_ca_lifetime,
            args.tls_cert_lifetime,
            args.tls_ca_propagation_delay,
        )
        .map(|lifetimes| {
            Certs::SelfManaged(SelfCertTarget {
                namespace: namespace.clone(),
                secret: secret.clone(),
                dns_names: args.tls_dns_names.clone(),
                webhook_configuration: args.webhook_configuration.clone().unwrap_or_default(),
                lifetimes,
            })
        })
        .map_err(|e| e.to_string()),
        _ => {
            Err("give --tls-cert-file and --tls-key-file, or --tls-self-managed-secret".to_owned())
        }
    };
    match (config, certs) {
        (Ok(config), Ok(certs)) => Ok(Prepared {
            args,
            config,
            certs,
        }),
        (config, certs) => {
            let mut problems = Vec::new();
            if let Err(e) = config {
                problems.push(crate::error_chain(&e));
            }
            if let Err(e) = certs {
                problems.push(e);
            }
            anyhow::bail!("{}", problems.join("\n"))
        }
    }
}

/// Issues or adopts the self-managed certificate before serving, sets the
/// caBundle, and keeps both current in the background.
async fn self_managed(
    target: SelfCertTarget,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Arc<CertStore>, tokio::task::JoinHandle<()>)> {
    let client = kube::Client::try_default().await.context(
        "self-managed certificates need access to the API server (in-cluster config or KUBECONFIG)",
    )?;
    let mut stored = selfcert_sync::ensure_secret(&client, &target)
        .await
        .map_err(|e| anyhow::anyhow!(crate::error_chain(&e)))?;
    let store = CertStore::from_memory(
        stored.material.tls_cert.as_bytes(),
        stored.material.tls_key.as_bytes(),
        &format!("Secret {}/{}", target.namespace, target.secret),
    )
    .map_err(|e| anyhow::anyhow!(crate::error_chain(&e)))?;
    match selfcert_sync::publish(&client, &target, &stored).await {
        Ok(publication) => stored.publication = publication,
        // Serving still helps: another replica or a later retry fixes it.
        Err(e) => {
            tracing::warn!(error = %crate::error_chain(&e), "could not set the caBundle yet; will retry")
        }
    }
    let installed = store.clone();
    let task = tokio::spawn(selfcert_sync::maintain(
        client,
        target,
        stored,
        move |m| {
            installed.install_pem(m.tls_cert.as_bytes(), m.tls_key.as_bytes(), &metrics);
        },
        std::future::pending(),
    ));
    Ok((store, task))
}

/// Runs `serve` until `shutdown`: binds the listener, starts the
/// ServiceAccount cache and the reloaders of the config and the certificate.
pub async fn run(prepared: Prepared, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let Prepared {
        args,
        config,
        certs,
    } = prepared;
    let metrics = Arc::new(Metrics::default());
    let (certs, _cert_maintainer) = match certs {
        Certs::Files(store) => {
            let reload_metrics = metrics.clone();
            let reload_certs = store.clone();
            let reloader =
                crate::watch::spawn_reloader(&store.paths(), args.reload_interval, move || {
                    reload_certs.reload(&reload_metrics);
                })
                .context("watching the certificate directory")?;
            (store, reloader)
        }
        Certs::SelfManaged(target) => self_managed(target, metrics.clone()).await?,
    };
    let tls = certs
        .server_config()
        .context("building the TLS configuration")?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let local: SocketAddr = listener.local_addr()?;

    let config = Arc::new(ArcSwap::from_pointee(config));
    let _config_reloader = spawn_config_reloader(
        args.config.clone(),
        config.clone(),
        metrics.clone(),
        args.reload_interval,
    )?;

    let service_accounts = ServiceAccounts::connect(metrics.clone()).await;
    let state = Arc::new(AppState {
        config,
        service_accounts,
        metrics,
    });
    tracing::info!(
        listen = %local,
        version = env!("CARGO_PKG_VERSION"),
        shutdown_delay = %tempcreds_core::duration::format_duration(args.shutdown_delay),
        shutdown_grace = %tempcreds_core::duration::format_duration(args.shutdown_grace),
        "serving"
    );
    let shutdown = Shutdown::delayed(shutdown, args.shutdown_delay, args.shutdown_grace);
    serve(listener, tls, router(state), shutdown).await;
    Ok(())
}

fn spawn_config_reloader(
    path: PathBuf,
    config: Arc<ArcSwap<ClusterConfig>>,
    metrics: Arc<Metrics>,
    period: Duration,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let watched = path.clone();
    let last_error = crate::watch::LastError::default();
    crate::watch::spawn_reloader(&[&watched], period, move || {
        match ClusterConfig::load(&path) {
            Ok(new) => {
                last_error.clear();
                if **config.load() != new {
                    config.store(Arc::new(new));
                    metrics.record_reload(Reloaded::Config, true);
                    tracing::info!(path = %path.display(), "config reloaded");
                }
            }
            Err(e) => {
                let error = crate::error_chain(&e);
                if last_error.is_new(&error) {
                    metrics.record_reload(Reloaded::Config, false);
                    tracing::warn!(%error, "new config rejected; keeping the previous one");
                }
            }
        }
    })
    .context("watching the config directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn config_reload_keeps_the_old_config_when_the_new_one_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "sidecar: {image: one}\n").unwrap();
        let config = Arc::new(ArcSwap::from_pointee(ClusterConfig::load(&path).unwrap()));
        let metrics = Arc::new(Metrics::default());
        let _task = spawn_config_reloader(
            path.clone(),
            config.clone(),
            metrics.clone(),
            Duration::from_secs(3600),
        )
        .unwrap();
        // Polls until `done` holds; the limit only guards against a hang
        // (a loaded machine makes the watcher slower, never wrong).
        async fn eventually(what: &str, done: impl Fn() -> bool) {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
            while !done() {
                assert!(tokio::time::Instant::now() < deadline, "never: {what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let wait_for = |want: &'static str| {
            let config = config.clone();
            async move {
                eventually(&format!("config image {want}"), || {
                    config.load().sidecar.image == want
                })
                .await
            }
        };
        // Rewritten in place, then replaced by a rename (as editors and
        // ConfigMap updates do).
        std::fs::write(&path, "sidecar: {image: two}\n").unwrap();
        wait_for("two").await;
        let tmp = dir.path().join("tmp.yaml");
        std::fs::write(&tmp, "sidecar: {image: three}\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        wait_for("three").await;
        std::fs::write(&path, "sidecar: {image: four, typo: 1}\n").unwrap();
        // The reloader read the invalid file (and counted it as rejected)...
        let failed = || {
            metrics
                .render()
                .lines()
                .find_map(|l| l.strip_prefix("tempcreds_webhook_config_reloads_failed_total "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        eventually("the invalid config is rejected", || failed() >= 1).await;
        // ...and kept the config it had.
        assert_eq!(config.load().sidecar.image, "three");
    }

    #[test]
    fn prepare_checks_the_certificate_lifetimes_before_binding() {
        use clap::Parser as _;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, "sidecar: {image: one}\n").unwrap();
        let config = config.to_str().unwrap().to_owned();
        let parse = |extra: &[&str]| {
            let mut argv = vec!["tempcreds-webhook", "serve", "--config", &config];
            argv.extend(extra);
            crate::cli::Cli::try_parse_from(argv).map(|cli| match cli.command {
                crate::cli::Command::Serve(args) => args,
                crate::cli::Command::Inject(_) => unreachable!(),
            })
        };
        let self_managed = [
            "--tls-self-managed-secret",
            "tempcreds/tempcreds-tls",
            "--tls-dns-name",
            "tempcreds.tempcreds.svc",
            "--webhook-configuration",
            "tempcreds",
        ];
        let args = parse(&self_managed).unwrap();
        assert_eq!(args.shutdown_delay, Duration::from_secs(5));
        assert_eq!(args.shutdown_grace, Duration::from_secs(20));
        let Certs::SelfManaged(target) = prepare(args).unwrap().certs else {
            panic!("self-managed")
        };
        assert_eq!(target.lifetimes, Lifetimes::default());

        let bad = [
            &self_managed[..],
            &["--tls-ca-lifetime", "1h", "--tls-cert-lifetime", "2h"],
        ]
        .concat();
        let e = prepare(parse(&bad).unwrap()).unwrap_err().to_string();
        assert!(
            e.contains("--tls-cert-lifetime 2h is longer than --tls-ca-lifetime 1h"),
            "{e}"
        );
        // The lifetimes belong to the self-managed mode.
        let files = [
            "--tls-cert-file",
            "tls.crt",
            "--tls-key-file",
            "tls.key",
            "--tls-ca-lifetime",
            "1h",
        ];
        assert!(parse(&files).is_err());
    }

    #[test]
    fn parse_review_explains_what_is_wrong() {
        let cases: [(&str, &str); 6] = [
            ("not json", "not JSON"),
            (
                r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#,
                "admission.k8s.io/v1",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
                "no request",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#,
                "no uid",
            ),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"group":"apps","version":"v1","kind":"Deployment"}}}"#,
                "only handles core v1 Pods",
            ),
            ("[]", "AdmissionReview"),
        ];
        for (body, needle) in cases {
            let e = parse_review(body.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{body}: {e}");
        }
    }
}
