//! Against the real kube-apiserver of the test harness (run with
//! `hack/with-control-plane.sh cargo test -p tempcreds-webhook`): the real
//! binary serves over TLS on 127.0.0.1, is registered by URL with its CA
//! bundle, and pods created through the API come back mutated, unchanged,
//! or refused with the webhook's message in kubectl's error.
//!
//! The webhook configuration is cluster-scoped: each test gives it a unique
//! name and matches only namespaces carrying its own label value, and
//! deletes it at the end, so parallel tests do not see each other's webhook.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempcreds_tests::{ControlPlane, Registration, free_port, unique_suffix};

const ROLE: &str = "arn:aws:iam::123456789012:role/app";

/// The webhook binary serving on 127.0.0.1, stopped with SIGTERM on drop.
struct Webhook {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Webhook {
    fn start(cp: &ControlPlane, pki: &common::Pki, port: u16) -> Webhook {
        let dir = tempfile::tempdir().unwrap();
        let leaf = pki.leaf("127.0.0.1");
        let tls = dir.path().join("tls");
        std::fs::create_dir(&tls).unwrap();
        let certs = common::CertDir::new(&tls, &leaf.chain_pem, &leaf.key_pem);
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            "sidecar:\n  image: ghcr.io/tempcreds/tempcreds-sidecar:test\nregion: eu-west-1\n",
        )
        .unwrap();
        let log = dir.path().join("webhook.log");
        let child = Command::new(env!("CARGO_BIN_EXE_tempcreds-webhook"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert-file")
            .arg(certs.cert())
            .arg("--tls-key-file")
            .arg(certs.key())
            .arg("--config")
            .arg(&config)
            .env("KUBECONFIG", &cp.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Webhook {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status must be success (graceful shutdown,
    /// each phase logged).
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log();
                assert!(status.success(), "exit {status}; log:\n{log}");
                // The phases: serving on while /readyz fails, then the drain.
                let phases = [
                    "shutdown requested",
                    "shutdown delay over",
                    "all connections drained",
                ];
                let at: Vec<Option<usize>> = phases.iter().map(|p| log.find(p)).collect();
                assert!(
                    at.iter().all(Option::is_some) && at.is_sorted(),
                    "shutdown phases {phases:?} not logged in order:\n{log}"
                );
                return;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn register(cp: &ControlPlane, pki: &common::Pki, port: u16, label: &str) -> Registration {
    Registration::apply(
        cp,
        &format!("tempcreds-test-{label}"),
        port,
        Some(&pki.root_pem()),
        &[
            ("tempcreds.io/injection", "enabled"),
            ("tempcreds.io/test", label),
        ],
    )
}

async fn wait_ready(pki: &common::Pki, port: u16, webhook: &Webhook) {
    let client = common::client(&pki.root_pem());
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = client
            .get(format!("https://127.0.0.1:{port}/readyz"))
            .send()
            .await
            && r.status().is_success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "webhook not ready; log:\n{}",
            webhook.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn pod_manifest(name: &str, ns: &str, sa: &str, annotations: &[(&str, &str)]) -> String {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let annotations = if annotations.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{annotations}")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n{annotations}spec:\n  serviceAccountName: {sa}\n  containers:\n  - name: app\n    image: example.com/app:1\n"
    )
}

fn get_pod(cp: &ControlPlane, ns: &str, name: &str) -> Value {
    serde_json::from_str(
        &cp.kubectl(&["get", "pod", "-n", ns, name, "-o", "json"])
            .unwrap(),
    )
    .unwrap()
}

fn create_sa(cp: &ControlPlane, ns: &str, name: &str, annotations: &[(&str, &str)]) {
    let annotations: String = annotations
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let meta = if annotations.is_empty() {
        String::new()
    } else {
        format!("  annotations:\n{annotations}")
    };
    let manifest = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {ns}\n{meta}"
    );
    cp.kubectl_stdin(&["apply", "-f", "-"], Some(&manifest))
        .unwrap();
}

fn env_names(container: &Value) -> Vec<String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_created_through_the_api_server() {
    let cp = ControlPlane::from_env();
    let pki = common::Pki::new();
    let port = free_port();
    let webhook = Webhook::start(&cp, &pki, port);
    wait_ready(&pki, port, &webhook).await;

    let label = unique_suffix();
    let _registration = register(&cp, &pki, port, &label);
    let test_label = format!("tempcreds.io/test={label}");
    let ns = cp
        .create_namespace("webhook", &["tempcreds.io/injection=enabled", &test_label])
        .unwrap();
    // No controller-manager runs here: create the ServiceAccounts pods use.
    create_sa(&cp, &ns, "default", &[]);
    create_sa(&cp, &ns, "app", &[]);

    // An annotated pod comes back with the sidecar, the volumes and the env.
    cp.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&pod_manifest(
            "annotated",
            &ns,
            "app",
            &[("tempcreds.io/role-arn", ROLE)],
        )),
    )
    .unwrap_or_else(|e| panic!("{e}\nwebhook log:\n{}", webhook.log()));
    let pod = get_pod(&cp, &ns, "annotated");
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], "tempcreds", "{pod}");
    assert_eq!(sidecar["restartPolicy"], "Always");
    assert_eq!(sidecar["image"], "ghcr.io/tempcreds/tempcreds-sidecar:test");
    assert_eq!(sidecar["startupProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        pod["metadata"]["annotations"]["tempcreds.io/injected"],
        "tempcreds"
    );
    let app = &pod["spec"]["containers"][0];
    let env = env_names(app);
    for var in [
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
    ] {
        assert!(env.iter().any(|e| e == var), "{var} missing: {env:?}");
    }
    let app_mounts: Vec<&str> = app["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        app_mounts.contains(&"tempcreds-credentials"),
        "{app_mounts:?}"
    );
    assert!(!app_mounts.contains(&"tempcreds-token"), "{app_mounts:?}");
    let token = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tempcreds-token")
        .expect("token volume");
    assert_eq!(
        token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
        "sts.amazonaws.com"
    );

    // A pod without annotations is left alone.
    cp.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&pod_manifest("plain", &ns, "default", &[])),
    )
    .unwrap();
    let plain = get_pod(&cp, &ns, "plain");
    assert!(plain["spec"].get("initContainers").is_none(), "{plain}");
    assert!(
        plain["metadata"]
            .get("annotations")
            .is_none_or(|a| a.get("tempcreds.io/injected").is_none())
    );

