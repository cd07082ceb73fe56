//! The chart installed on the real node, as an operator installs it: `helm
//! install` with the images `make images` built, the webhook running as two
//! pods that the API server calls through their Service (kube-proxy on the
//! node), the webhook reaching the API server through the `kubernetes`
//! Service with the chart's RBAC, and its self-managed certificate in the
//! Secret and the caBundle. Then what an operator lives through: a webhook
//! pod deleted, a `helm upgrade`, a certificate renewal, `helm uninstall` —
//! each while pods are created in a loop, none of which may fail. And what
//! a user diagnoses with: the `kubectl tempcreds` plugin on an injected pod.
//!
//! Run with `TEMPCREDS_NODE=1 hack/with-control-plane.sh cargo test -p
//! tempcreds-tests --test node_chart` (as root; `make test` does).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use serde_json::{Value, json};
use tempcreds_tests::helm::{chart_dir, helm, ok};
use tempcreds_tests::node::{Node, toleration};
use tempcreds_tests::world::{
    CHAINED, LIMIT, ROLE, SIDECAR, assert_go_app_used, container, hold, pod, product_image,
    reports, test_image,
};
use tempcreds_tests::{ControlPlane, Moto, bins, tool, unique_suffix, wait_until};

/// The label that routes a namespace to one test's release (each release
/// has its own value, so parallel tests never see each other's webhook).
const ROUTE_LABEL: &str = "tempcreds-test/release";

/// A release of the chart on the node, uninstalled on drop.
struct Release {
    node: Node,
    moto: Moto,
    /// Release name, also its namespace and the chart's object names.
    name: String,
    uninstalled: bool,
}

impl Release {
    /// `helm install --wait` with the images of `make images`, moto as the
    /// STS endpoint, the node's taint tolerated and `sets` (`--set`) on
    /// top. Returns once both webhook replicas are Ready, and how long that
    /// took.
    fn install(prefix: &str, sets: &[&str]) -> (Release, std::time::Duration) {
        let node = Node::from_env();
        assert_eq!(
            std::env::var("TEMPCREDS_NODE_SERVICES").as_deref(),
            Ok("1"),
            "the node has no Service routing (kube-proxy): the API server cannot call the \
             webhook's Service; see hack/node.sh (only one node per host runs kube-proxy)"
        );
        product_image(&node, "tempcreds-webhook");
        product_image(&node, "tempcreds-sidecar");
        let moto = Moto::start_on(&node.gateway);
        let name = format!("{prefix}-{}", unique_suffix());
        let tolerations = json!([toleration()]).to_string();
        // Replaces the chart's default label (helm merges maps: null
        // removes a default key), so only this test's namespaces match.
        let selector = json!({ROUTE_LABEL: name, "tempcreds.io/injection": null}).to_string();
        let endpoint = format!("defaults.stsEndpoint={}", moto.url());
        let chart = chart_dir();
        let mut args = vec![
            "install",
            &name,
            chart.to_str().unwrap(),
            "--namespace",
            &name,
            "--create-namespace",
            "--wait",
            "--timeout",
            "180s",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            "sidecar.image.pullPolicy=Never",
            "--set",
            "defaults.region=us-east-1",
            "--set",
            &endpoint,
            "--set",
            "defaults.allowHttpStsEndpoint=true",
            "--set-json",
        ];
        let tolerations_arg = format!("tolerations={tolerations}");
        let selector_arg = format!("webhook.namespaceSelector.matchLabels={selector}");
        args.extend([
            tolerations_arg.as_str(),
            "--set-json",
            selector_arg.as_str(),
        ]);
        for s in sets {
            args.extend(["--set", s]);
        }
        let started = Instant::now();
        let out = helm(&args, Some(&node.control_plane().kubeconfig));
        let took = started.elapsed();
        let release = Release {
            node,
            moto,
            name,
            uninstalled: false,
        };
        if !out.status.success() {
            panic!(
                "helm install failed:\n{}\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                release.diagnostics()
            );
        }
        eprintln!("helm install → {} webhook replicas Ready: {took:?}", 2);
        (release, took)
    }

