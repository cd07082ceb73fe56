//! Self-managed certificates against the real kube-apiserver (run with
//! `hack/with-control-plane.sh cargo test -p tempcreds-webhook`).
//!
//! The webhook starts with an empty Secret (as the chart creates it) and a
//! webhook configuration without a caBundle, as after `helm install`. It must
//! issue its CA and serving certificate into the Secret and set the caBundle,
//! so that the API server's calls to it succeed: that is the proof the whole
//! chain of trust is right. Restarts adopt the stored certificate, replicas
//! racing on an empty Secret agree on one, and a caBundle reset by someone
//! else is put back.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use tempcreds_tests::{ControlPlane, Registration, free_port, https_ok, unique_suffix, wait_until};

struct Setup {
    cp: ControlPlane,
    registration: Option<Registration>,
    ns: String,
    secret: String,
    configuration: String,
    label: String,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let cp = ControlPlane::from_env();
        let label = unique_suffix();
        let ns = cp.create_namespace("selfcert", &[]).unwrap();
        let secret = "tempcreds-tls".to_owned();
        cp.kubectl(&["-n", &ns, "create", "secret", "generic", &secret])
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.yaml"),
            "sidecar:\n  image: ghcr.io/tempcreds/tempcreds-sidecar:test\n",
        )
        .unwrap();
        Setup {
            cp,
            registration: None,
            ns,
            secret,
            configuration: format!("tempcreds-selfcert-{label}"),
            label,
            dir,
        }
    }

    /// Registers the webhook without a caBundle, as the chart does.
    fn register(&mut self, port: u16) {
        self.registration = Some(Registration::apply(
            &self.cp,
            &self.configuration,
            port,
            None,
            &[("tempcreds.io/selfcert-test", &self.label)],
        ));
    }

    fn start(&self, port: u16, name: &str) -> Webhook {
        let log = self.dir.path().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_tempcreds-webhook"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--tls-self-managed-secret")
            .arg(format!("{}/{}", self.ns, self.secret))
            .args(["--tls-dns-name", "127.0.0.1"])
            .args(["--webhook-configuration", &self.configuration])
            .arg("--config")
            .arg(self.dir.path().join("config.yaml"))
            .env("KUBECONFIG", &self.cp.kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Webhook { child, log, port }
    }

    fn secret_data(&self) -> Value {
        let s: Value = serde_json::from_str(
            &self
                .cp
                .kubectl(&["-n", &self.ns, "get", "secret", &self.secret, "-o", "json"])
                .unwrap(),
        )
        .unwrap();
        s["data"].clone()
    }

    fn ca_bundle(&self) -> String {
        self.cp
            .kubectl(&[
                "get",
                "mutatingwebhookconfiguration",
                &self.configuration,
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ])
            .unwrap()
    }

    fn write_ca(&self) -> PathBuf {
        let data = self.secret_data();
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data["ca.crt"].as_str().expect("ca.crt in the Secret"))
            .unwrap();
        let path = self.dir.path().join("ca.crt");
        std::fs::write(&path, pem).unwrap();
        path
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.registration.take();
        let _ = self
            .cp
            .kubectl(&["delete", "namespace", &self.ns, "--wait=false"]);
    }
}

struct Webhook {
    child: Child,
    log: PathBuf,
    port: u16,
}

impl Webhook {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/healthz` answers over TLS verified against `ca`.
    fn wait_trusted(&mut self, ca: &Path) {
        let url = format!("https://127.0.0.1:{}/healthz", self.port);
        wait_until(
            "the webhook serves a certificate from the stored CA",
            Duration::from_secs(120),
            || {
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("webhook exited with {status}: {}", self.log());
                }
                https_ok(&url, ca, None)
            },
        );
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits up to 30 s.
fn wait(what: &str, cond: impl FnMut() -> bool) {
    wait_until(what, Duration::from_secs(120), cond);
}

#[test]
fn issues_its_certificate_sets_the_ca_bundle_and_the_api_server_trusts_it() {
    let mut s = Setup::new();
    let port = free_port();
    s.register(port);
    assert_eq!(
        s.ca_bundle(),
        "",
        "registered without a caBundle, as the chart does"
    );
    let mut hook = s.start(port, "first");
    wait("the Secret holds a CA and a serving certificate", || {
        let d = s.secret_data();
        ["ca.crt", "ca.key", "tls.crt", "tls.key"]
            .iter()
            .all(|k| d[k].is_string())
    });
    let ca = s.write_ca();
    hook.wait_trusted(&ca);
    wait("the caBundle is the stored CA", || {
        s.ca_bundle() == s.secret_data()["ca.crt"].as_str().unwrap()
    });

    // The API server calls the webhook over TLS with that caBundle.
    let app_ns =
        s.cp.create_namespace(
            "selfcert-app",
            &[&format!("tempcreds.io/selfcert-test={}", s.label)],
        )
        .unwrap();
    // The `default` ServiceAccount (the controller manager of a node, when
    // one runs, creates it too).
    s.cp.kubectl_stdin(
        &["-n", &app_ns, "apply", "-f", "-"],
        Some(r#"{"apiVersion":"v1","kind":"ServiceAccount","metadata":{"name":"default"}}"#),
    )
    .unwrap();
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"tempcreds.io/role-arn":"arn:aws:iam::123456789012:role/app"}},"spec":{"containers":[{"name":"app","image":"busybox"}]}}"#;
    s.cp.kubectl_stdin(&["-n", &app_ns, "apply", "-f", "-"], Some(pod))
        .unwrap_or_else(|e| panic!("{e}\n{}", hook.log()));
    let stored: Value = serde_json::from_str(
        &s.cp
            .kubectl(&["-n", &app_ns, "get", "pod", "p", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(stored["spec"]["initContainers"][0]["name"], "tempcreds");
    assert!(!hook.log().contains("PRIVATE KEY"));

    // A restart adopts what is stored instead of issuing anew.
    let before = s.secret_data();
    drop(hook);
    let mut again = s.start(port, "restarted");
    again.wait_trusted(&ca);
    assert_eq!(s.secret_data(), before, "a restart must not reissue");

    // Someone resets the caBundle (an old manifest re-applied): put back.
    s.cp.kubectl(&[
        "patch",
        "mutatingwebhookconfiguration",
        &s.configuration,
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/webhooks/0/clientConfig/caBundle","value":"Zm9v"}]"#,
    ])
    .unwrap();
    wait("the caBundle is restored", || {
        s.ca_bundle() == before["ca.crt"].as_str().unwrap()
    });
    s.cp.kubectl(&["delete", "namespace", &app_ns, "--wait=false"])
        .unwrap();
}

#[test]
fn replicas_racing_on_an_empty_secret_agree_on_one_certificate() {
    let mut s = Setup::new();
    let (p1, p2) = (free_port(), free_port());
    s.register(p1);
    let mut a = s.start(p1, "a");
    let mut b = s.start(p2, "b");
    wait("the Secret is filled", || {
        s.secret_data()["tls.crt"].is_string()
    });
    let ca = s.write_ca();
    // Both replicas serve a certificate the stored CA vouches for, and the
    // caBundle is that CA: whichever replica lost the race adopted the
    // winner's material.
    a.wait_trusted(&ca);
    b.wait_trusted(&ca);
    wait("the caBundle is the stored CA", || {
        s.ca_bundle() == s.secret_data()["ca.crt"].as_str().unwrap()
    });
}