    // A bad annotation is refused, and kubectl shows why.
    let err = cp
        .kubectl_stdin(
            &["create", "-f", "-"],
            Some(&pod_manifest(
                "bad",
                &ns,
                "app",
                &[
                    ("tempcreds.io/role-arn", ROLE),
                    ("tempcreds.io/session-duration", "5m"),
                ],
            )),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("denied the request"), "{err}");
    assert!(
        err.contains("tempcreds.io/session-duration=\"5m\""),
        "{err}"
    );
    assert!(err.contains("900"), "{err}");

    // ServiceAccount defaults: the ServiceAccount is created just before the
    // pod (a cache miss is read from the API), its role opts the pod in.
    create_sa(
        &cp,
        &ns,
        "reporting",
        &[
            ("tempcreds.io/role-arn", ROLE),
            ("tempcreds.io/region", "eu-central-1"),
        ],
    );
    cp.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&pod_manifest("from-sa", &ns, "reporting", &[])),
    )
    .unwrap_or_else(|e| panic!("{e}\nwebhook log:\n{}", webhook.log()));
    let pod = get_pod(&cp, &ns, "from-sa");
    let sidecar = &pod["spec"]["initContainers"][0];
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2).any(|w| w == ["--region", "eu-central-1"]),
        "{args:?}"
    );
    assert!(
        args.windows(2).any(|w| w == ["--role-arn", ROLE]),
        "{args:?}"
    );

    // ... and a pod annotation opts out even so.
    cp.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&pod_manifest(
            "opted-out",
            &ns,
            "reporting",
            &[("tempcreds.io/inject", "false")],
        )),
    )
    .unwrap();
    let pod = get_pod(&cp, &ns, "opted-out");
    assert!(pod["spec"].get("initContainers").is_none(), "{pod}");

    // A namespace without the label is not sent to the webhook at all.
    let other = cp.create_namespace("webhook-off", &[]).unwrap();
    create_sa(&cp, &other, "app", &[]);
    cp.kubectl_stdin(
        &["create", "-f", "-"],
        Some(&pod_manifest(
            "ignored",
            &other,
            "app",
            &[("tempcreds.io/role-arn", ROLE)],
        )),
    )
    .unwrap();
    assert!(
        get_pod(&cp, &other, "ignored")["spec"]
            .get("initContainers")
            .is_none()
    );

    // Issue 12: an app container mounting a volume the pod does not have,
    // named as the token volume, is not bound to the injected token: the
    // injected volumes take other names, and the API server refuses the
    // pod for its dangling mount, as it would without tempcreds.
    let dangling = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: dangling\n  namespace: {ns}\n  annotations:\n    \
         tempcreds.io/role-arn: \"{ROLE}\"\nspec:\n  serviceAccountName: app\n  containers:\n  - name: app\n    \
         image: example.com/app:1\n    volumeMounts:\n    - {{name: tempcreds-token, mountPath: /token}}\n"
    );
    let err = cp
        .kubectl_stdin(&["create", "-f", "-"], Some(&dangling))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("volumeMounts[0].name: Not found: \"tempcreds-token\""),
        "{err}\nwebhook log:\n{}",
        webhook.log()
    );

    // Issue 12: tempcreds.io/injected set by the pod's author is refused.
    let err = cp
        .kubectl_stdin(
            &["create", "-f", "-"],
            Some(&pod_manifest(
                "forged",
                &ns,
                "app",
                &[
                    ("tempcreds.io/role-arn", ROLE),
                    ("tempcreds.io/injected", "app"),
                ],
            )),
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("denied the request")
            && err.contains("annotation tempcreds.io/injected=\"app\"")
            && err.contains("container \"app\" is not a tempcreds sidecar"),
        "{err}"
    );

    let metrics = common::client(&pki.root_pem())
        .get(format!("https://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tempcreds_webhook_patches_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tempcreds_webhook_denials_total 2"),
        "{metrics}"
    );

    for n in [&ns, &other] {
        let _ = cp.kubectl(&["delete", "namespace", n, "--wait=false"]);
    }
    webhook.stop();
}