    fn cp(&self) -> &ControlPlane {
        self.node.control_plane()
    }

    /// kubectl in the release's namespace; panics with its error.
    fn kubectl(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        self.cp()
            .kubectl(&all)
            .unwrap_or_else(|e| panic!("{e:#}\n{}", self.diagnostics()))
    }

    /// `helm upgrade --reuse-values --wait` with `sets`.
    fn upgrade(&self, sets: &[&str]) {
        let chart = chart_dir();
        let mut args = vec![
            "upgrade",
            &self.name,
            chart.to_str().unwrap(),
            "--namespace",
            &self.name,
            "--reuse-values",
            "--wait",
            "--timeout",
            "180s",
        ];
        for s in sets {
            args.extend(["--set", s]);
        }
        ok(
            helm(&args, Some(&self.cp().kubeconfig)),
            &format!("helm upgrade {sets:?}"),
        );
    }

    /// A new namespace routed to this release's webhook, once the webhook
    /// answers there: `helm install --wait` returns when the pods are
    /// Ready, and kube-proxy routes the Service to them a moment later
    /// (until then the API server's call is refused), so this waits for a
    /// server-side dry run of an opted-in pod to be injected.
    fn app_namespace(&self, prefix: &str) -> String {
        let label = format!("{ROUTE_LABEL}={}", self.name);
        let ns = self
            .cp()
            .create_namespace(prefix, &[&label])
            .expect("create the app namespace");
        wait_until("the webhook answers through its Service", LIMIT, || {
            create_probe(self.cp(), &ns, true).is_ok_and(|injected| injected)
        });
        ns
    }

    /// Names of the webhook's pods that are Ready and not terminating.
    fn ready_webhook_pods(&self) -> Vec<String> {
        let pods: Value = serde_json::from_str(&self.kubectl(&[
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=webhook",
            "-o",
            "json",
        ]))
        .expect("pod list JSON");
        pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .map(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// Waits until `n` webhook pods are Ready (and no more are terminating).
    fn wait_replicas(&self, n: usize) {
        wait_until(&format!("{n} webhook pods are Ready"), LIMIT, || {
            self.ready_webhook_pods().len() == n
        });
    }

    /// The caBundle of the release's MutatingWebhookConfiguration (PEM).
    fn ca_bundle(&self) -> String {
        use base64::Engine;
        let b64 = self
            .cp()
            .kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                &self.mwc_name(),
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ])
            .expect("read the caBundle");
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .expect("caBundle is base64"),
        )
        .expect("caBundle is PEM")
    }

    fn mwc_name(&self) -> String {
        // The chart's fullname: the release name when it contains "tempcreds".
        if self.name.contains("tempcreds") {
            self.name.clone()
        } else {
            format!("{}-tempcreds", self.name)
        }
    }

    /// Pods, events and webhook logs of the release, for failure messages.
    fn diagnostics(&self) -> String {
        let cp = self.cp();
        let get = |args: &[&str]| {
            cp.kubectl(args)
                .unwrap_or_else(|e| format!("kubectl {args:?}: {e:#}"))
        };
        format!(
            "pods:\n{}\nevents:\n{}\nwebhook logs:\n{}",
            get(&["-n", &self.name, "get", "pods", "-o", "wide"]),
            get(&[
                "-n",
                &self.name,
                "get",
                "events",
                "--sort-by=.lastTimestamp"
            ]),
            get(&[
                "-n",
                &self.name,
                "logs",
                "-l",
                "app.kubernetes.io/component=webhook",
                "--tail=40",
                "--prefix",
            ]),
        )
    }

    fn uninstall(&mut self) {
        ok(
            helm(
                &[
                    "uninstall",
                    &self.name,
                    "--namespace",
                    &self.name,
                    "--wait",
                    "--timeout",
                    "180s",
                ],
                Some(&self.cp().kubeconfig),
            ),
            "helm uninstall",
        );
        self.uninstalled = true;
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if !self.uninstalled {
            let _ = helm(
                &["uninstall", &self.name, "--namespace", &self.name],
                Some(&self.cp().kubeconfig),
            );
        }
        let _ = self
            .cp()
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// An opted-in pod that is created but never scheduled (no node has the
/// label it selects): what the loop creates, so the webhook is exercised
/// on every creation without starting containers.
fn unscheduled_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "probe-",
            "annotations": {"tempcreds.io/role-arn": ROLE},
        },
        "spec": {
            "nodeSelector": {"tempcreds-test/no-such-node": "true"},
            "containers": [{"name": "app", "image": "tempcreds.local/test/busybox:1"}],
        },
    })
}

/// Creates an [`unscheduled_pod`] in `ns` (`dry_run`: server-side, nothing
/// stored); Ok(whether the webhook injected the sidecar), or kubectl's
/// error (the API server's refusal).
fn create_probe(cp: &ControlPlane, ns: &str, dry_run: bool) -> anyhow::Result<bool> {
    let mut args = vec!["-n", ns, "create", "-f", "-"];
    if dry_run {
        args.push("--dry-run=server");
    }
    args.extend(["-o", "jsonpath={.spec.initContainers[*].name}"]);
    let names = cp.kubectl_stdin(&args, Some(&unscheduled_pod().to_string()))?;
    Ok(names.split_whitespace().any(|n| n == SIDECAR))
}

/// Pods created one after another in a namespace until stopped; counts
/// the creations that succeeded with the sidecar injected and records every
/// one that did not.
struct Creator {
    stop: Arc<AtomicBool>,
    done: Arc<std::sync::atomic::AtomicUsize>,
    handle: JoinHandle<(usize, Vec<String>)>,
}

impl Creator {
    fn start(cp: &ControlPlane, ns: &str) -> Creator {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (cp, ns, stop2, done2) = (cp.clone(), ns.to_owned(), stop.clone(), done.clone());
        let handle = std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut created = 0;
            while !stop2.load(Ordering::SeqCst) {
                match create_probe(&cp, &ns, false) {
                    Ok(true) => created += 1,
                    Ok(false) => failures.push("created without the sidecar".to_owned()),
                    Err(e) => failures.push(format!("{e:#}")),
                }
                done2.fetch_add(1, Ordering::SeqCst);
            }
            (created, failures)
        });
        Creator { stop, done, handle }
    }

    /// Waits until `n` more creations (failed or not) have been attempted.
    fn wait_for_more(&self, n: usize) {
        let target = self.done.load(Ordering::SeqCst) + n;
        wait_until(&format!("{n} more pod creations"), LIMIT, || {
            self.done.load(Ordering::SeqCst) >= target
        });
    }

    /// Stops the loop; (successful creations, failures).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("the creating thread panicked")
    }
}

/// Runs `disrupt` while pods are created in `ns`; asserts every creation
/// succeeded with the sidecar, and returns how many there were.
fn creations_survive(release: &Release, ns: &str, what: &str, disrupt: impl FnOnce()) -> usize {
    let creator = Creator::start(release.cp(), ns);
    creator.wait_for_more(3);
    disrupt();
    creator.wait_for_more(3);
    let (created, failures) = creator.finish();
    eprintln!("{what}: {created} pods created, {} failed", failures.len());
    assert!(
        failures.is_empty(),
        "{what}: {} of {} pod creations failed:\n{}\n{}",
        failures.len(),
        created + failures.len(),
        failures.join("\n"),
        release.diagnostics()
    );
    created
}

#[test]
fn helm_install_injects_a_deployment_whose_app_calls_aws_and_uninstall_leaves_nothing() {
    let (mut release, _) = Release::install("tempcreds-basic", &[]);
    let cp = release.cp().clone();

    // The self-managed certificate: written into the Secret by a webhook
    // pod, and its CA is the caBundle the API server trusts.
    let secret: Value = serde_json::from_str(&release.kubectl(&[
        "get",
        "secret",
        &format!("{}-tls", release.mwc_name()),
        "-o",
        "json",
    ]))
    .unwrap();
    for key in ["ca.crt", "ca.key", "tls.crt", "tls.key"] {
        assert!(
            secret["data"][key].as_str().is_some_and(|v| !v.is_empty()),
            "the webhook did not write {key} into its Secret: {}",
            secret["metadata"]
        );
    }
    assert!(release.ca_bundle().contains("BEGIN CERTIFICATE"));

    // An annotated Deployment in a labelled namespace: its pod runs, and the
    // app's own AWS call (aws-sdk-go-v2's default chain) succeeds.
    let ns = release.app_namespace("app");
    let app_image = test_image(&release.node, "aws-go-app");
    // The role comes from the ServiceAccount's annotation: the webhook's
    // ServiceAccount cache, fed by its in-cluster watch with the chart's
    // RBAC, is what opts the pod in.
    cp.kubectl(&["-n", &ns, "create", "serviceaccount", "reader"])
        .unwrap();
    cp.kubectl(&[
        "-n",
        &ns,
        "annotate",
        "serviceaccount",
        "reader",
        &format!("tempcreds.io/role-arn={ROLE}"),
    ])
    .unwrap();
    let mut app = container(
        "app",
        &app_image,
        &[
            "/usr/local/bin/aws-go-app",
            "-count",
            "100000",
            "-interval",
            "2s",
        ],
        &[("AWS_ENDPOINT_URL_STS", &release.moto.url())],
    );
    app["imagePullPolicy"] = json!("Never");
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "reporter"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "reporter"}},
            "template": {
                "metadata": {"labels": {"app": "reporter"}},
                "spec": {
                    "serviceAccountName": "reader",
                    "tolerations": [toleration()],
                    "containers": [app],
                },
            },
        },
    });
    cp.kubectl_stdin(
        &["-n", &ns, "create", "-f", "-"],
        Some(&deployment.to_string()),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}", release.diagnostics()));
    let log = || {
        cp.kubectl(&["-n", &ns, "logs", "deployment/reporter", "-c", "app"])
            .unwrap_or_default()
    };
    wait_until("the app reported an AWS call", LIMIT, || {
        !reports(&log()).is_empty()
    });
    assert_go_app_used(&log(), "node-reader", "SharedConfigCredentials");

    // `kubectl describe pod` shows what tempcreds did: the marker
    // annotation, the sidecar with its image and role, the app's variables.
    let describe = cp
        .kubectl(&["-n", &ns, "describe", "pod", "-l", "app=reporter"])
        .unwrap();
    for shown in [
        "tempcreds.io/injected: tempcreds",
        "--role-arn",
        ROLE,
        "AWS_SHARED_CREDENTIALS_FILE:",
        "ghcr.io/tempcreds/tempcreds-sidecar:",
    ] {
        assert!(
            describe.contains(shown),
            "kubectl describe pod does not show {shown:?}:\n{describe}"
        );
    }

    // A pod with a bad annotation is denied with a message naming the
    // annotation, the value and what is accepted.
    let mut bad = unscheduled_pod();
    bad["metadata"]["annotations"]["tempcreds.io/session-duration"] = json!("forever");
    let err = cp
        .kubectl_stdin(&["-n", &ns, "create", "-f", "-"], Some(&bad.to_string()))
        .expect_err("a pod with a bad annotation was admitted");
    let message = format!("{err:#}");
    for named in [
        "tempcreds.io/session-duration",
        "forever",
        "denied the request",
    ] {
        assert!(
            message.contains(named),
            "the denial does not name {named:?}: {message}"
        );
    }

    // Uninstall leaves nothing behind, and pods in the labelled namespace
    // are created again (failurePolicy Fail must not outlive the webhook).
    let instance = format!("app.kubernetes.io/instance={}", release.name);
    release.uninstall();
    for kind in [
        "mutatingwebhookconfigurations",
        "clusterroles",
        "clusterrolebindings",
    ] {
        let left = cp
            .kubectl(&["get", kind, "-l", &instance, "-o", "name"])
            .unwrap();
        assert_eq!(left.trim(), "", "helm uninstall left {kind} behind");
    }
    let left = cp
        .kubectl(&[
            "-n",
            &release.name,
            "get",
            "secrets,configmaps,roles,rolebindings,serviceaccounts,services,deployments,poddisruptionbudgets",
            "-l",
            &instance,
            "-o",
            "name",
        ])
        .unwrap();
    assert_eq!(left.trim(), "", "helm uninstall left objects behind");
    let injected =
        create_probe(&cp, &ns, false).expect("a pod is created after the webhook was uninstalled");
    assert!(!injected, "a pod was injected after uninstall");
}

#[test]
fn pod_creation_never_fails_while_a_webhook_pod_is_deleted_or_the_release_upgraded() {
    let (release, _) = Release::install("tempcreds-avail", &[]);
    let ns = release.app_namespace("avail");
    release.wait_replicas(2);

    let deleted = creations_survive(&release, &ns, "webhook pod deleted", || {
        let victim = release.ready_webhook_pods()[0].clone();
        release.kubectl(&["delete", "pod", &victim, "--wait=true"]);
        release.wait_replicas(2);
    });
    assert!(deleted > 0);

    creations_survive(&release, &ns, "helm upgrade", || {
        // A changed value rolls the Deployment (its config checksum).
        release.upgrade(&["logLevel=debug"]);
        release.wait_replicas(2);
    });

    // Shortening the self-managed lifetimes renews the CA at once: the new
    // CA joins the caBundle first, and the serving certificate switches to
    // it only once the API server has had time to see the new bundle.
    let bundle_before = release.ca_bundle();
    let secret = format!("{}-tls", release.mwc_name());
    let leaf = || release.kubectl(&["get", "secret", &secret, "-o", "jsonpath={.data.tls\\.crt}"]);
    let leaf_before = leaf();
    creations_survive(&release, &ns, "CA and certificate renewal", || {
        release.upgrade(&[
            "certificates.selfManaged.caLifetime=48h",
            "certificates.selfManaged.certificateLifetime=24h",
        ]);
        release.wait_replicas(2);
        wait_until("the caBundle holds the new CA", LIMIT, || {
            let bundle = release.ca_bundle();
            bundle != bundle_before && bundle.matches("BEGIN CERTIFICATE").count() == 2
        });
        wait_until("the serving certificate is renewed", LIMIT, || {
            leaf() != leaf_before
        });
        // Both replicas serve the new certificate (they read it from the
        // Secret's watch) while the loop still runs.
        wait_until(
            "every webhook pod serves the renewed certificate",
            LIMIT,
            || {
                let want = pem_of(&leaf());
                let ips = release.kubectl(&[
                    "get",
                    "pods",
                    "-l",
                    "app.kubernetes.io/component=webhook",
                    "--field-selector=status.phase=Running",
                    "-o",
                    "jsonpath={.items[*].status.podIP}",
                ]);
                let ips: Vec<&str> = ips.split_whitespace().collect();
                ips.len() >= 2 && ips.iter().all(|ip| served_certificate(ip) == want)
            },
        );
    });
    let bundle_after = release.ca_bundle();
    let first_ca = first_certificate(&bundle_after);
    assert!(
        !bundle_before.contains(&first_ca),
        "the caBundle's first CA is not new:\n{bundle_after}"
    );

    let _ = release
        .cp()
        .kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

/// The first certificate of a base64-encoded PEM bundle, as PEM.
fn pem_of(b64: &str) -> String {
    use base64::Engine;
    let pem = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    first_certificate(&pem)
}

fn first_certificate(pem: &str) -> String {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The certificate the webhook on `ip` presents (openssl, a TLS client of
/// its own), as PEM; empty when it does not answer.
fn served_certificate(ip: &str) -> String {
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &format!("{ip}:8443")])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    out.map(|o| first_certificate(&String::from_utf8_lossy(&o.stdout)))
        .map(|c| {
            c.split_once("-----BEGIN")
                .map(|(_, rest)| format!("-----BEGIN{rest}"))
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// cert-manager's controller and CA injector (hack/cert-manager.sh) running
/// against the test's control plane; stopped on drop.
struct CertManager {
    dir: std::path::PathBuf,
}

impl CertManager {
    fn start(cp: &ControlPlane) -> CertManager {
        let dir = cp
            .kubeconfig
            .parent()
            .expect("the kubeconfig lies in the control plane's directory")
            .to_path_buf();
        let script = chart_dir().join("../../hack/cert-manager.sh");
        let out = std::process::Command::new(&script)
            .arg("start")
            .arg(&dir)
            .output()
            .expect("run hack/cert-manager.sh");
        assert!(
            out.status.success(),
            "hack/cert-manager.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        CertManager { dir }
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        let _ = std::process::Command::new(chart_dir().join("../../hack/cert-manager.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

#[test]
fn cert_manager_mode_issues_the_certificate_injects_the_ca_and_pods_are_injected() {
    let cp = ControlPlane::from_env();
    let _cert_manager = CertManager::start(&cp);
    let (release, _) = Release::install("tempcreds-cm", &["certificates.mode=cert-manager"]);

    // cert-manager issued the serving certificate into the Secret the pods
    // mount, and its CA injector put the CA into the caBundle.
    let fullname = release.mwc_name();
    release.kubectl(&[
        "wait",
        "--for=condition=Ready",
        &format!("certificate/{fullname}"),
        "--timeout=180s",
    ]);
    let ca = release.kubectl(&[
        "get",
        "secret",
        &format!("{fullname}-tls"),
        "-o",
        "jsonpath={.data.ca\\.crt}",
    ]);
    use base64::Engine;
    let ca = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(ca.trim())
            .expect("ca.crt is base64"),
    )
    .unwrap();
    assert!(
        ca.contains("BEGIN CERTIFICATE"),
        "no CA in the Secret: {ca}"
    );
    wait_until("the CA injector fills the caBundle", LIMIT, || {
        release.ca_bundle().trim() == ca.trim()
    });

    // Pods in a routed namespace are injected through the webhook's Service.
    let ns = release.app_namespace("cm");
    let injected = create_probe(&cp, &ns, false)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", release.diagnostics()));
    assert!(injected, "the pod was not injected");
    let _ = cp.kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

/// Runs the `kubectl-tempcreds` plugin as kubectl would: the cluster from
/// `KUBECONFIG`, kubectl found on `PATH`.
fn plugin(cp: &ControlPlane, args: &[&str]) -> std::process::Output {
    let kubectl = tool("kubectl");
    let mut path = std::ffi::OsString::from(kubectl.parent().unwrap());
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    std::process::Command::new(bins::bin("kubectl-tempcreds"))
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("PATH", path)
        .env_remove("KUBECTL")
        .args(args)
        .output()
        .expect("run kubectl-tempcreds")
}

#[test]
fn kubectl_tempcreds_doctor_and_status_on_an_injected_pod() {
    let (release, _) = Release::install("tempcreds-plugin", &[]);
    let cp = release.cp().clone();
    let ns = release.app_namespace("plugin");
    cp.kubectl(&[
        "-n",
        &ns,
        "create",
        "secret",
        "generic",
        "aws-keys",
        "--from-literal=aws_access_key_id=AKIAPLUGINEXAMPLE001",
        "--from-literal=aws_secret_access_key=pluginSecretAccessKeyExampleValue000001",
    ])
    .unwrap();
    // Long-term keys from a Secret and a role, and a second profile with the
    // same keys and another role: doctor's checks all run against moto (a
    // web-identity pod's issuer here is the API server's loopback address,
    // which a pod cannot reach).
    let busybox = release.node.busybox();
    let app = pod(
        "app",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/secret-name", "aws-keys"),
            ("tempcreds.io/role-arn.audit", CHAINED),
            ("tempcreds.io/secret-name.audit", "aws-keys"),
        ],
        vec![container("app", busybox, &["sh", "-c", &hold("true")], &[])],
        json!({}),
    );
    let plain = pod(
        "plain",
        &[],
        vec![container("app", busybox, &["sh", "-c", &hold("true")], &[])],
        json!({}),
    );
    for p in [&app, &plain] {
        cp.kubectl_stdin(&["-n", &ns, "create", "-f", "-"], Some(&p.to_string()))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", release.diagnostics()));
    }
    release
        .node
        .wait_for_condition(&ns, "pod", "app", "Ready", LIMIT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", release.diagnostics()));

    // doctor: every check of each profile passes; the report in both
    // formats.
    let out = plugin(&cp, &["doctor", "app", "-n", &ns]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("kubectl tempcreds doctor app:\n{text}{err}");
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    assert_eq!(text.matches("Result: OK").count(), 2, "{text}");
    let (default, audit) = text
        .split_once("Profile audit")
        .expect("a report per profile");
    assert!(default.starts_with("Profile default"), "{text}");
    assert!(
        default.contains(ROLE) && !default.contains(CHAINED),
        "{text}"
    );
    assert!(audit.contains(CHAINED), "{text}");
    let out = plugin(&cp, &["doctor", "app", "-n", &ns, "-o", "json"]);
    let reports: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(reports.as_array().map(Vec::len), Some(2), "{reports}");
    for (report, profile) in reports
        .as_array()
        .into_iter()
        .flatten()
        .zip(["default", "audit"])
    {
        assert_eq!(report["profile"], profile, "{report}");
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["failures"], 0, "{report}");
    }

    // status: the profile, the role and credentials that expire later.
    let out = plugin(&cp, &["status", "app", "--namespace", &ns]);
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("kubectl tempcreds status app:\n{text}{err}");
    assert_eq!(out.status.code(), Some(0), "{text}\n{err}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("PROFILE"), "{text}");
    assert!(lines[1].starts_with("default "), "{text}");
    assert!(lines[1].contains(ROLE), "{text}");
    assert!(lines[2].starts_with("audit "), "{text}");
    assert!(lines[2].contains(CHAINED), "{text}");
    let out = plugin(&cp, &["status", "app", "-n", &ns, "-o", "json"]);
    let rows: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(rows[0]["profile"], "default", "{rows}");
    assert_eq!(rows[0]["role"], ROLE, "{rows}");
    assert_eq!(rows[0]["valid"], true, "{rows}");
    assert_eq!(rows[1]["profile"], "audit", "{rows}");
    assert_eq!(rows[1]["role"], CHAINED, "{rows}");
    for row in rows.as_array().into_iter().flatten() {
        assert_eq!(row["valid"], true, "{rows}");
        let left = row["expires_in_seconds"].as_f64().unwrap_or_default();
        assert!(left > 60.0, "{rows}");
    }
    for secret in ["AKIAPLUGINEXAMPLE001", "pluginSecretAccessKey", "ASIA"] {
        assert!(!text.contains(secret), "{text}");
        assert!(!rows.to_string().contains(secret), "{rows}");
    }

    // The errors a user meets: a pod that was not injected, a pod that
    // does not exist.
    let out = plugin(&cp, &["doctor", "plain", "-n", &ns]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pod \"plain\" has no tempcreds sidecar"),
        "{err}"
    );
    let out = plugin(&cp, &["status", "nowhere", "-n", &ns]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("pod \"nowhere\" not found in namespace \"{ns}\"")),
        "{err}"
    );
}
